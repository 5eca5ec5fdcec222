"""The python runtime's worker: runs inside the sandbox, in the tenant's own interpreter.

Only the standard library and tenantfpm.fastcgi are imported here, so that any
Python >= 3.11 the tenant picks (a virtualenv's included) can run it. The
master binds this package read-only into the sandbox at LIB_DIR.
"""

import signal

LIB_DIR = "/run/tenantfpm/python"  # inside the sandbox: on sys.path, holds tenantfpm/
# what the master passes beside the socket on fd 0; fd 3 is the zygote's channel, which
# stays in its workers (sandbox/seccomp.py: descriptors come in there only)
BOARD_FD, TRACE_FD, ACCESS_FD = 4, 5, 6
TRACE_SIGNAL = signal.SIGUSR2  # the master asks for the running request's traceback
