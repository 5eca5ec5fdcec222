"""The descriptors and signals a sandboxed process of ours finds, by number.

fd 0 is the listening socket (as FPM's children and php-cgi have it). fd 3 is a
zygote's channel to the master, which stays in its workers: the seccomp filter lets
descriptors pass there only and keeps the number that socket (sandbox/seccomp.py). A
python worker gets its scoreboard page, trace pipe and access.log pipe next; a PHP
worker gets the same things in its fork order instead.
"""

from __future__ import annotations

import signal

LISTEN_FD = 0
CHANNEL_FD = 3
BOARD_FD, TRACE_FD, ACCESS_FD = 4, 5, 6
TRACE_SIGNAL = signal.SIGUSR2  # the master asks a python worker for its running stack
# where the tenantfpm package is bound inside the sandbox (on a python worker's sys.path;
# the PHP SAPI is its libexec/)
LIB_DIR = "/run/tenantfpm/python"
# a worker's pid in the host's namespace, as the master learned it from the kernel
HOST_PID_ENV = "TENANTFPM_WORKER_PID"
