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
child forked ahead once no order has come for that long. The zygote stops reading the
channel while it waits; the spare takes the next order from fd 3 itself and says so
on a pipe. It runs none of the tenant's code before its order (a lazy app is imported
after it), the master never hears of it, and it dies with the zygote
(PR_SET_PDEATHSIG).

Descriptors come in on fd 3 only, and fd 3 stays the channel in every process of the
tenant (the seccomp filter: sandbox/seccomp.py), so the workers keep it open: the
master heeds the zygote's own pid only, by the kernel's word.
"""

from __future__ import annotations

import array
import contextlib
import ctypes
import fcntl
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

from tenantfpm.pyworker.main import Config, Worker, load, open_errors
from tenantfpm.wire import zygote as wire
from tenantfpm.wire.fds import ACCESS_FD, BOARD_FD, CHANNEL_FD, HOST_PID_ENV, TRACE_FD

CONTROL_FD = CHANNEL_FD
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
    ctl = socket.socket(fileno=fd)  # not a copy: descriptors come in on fd 3 only
    try:
        msg, anc, _flags, _ = ctl.recvmsg(wire.MAX_MESSAGE,
                                          socket.CMSG_SPACE(MAX_FDS * fds.itemsize),
                                          socket.MSG_CMSG_CLOEXEC)
    except InterruptedError:
        return b"", []
    finally:
        ctl.detach()
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
        sock.send((wire.HELLO % os.getpid()).encode())
        if select.select([sock], [], [], HELLO_WAIT)[0]:
            host = wire.host_pid(sock.recv(wire.MAX_MESSAGE))
            if host is not None:
                os.environ[HOST_PID_ENV] = str(host)
    except OSError:
        os._exit(71)
    finally:
        sock.close()


def _order(msg: bytes, fds: list[int]) -> int | None:
    """An order's max_requests, or None (its fds closed) for anything else."""
    max_requests = wire.fork_order(msg, len(fds), needs=5)  # and the board and trace pipe
    if max_requests is not None:
        return max_requests
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
    # fd 3, the channel, stays: the seccomp filter pins it (see the top of this file)


def _become_worker(cfg: Config, app: Any, max_requests: int, fds: list[int]) -> None:
    """In the child: the fds where the worker expects them, then serve; never returns."""
    code = 0
    try:
        chan, out, err, board, trace, *rest = fds
        os.dup2(out, 1)
        os.dup2(err, 2)
        _hello(chan)
        # out of the targets' way first: a source may sit on another's target number
        sources = [board, trace, *rest[:1]]
        moved = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, ACCESS_FD + 1) for fd in sources]
        for fd in (out, err, *sources, *rest[1:]):
            if fd > 2:
                os.close(fd)
        for fd, target in zip(moved, (BOARD_FD, TRACE_FD, ACCESS_FD), strict=False):
            os.dup2(fd, target)
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
    """The one child forked ahead, and the read end of its pipe: the fork of an
    interpreter holding the app (a few ms) is then off the path of an ondemand pool's
    first request."""

    def __init__(self, delay_ms: int | None) -> None:
        self.delay = None if delay_ms is None else delay_ms / 1000
        self.pid = 0
        self.took: int | None = None  # "t" once it took an order
        self.lost_in_a_row = 0
        self.refused = False  # its fork failed: none until the next order

    def due_in(self, last_order: float) -> float | None:
        """Seconds until a spare should be forked, or None when none is wanted now."""
        if self.delay is None or self.pid or self.refused:
            return None
        return max(0.0, last_order + self.delay - time.monotonic())

    def make(self, cfg: Config, app: Any, wakeup: tuple[int, int]) -> None:
        try:
            r, w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError:
            self.refused = True
            return
        zygote = os.getpid()
        try:
            pid = os.fork()
        except OSError:  # the pids limit, memory: the fork at the next order will say it
            os.close(r)
            os.close(w)
            self.refused = True
            return
        if pid == 0:
            try:
                os.close(r)
                _leave_zygote(wakeup)
                if not _pdeathsig(signal.SIGKILL) or os.getppid() != zygote:
                    os._exit(0)
                got = _receive()
                max_requests = _order(*got) if got else None
                if got is None or max_requests is None:
                    os._exit(0)  # the channel's end, or not an order
                os.write(w, b"t")  # the zygote is gone otherwise: so is the order, with us
                os.close(w)
                _pdeathsig(0)  # a worker now, as one forked at its order
                _become_worker(cfg, app, max_requests, got[1])
            finally:
                os._exit(0)
        os.close(w)
        self.pid, self.took = pid, r

    def taken(self) -> bool:
        """Whether the spare took an order: then it is a worker, ours to report, and
        forgotten here. Does not wait; at the pipe's end its reaping tells the rest."""
        if self.took is None:
            return False
        try:
            said = os.read(self.took, 1)
        except BlockingIOError:
            return False
        if said == b"t":
            self.forget()
            self.lost_in_a_row = 0
            return True
        if not said:
            os.close(self.took)
            self.took = None
        return False

    def forget(self) -> None:
        if self.took is not None:
            os.close(self.took)
        self.pid, self.took = 0, None

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
    _say(wire.READY)
    children = 0
    channel_open = True
    last_order = time.monotonic()
    while (channel_open and not stopping) or children:
        forking = channel_open and not stopping
        if not forking:
            children += spare.taken()
            spare.drop()
        # while a spare waits, the order is its to take
        watch = [r] + ([CONTROL_FD] if forking and not spare.pid else [])
        watch += [spare.took] if spare.took is not None else []
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
            if pid == spare.pid:
                if spare.taken():  # a worker already: its end is reported
                    _say(wire.EXIT % (pid, status))
                else:  # ended before its order: forked again later, unreported
                    spare.lost()
                continue
            children -= 1
            _say(wire.EXIT % (pid, status))
        if spare.took is not None and spare.took in ready and spare.taken():
            children += 1
            last_order, spare.refused = time.monotonic(), False
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
