"""fork + the child's sequence + exec, reporting a failed step to the master.

The child never returns into the master's code: every path ends in exec or
os._exit. A failed step writes "step: reason" into a close-on-exec pipe, so the
master can tell "exec failed: no such file" from "exited at once".
"""

from __future__ import annotations

import contextlib
import os
import signal
from dataclasses import dataclass

from tenantfpm.sandbox import privileges

_ALL_SIGNALS = set(signal.Signals)
_MAX_FD = os.sysconf("SC_OPEN_MAX")


@dataclass(frozen=True)
class Plan:
    argv: list[str]
    env: dict[str, str]
    cwd: str
    uid: int
    gid: int
    listen_fd: int
    open_files: int = 0
    core_dumps: bool = False
    catch_output: bool = True


@dataclass
class Spawned:
    pid: int
    stdout: int | None  # read ends, owned by the caller
    stderr: int | None
    errpipe: int


def _child(plan: Plan, out_w: int | None, err_w: int | None, errpipe_w: int) -> None:
    step = "start"
    try:
        step = "signals"
        for sig in _ALL_SIGNALS:
            if sig not in (signal.SIGKILL, signal.SIGSTOP):
                with contextlib.suppress(OSError, ValueError):
                    signal.signal(sig, signal.SIG_DFL)
        signal.set_wakeup_fd(-1)
        step = "fds"
        os.dup2(plan.listen_fd, 0, inheritable=True)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(out_w if out_w is not None else devnull, 1, inheritable=True)
        os.dup2(err_w if err_w is not None else devnull, 2, inheritable=True)
        os.closerange(3, errpipe_w)
        os.closerange(errpipe_w + 1, _MAX_FD)
        step = "rlimits"
        privileges.set_rlimits(plan.open_files, plan.core_dumps)
        step = "pdeathsig"
        privileges.die_with_master()
        step = "setuid"
        privileges.drop_to(plan.uid, plan.gid)
        step = "chdir"
        os.chdir(plan.cwd)
        step = "exec"
        signal.pthread_sigmask(signal.SIG_SETMASK, set())
        os.execve(plan.argv[0], plan.argv, plan.env)
    except BaseException as e:
        reason = getattr(e, "strerror", None) or str(e) or type(e).__name__
        try:
            os.write(errpipe_w, f"{step}: {reason}".encode()[:512])
        finally:
            os._exit(127)


def spawn(plan: Plan) -> Spawned:
    """Fork a worker; signals are blocked around fork so no handler runs in the child."""
    out_r = out_w = err_r = err_w = None
    if plan.catch_output:
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
    errpipe_r, errpipe_w = os.pipe()  # both close-on-exec (PEP 446)
    old = signal.pthread_sigmask(signal.SIG_BLOCK, _ALL_SIGNALS)
    try:
        pid = os.fork()
        if pid == 0:
            _child(plan, out_w, err_w, errpipe_w)  # never returns
    except BaseException:
        for fd in (out_r, out_w, err_r, err_w, errpipe_r, errpipe_w):
            if fd is not None:
                os.close(fd)
        raise
    finally:
        # only the parent gets here: the child always execs or _exits
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
    for fd in (out_w, err_w, errpipe_w):
        if fd is not None:
            os.close(fd)
    for fd in (out_r, err_r, errpipe_r):
        if fd is not None:
            os.set_blocking(fd, False)
    return Spawned(pid, out_r, err_r, errpipe_r)
