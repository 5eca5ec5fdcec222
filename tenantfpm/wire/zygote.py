"""What a zygote, its workers and the master say to each other (sapi/zygote.c and
pyworker/zygote.py speak it; master/zygote.py drives it).

On the zygote's channel (fd 3, SOCK_SEQPACKET):

  zygote -> master  READY                       its runtime started
                    EXIT % (pid, wait status)   a worker ended (pid in the tenant's PID
                                                namespace)
  master -> zygote  FORK % max_requests         + SCM_RIGHTS: the worker's own channel,
                                                stdout, stderr (FORK_FDS), then the
                                                scoreboard page and the access.log pipe

and on a worker's own channel (a socket pair per worker):

  worker -> master  HELLO % pid                 the kernel attaches the sender's
                                                credentials: its host pid
  master -> worker  PID % host pid              for logs that name it (fds.HOST_PID_ENV)

A spare (a child forked ahead) that took an order says SPARE_TOOK to its zygote on a
pipe. The printf forms serve C (sapi/wire.h) and Python (`%` ignores the `l`) alike.
Everything the master receives is the tenant's: parse() takes exactly these forms.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

READY = "ready"
HELLO = "hello %ld"
EXIT = "exit %ld %ld"
FORK = "fork %lu"
PID = "pid %ld"
SPARE_TOOK = "t"
FORK_FDS = 3  # a fork order carries at least the channel, stdout and stderr
MAX_MESSAGE = 128  # bytes: every message above fits
PID_MAX = 1 << 22  # the kernel's limit (pid_max <= 4194304)

_HELLO = re.compile(rb"hello (\d{1,7})")
_EXIT = re.compile(rb"exit (\d{1,7}) (\d{1,6})")
_FORK = re.compile(rb"fork (\d{1,19})")
_PID = re.compile(rb"pid (\d{1,7})")


@dataclass(frozen=True)
class Message:
    kind: str  # ready, hello, exit; junk: anything else (counted, never acted on)
    pid: int = 0  # in the tenant's PID namespace
    status: int = 0
    sender: int | None = None  # the sender's pid in the master's namespace (kernel's word)


def parse(data: bytes, sender: int | None) -> Message | None:
    """One message from a zygote or a new worker; None for anything else."""
    if data == READY.encode():
        return Message("ready", sender=sender)
    m = _HELLO.fullmatch(data)
    if m:
        pid = int(m.group(1))
        return Message("hello", pid, sender=sender) if 0 < pid < PID_MAX else None
    m = _EXIT.fullmatch(data)
    if m:
        pid, status = int(m.group(1)), int(m.group(2))
        if 0 < pid < PID_MAX and status <= 0xFFFF:
            return Message("exit", pid=pid, status=status, sender=sender)
    return None


def fork_order(data: bytes, nfds: int, needs: int = FORK_FDS) -> int | None:
    """A zygote's reading of an order with `nfds` descriptors (it `needs` that many):
    its max_requests, or None if it is not one."""
    m = _FORK.fullmatch(data)
    return int(m.group(1)) if m and nfds >= needs else None


def host_pid(data: bytes) -> int | None:
    """A worker's reading of the master's answer to its hello."""
    m = _PID.fullmatch(data)
    return int(m.group(1)) if m and 0 < int(m.group(1)) < PID_MAX else None
