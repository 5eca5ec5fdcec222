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
"""

from __future__ import annotations

import array
import contextlib
import gc
import json
import os
import resource
import select
import signal
import socket
import sys
import traceback
from typing import Any

from tenantfpm.pyworker import ACCESS_FD, BOARD_FD, TRACE_FD
from tenantfpm.pyworker.main import Config, Worker, load, open_errors

CONTROL_FD = 3
MAX_FDS = 6  # hello channel, stdout, stderr, scoreboard, trace pipe, access.log
HELLO_WAIT = 5.0


def _say(text: str) -> None:
    with contextlib.suppress(OSError):  # the master is gone: it will not listen anyway
        os.write(CONTROL_FD, text.encode())


def _receive() -> tuple[bytes, list[int]] | None:
    """One order and its fds; None when the master closed the channel."""
    fds = array.array("i")
    ctl = socket.socket(fileno=os.dup(CONTROL_FD))
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


def _become_worker(cfg: Config, app: Any, max_requests: int, fds: list[int],
                   wakeup: tuple[int, int]) -> None:
    """In the child: the fds where the worker expects them, then serve; never returns."""
    code = 0
    try:
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGQUIT, signal.SIGINT):
            signal.signal(sig, signal.SIG_DFL)
        for fd in wakeup:
            os.close(fd)
        os.close(CONTROL_FD)  # the worker runs the tenant's code: no channel to the master
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


def main() -> None:
    settings = json.loads(sys.argv[1])
    lazy = bool(settings.pop("lazy_app", False))
    cfg = Config(**settings)
    if cfg.memory_limit:  # per process: the zygote's limit is each worker's
        resource.setrlimit(resource.RLIMIT_AS, (cfg.memory_limit, cfg.memory_limit))
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
    while (channel_open and not stopping) or children:
        watch = [r] + ([CONTROL_FD] if channel_open and not stopping else [])
        try:
            ready = select.select(watch, [], [])[0]
        except InterruptedError:
            ready = []
        if r in ready:
            while True:
                try:
                    if not os.read(r, 512):
                        break
                except BlockingIOError:
                    break
        while children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                children = 0
                break
            if pid == 0:
                break
            children -= 1
            _say(f"exit {pid} {status}")
        if CONTROL_FD in ready:
            got = _receive()
            if got is None:
                channel_open = False
                continue
            msg, fds = got
            parts = msg.split()
            if len(parts) != 2 or parts[0] != b"fork" or not parts[1].isdigit() or len(fds) < 5:
                for fd in fds:
                    os.close(fd)
                continue  # not an order from our master
            try:
                pid = os.fork()
            except OSError:
                pid = -1  # the master sees the worker's channel end without a hello
            if pid == 0:
                _become_worker(cfg, app, int(parts[1]), fds, (r, w))
            children += pid > 0
            for fd in fds:
                os.close(fd)


if __name__ == "__main__":
    main()
