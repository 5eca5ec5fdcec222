"""A python tenant's zygote: the app imported once, workers forked on the master's word.

The same protocol as the PHP zygote (sapi/zygote.c; the master's side is
tenantfpm/master/zygote.py): `ready` once the app is imported, `fork <max
requests>` orders arriving on fd 3 with the worker's hello channel, stdout,
stderr, scoreboard page, trace pipe and (optionally) access.log as SCM_RIGHTS,
`exit <pid> <status>` for each worker reaped. As uWSGI does by default and
gunicorn with preload_app, the app's import is paid once and its modules are
shared copy-on-write; `[runtime] lazy_app = true` imports it in each worker
instead, for apps that open connections or threads at import (uWSGI's
lazy-apps).

With `spare_delay_ms` (the master sets it where a fork answers a waiting request:
ondemand and dynamic pools) the zygote keeps one spare, as the PHP zygote does: a
child forked ahead once no order has come for that long, waiting on a socket pair
of its own. The next order goes to it instead of a fork. It runs none of the
tenant's code before its order (a lazy app is imported after it), the master never
hears of it, and it dies with the zygote (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import array
import contextlib
import ctypes
import gc
import json
import os
import resource
import select
import signal
import socket
import sys
import time
import traceback
from typing import Any

from tenantfpm.pyworker import ACCESS_FD, BOARD_FD, TRACE_FD
from tenantfpm.pyworker.main import Config, Worker, load, open_errors

CONTROL_FD = 3
MAX_FDS = 6  # hello channel, stdout, stderr, scoreboard, trace pipe, access.log
HELLO_WAIT = 5.0
SPARES_LOST_MAX = 3  # in a row; then none: a spare that cannot live costs no fork a look
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4


def _say(text: str) -> None:
    with contextlib.suppress(OSError):  # the master is gone: it will not listen anyway
        os.write(CONTROL_FD, text.encode())


def _receive(fd: int = CONTROL_FD) -> tuple[bytes, list[int]] | None:
    """One order and its fds; None when the sender closed the channel."""
    fds = array.array("i")
    ctl = socket.socket(fileno=os.dup(fd))
    try:
        msg, anc, _flags, _ = ctl.recvmsg(128, socket.CMSG_SPACE(MAX_FDS * fds.itemsize),
                                          socket.MSG_CMSG_CLOEXEC)
    except InterruptedError:
        return b"", []
    finally:
        ctl.close()
    for level, kind, data in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
    if not msg:
        for fd in fds:
            os.close(fd)
        return None
    return msg, list(fds)


def _hello(chan: int) -> None:
    """Introduce this worker on its own channel; learn its host pid for the logs."""
    sock = socket.socket(fileno=chan)
    try:
        sock.send(f"hello {os.getpid()}".encode())
        if select.select([sock], [], [], HELLO_WAIT)[0]:
            reply = sock.recv(64).decode(errors="replace").split()
            if len(reply) == 2 and reply[0] == "pid" and reply[1].isdigit():
                os.environ["TENANTFPM_WORKER_PID"] = reply[1]
    except OSError:
        os._exit(71)
    finally:
        sock.close()


def _order(msg: bytes, fds: list[int]) -> int | None:
    """An order's max_requests, or None (its fds closed) for anything else."""
    parts = msg.split()
    if len(parts) == 2 and parts[0] == b"fork" and parts[1].isdigit() and len(fds) >= 5:
        return int(parts[1])
    for fd in fds:
        os.close(fd)
    return None  # not an order from our master


def _leave_zygote(wakeup: tuple[int, int]) -> None:
    """In a child: nothing of the zygote's signal handling or channel stays."""
    signal.set_wakeup_fd(-1)
    for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGQUIT, signal.SIGINT):
        signal.signal(sig, signal.SIG_DFL)
    for fd in wakeup:
        os.close(fd)
    os.close(CONTROL_FD)  # the worker runs the tenant's code: no channel to the master


def _become_worker(cfg: Config, app: Any, max_requests: int, fds: list[int]) -> None:
    """In the child: the fds where the worker expects them, then serve; never returns."""
    code = 0
    try:
        chan, out, err, board, trace, *rest = fds
        os.dup2(out, 1)
        os.dup2(err, 2)
        _hello(chan)
        for fd, target in ((board, BOARD_FD), (trace, TRACE_FD),
                           *(((rest[0], ACCESS_FD),) if rest else ())):
            os.dup2(fd, target)
        for fd in (out, err, board, trace, *rest):
            if fd not in (1, 2, BOARD_FD, TRACE_FD, ACCESS_FD):
                os.close(fd)
        cfg.max_requests = max_requests
        cfg.access_format = cfg.access_format if rest else ""
        errors = open_errors(cfg.error_log)
        w = Worker(cfg, errors)
        w.install_signals()
        if app is None:  # lazy_app: each worker imports it
            try:
                app = load(cfg.app)
            except BaseException as e:
                w.fatal(e)
                os._exit(1)
        w.serve(app, socket.socket(fileno=0))
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:
        traceback.print_exc()
        code = 70
    os._exit(code)


def _pdeathsig(sig: int) -> bool:
    """PR_SET_PDEATHSIG (the standard library has no prctl): a spare must not outlive
    its zygote, outside any PID namespace that would take it along."""
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0) == 0


class Spare:
    """The one child forked ahead, and the zygote's end of its socket pair: the fork of
    an interpreter holding the app (a few ms) is then off the path of an ondemand
    pool's first request."""

    def __init__(self, delay_ms: int | None) -> None:
        self.delay = None if delay_ms is None else delay_ms / 1000
        self.pid = 0
        self.sock: socket.socket | None = None
        self.lost_in_a_row = 0
        self.refused = False  # its fork failed: none until the next order

    def due_in(self, last_order: float) -> float | None:
        """Seconds until a spare should be forked, or None when none is wanted now."""
        if self.delay is None or self.pid or self.refused:
            return None
        return max(0.0, last_order + self.delay - time.monotonic())

    def make(self, cfg: Config, app: Any, wakeup: tuple[int, int]) -> None:
        try:
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        except OSError:
            self.refused = True
            return
        zygote = os.getpid()
        try:
            pid = os.fork()
        except OSError:  # the pids limit, memory: the fork at the next order will say it
            ours.close()
            theirs.close()
            self.refused = True
            return
        if pid == 0:
            try:
                ours.close()
                _leave_zygote(wakeup)
                if not _pdeathsig(signal.SIGKILL) or os.getppid() != zygote:
                    os._exit(0)
                got = _receive(theirs.fileno())
                theirs.close()
                max_requests = _order(*got) if got else None
                if got is None or max_requests is None:
                    os._exit(0)  # dropped by the zygote, or not an order
                _pdeathsig(0)  # a worker now, as one forked at its order
                _become_worker(cfg, app, max_requests, got[1])
            finally:
                os._exit(0)
        theirs.close()
        self.pid, self.sock = pid, ours

    def hand(self, msg: bytes, fds: list[int]) -> bool:
        """Pass an order to the spare: True if it has it (a worker now, ours to report)."""
        if not self.pid or self.sock is None:
            return False
        try:
            self.sock.sendmsg([msg], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                       array.array("i", fds))], socket.MSG_NOSIGNAL)
        except OSError:  # it died (killed by the tenant's code, the OOM killer)
            self.drop()
            self.lost()
            return False
        self.forget()
        self.lost_in_a_row = 0
        return True

    def forget(self) -> None:
        if self.sock is not None:
            self.sock.close()
        self.pid, self.sock = 0, None

    def drop(self) -> None:
        """End the spare and reap it here, so its end is never reported."""
        if not self.pid:
            return
        with contextlib.suppress(OSError):
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        self.forget()

    def lost(self) -> None:
        """A spare ended before its order (killed, or it could not set itself up)."""
        self.forget()
        self.lost_in_a_row += 1
        if self.lost_in_a_row == SPARES_LOST_MAX:
            self.delay = None
            print(f"zygote: {SPARES_LOST_MAX} spare workers in a row ended before their "
                  "order: forking at each order from now on", file=sys.stderr, flush=True)


def undumpable() -> None:
    """As the PHP zygote (sapi/zygote.c): no other process of the tenant takes this
    zygote's or its workers' descriptors or writes their memory (pidfd_getfd and
    /proc/PID/mem want a dumpable target; the seccomp filter refuses making it dumpable
    again). Not with core dumps on: no core is written from an undumpable process. The
    app imported here is the tenant's and holds the channel anyway: this keeps the
    workers' other processes (a subprocess, a shell) from their worker."""
    if resource.getrlimit(resource.RLIMIT_CORE)[0] == 0:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE)")


def main() -> None:
    settings = json.loads(sys.argv[1])
    lazy = bool(settings.pop("lazy_app", False))
    spare = Spare(settings.pop("spare_delay_ms", None))
    cfg = Config(**settings)
    if cfg.memory_limit:  # per process: the zygote's limit is each worker's
        resource.setrlimit(resource.RLIMIT_AS, (cfg.memory_limit, cfg.memory_limit))
    undumpable()
    app = None
    if not lazy:
        try:
            app = load(cfg.app)
        except BaseException as e:  # whatever importing the app raises: the reason
            traceback.print_exception(e)
            sys.exit(1)
        gc.freeze()  # what the app loaded stays: out of the collector's way, and shared
    r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(w)
    stopping = False

    def on_stop(signum: int, frame: Any) -> None:
        nonlocal stopping
        stopping = True

    for sig in (signal.SIGTERM, signal.SIGQUIT, signal.SIGINT):
        signal.signal(sig, on_stop)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # wakes select through the pipe
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    _say("ready")
    children = 0
    channel_open = True
    last_order = time.monotonic()
    while (channel_open and not stopping) or children:
        forking = channel_open and not stopping
        if not forking:
            spare.drop()
        watch = [r] + ([CONTROL_FD] if forking else [])
        timeout = spare.due_in(last_order) if forking else None
        try:
            ready = select.select(watch, [], [], timeout)[0]
        except InterruptedError:
            ready = []
        if timeout is not None and not ready:
            spare.make(cfg, app, (r, w))  # no order for a while: fork the next one ahead
            continue
        if r in ready:
            while True:
                try:
                    if not os.read(r, 512):
                        break
                except BlockingIOError:
                    break
        while children or spare.pid:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                children = 0
                spare.forget()
                break
            if pid == 0:
                break
            if pid == spare.pid:  # ended before its order: forked again later, unreported
                spare.lost()
                continue
            children -= 1
            _say(f"exit {pid} {status}")
        if CONTROL_FD in ready:
            got = _receive()
            if got is None:
                channel_open = False
                continue
            msg, fds = got
            max_requests = _order(msg, fds)
            if max_requests is None:
                continue
            last_order, spare.refused = time.monotonic(), False
            if spare.hand(msg, fds):
                children += 1
            else:
                try:
                    pid = os.fork()
                except OSError:
                    pid = -1  # the master sees the worker's channel end without a hello
                if pid == 0:
                    _leave_zygote((r, w))
                    _become_worker(cfg, app, max_requests, fds)
                children += pid > 0
            for fd in fds:
                os.close(fd)
    spare.drop()


if __name__ == "__main__":
    main()
