"""The worker process: load the app, then accept on fd 0 and serve one request at a time.

Started by the master as `<interpreter> -c <boot> <settings json>` inside the
tenant's sandbox. What it tells the master goes through the scoreboard
(state, counters, current request), the trace pipe (a faulthandler dump on
TRACE_SIGNAL, for the slow log) and its stderr (error.log). SIGTERM, SIGQUIT
and SIGINT stop it gracefully: an idle worker leaves at once, a busy one after
its request.
"""

from __future__ import annotations

import contextlib
import faulthandler
import gc
import importlib
import json
import os
import resource
import select
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any

from tenantfpm.pyworker import accesslog
from tenantfpm.pyworker.responder import Closed, Connection, Request, receive_buffer
from tenantfpm.pyworker.wsgi import ExecutionTimeout, Settings, run_app
from tenantfpm.wire.fds import ACCESS_FD, BOARD_FD, HOST_PID_ENV, TRACE_FD, TRACE_SIGNAL
from tenantfpm.wire.scoreboard import EXITING, IDLE, READING, RUNNING, Board, Slot

PAGE = os.sysconf("SC_PAGE_SIZE")


class Stop(BaseException):
    """Raised by the stop signal's handler, only while the worker waits for work."""


@dataclass
class Config:
    app: str
    pool: str = ""
    max_requests: int = 0
    memory_limit: int = 0  # RLIMIT_AS in bytes; 0: none
    max_execution_time: float = 0.0
    body_limit: int = 0
    display_errors: bool = False
    error_log: str = ""  # a file inside the sandbox; "": stderr (the tenant's error.log)
    access_format: str = ""  # "": no access log
    master_pid: int = 0  # for %P: the worker's own getppid() is 0 in its PID namespace


class Worker:
    def __init__(self, cfg: Config, errors: IO[str]) -> None:
        self.cfg = cfg
        self.errors = errors
        self.board = Board(BOARD_FD)
        self.slot = Slot()
        self.idle = False
        self.stopping = False
        self.in_app = False
        self.pid = int(os.environ.get(HOST_PID_ENV) or os.getpid())
        self.access = accesslog.compile_format(cfg.access_format) if cfg.access_format else None
        self.settings = Settings(body_limit=cfg.body_limit, display_errors=cfg.display_errors)
        self.statm = os.open("/proc/self/statm", os.O_RDONLY | os.O_CLOEXEC)
        self.rbuf = receive_buffer()  # one connection at a time: one buffer for them all

    # --- signals ----------------------------------------------------------

    def _on_stop(self, signum: int, frame: Any) -> None:
        self.stopping = True
        if self.idle:
            raise Stop()

    def _on_alarm(self, signum: int, frame: Any) -> None:
        if self.in_app:
            raise ExecutionTimeout(f"Maximum execution time of "
                                   f"{self.cfg.max_execution_time:g} seconds exceeded")

    def install_signals(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGQUIT, signal.SIGINT):
            signal.signal(sig, self._on_stop)
        signal.signal(signal.SIGALRM, self._on_alarm)
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        # C-level: dumps the Python stack even while the app is blocked in C code
        faulthandler.register(TRACE_SIGNAL, file=TRACE_FD, all_threads=True, chain=False)

    # --- startup ----------------------------------------------------------

    def load(self) -> Callable[..., Any]:
        return load(self.cfg.app)

    def fatal(self, e: BaseException) -> None:
        self.errors.write("".join(traceback.format_exception(e)))
        self.errors.flush()
        last = traceback.format_exception_only(e)[-1].strip()
        self.slot.fatal, self.slot.state = last, EXITING
        self.board.publish(self.slot, texts=True)

    # --- serving ----------------------------------------------------------

    def _wait_for_work(self, call: Callable[[], Any]) -> Any:
        """Run a blocking wait during which a stop signal may interrupt (raise Stop)."""
        if self.stopping:
            raise Stop()
        self.idle = True
        try:
            return call()
        finally:
            self.idle = False

    def serve(self, app: Callable[..., Any], listener: socket.socket) -> None:
        limit = self.cfg.max_requests
        while not self.stopping and not (limit and self.slot.requests >= limit):
            self.slot.state = IDLE
            self.board.publish(self.slot)
            try:
                sock, _ = self._wait_for_work(listener.accept)
            except Stop:
                break
            except ConnectionAbortedError:
                continue  # the client left while queued: nothing to serve
            self.slot.accepted += 1  # published with the request's start (one write less)
            try:
                self._connection(app, Connection(sock, rbuf=self.rbuf), listener)
            except Closed as e:
                self.errors.write(f"FastCGI connection dropped: {e}\n")
                self.errors.flush()
            except Stop:
                break
            finally:
                sock.close()
        self.slot.state = EXITING
        self.board.publish(self.slot)

    def _connection(self, app: Callable[..., Any], conn: Connection,
                    listener: socket.socket) -> None:
        limit = self.cfg.max_requests
        while True:
            req = conn.next_request()
            if req is None:
                return
            self._request(app, conn, req)
            if not req.keep_conn or self.stopping or (limit and self.slot.requests >= limit):
                return
            if not conn.pending() and not self._keepalive(conn, listener):
                return
            self.slot.state = READING
            self.board.publish(self.slot)

    def _keepalive(self, conn: Connection, listener: socket.socket) -> bool:
        """Wait on a kept connection; give it up when another connection is waiting."""
        self.slot.state = IDLE
        self.board.publish(self.slot)
        p = select.poll()
        p.register(conn.sock.fileno(), select.POLLIN)
        p.register(listener.fileno(), select.POLLIN)
        ready = dict(self._wait_for_work(p.poll))
        return conn.sock.fileno() in ready

    def _app_done(self) -> None:
        self.in_app = False
        if self.cfg.max_execution_time:
            signal.setitimer(signal.ITIMER_REAL, 0)

    def _rss(self) -> int:
        """Resident bytes now. Not ru_maxrss: that starts at the master's RSS at fork time
        and survives exec, so it would report the master's size."""
        try:
            return int(os.pread(self.statm, 64, 0).split()[1]) * PAGE
        except (OSError, ValueError, IndexError):
            return 0

    def _request(self, app: Callable[..., Any], conn: Connection, req: Request) -> None:
        s = self.slot
        p = req.params
        s.state, s.request_start = RUNNING, time.monotonic()
        s.method, s.uri = p.get("REQUEST_METHOD", ""), p.get("REQUEST_URI", "")
        s.script = p.get("SCRIPT_FILENAME", "")
        try:
            s.content_length = int(p.get("CONTENT_LENGTH") or 0)
        except ValueError:
            s.content_length = -1
        self.board.publish(s, texts=True)
        wall, cpu0 = time.time(), time.process_time()
        timer = self.cfg.max_execution_time
        if timer:
            signal.setitimer(signal.ITIMER_REAL, timer)
        self.in_app = True
        try:
            resp = run_app(app, conn, req, self.settings, self.errors, self._app_done)
        finally:
            self._app_done()
            s.last_duration = time.monotonic() - s.request_start
            s.last_cpu = time.process_time() - cpu0
            s.last_cpu_percent = 100 * s.last_cpu / s.last_duration if s.last_duration else 0.0
            s.last_memory = self._rss()
            s.requests += 1
        s.last_status = resp.code
        if self.access is not None:
            entry = accesslog.Entry(p, resp.code, wall, s.last_duration, s.last_cpu,
                                    s.last_memory, self.cfg.pool, self.pid, self.cfg.master_pid,
                                    resp.headers)
            os.write(ACCESS_FD, (accesslog.render(self.access, entry) + "\n").encode())


def load(spec: str) -> Callable[..., Any]:
    """The app object named "package.module:callable" (default callable: application)."""
    module, _, name = spec.partition(":")
    obj: Any = importlib.import_module(module)
    for part in (name or "application").split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise TypeError(f"{spec} is not callable")
    return obj


def open_errors(path: str) -> IO[str]:
    if path:
        try:
            return open(path, "a", buffering=1)  # the worker's whole life
        except OSError as e:
            print(f"error_log {path}: {e.strerror}; writing errors to stderr", file=sys.stderr)
    return sys.stderr


def main() -> None:
    # started on its own (a plan's pass_fds begin at 3), not forked by the zygote: one up,
    # where the zygote's workers have them
    for fd in (ACCESS_FD - 1, TRACE_FD - 1, BOARD_FD - 1):
        with contextlib.suppress(OSError):
            os.dup2(fd, fd + 1)
    cfg = Config(**json.loads(sys.argv[1]))
    errors = open_errors(cfg.error_log)
    w = Worker(cfg, errors)
    w.install_signals()
    try:
        if cfg.memory_limit:
            resource.setrlimit(resource.RLIMIT_AS, (cfg.memory_limit, cfg.memory_limit))
        app = w.load()
    except BaseException as e:  # whatever importing the app raises
        w.fatal(e)
        sys.exit(1)
    # what the app loaded at import stays for the worker's life: keep it out of the
    # cyclic collector's full passes, which would otherwise walk it again and again
    gc.freeze()
    listener = socket.socket(fileno=0)
    w.serve(app, listener)


if __name__ == "__main__":
    main()
