"""The python zygote (tenantfpm/pyworker/zygote.py) driven directly, as the master drives
it: a real app, real FastCGI on a real socket, no sandbox. Its spare worker is the PHP
zygote's (tests/test_sapi.py): the next order goes to a child forked ahead."""

from __future__ import annotations

import array
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tenantfpm.master.zygote import channel, receive
from tenantfpm.runtimes.python import BOOT, PACKAGE_DIR
from tenantfpm.wire import fastcgi
from tenantfpm.wire.scoreboard import Board
from tests.procs import children_of
from tests.spares import (
    killed_spare_is_never_reported_and_is_replaced,
    master_ends,
    spares_that_keep_dying_are_given_up,
    the_next_order_goes_to_the_spare,
    the_spare_ends_with_its_zygote,
)

APP = '''
import os

def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [f"pid={os.getpid()} host={os.environ.get('TENANTFPM_WORKER_PID')}".encode()]
'''


class PyZygote:
    """The master's side of the protocol, by hand."""

    def __init__(self, base: Path, spare_delay_ms: int | None) -> None:
        base.mkdir()
        self.root = base
        (base / "app.py").write_text(APP)
        self.sock_path = str(base / "py.sock")
        self.listener, self.ctl, theirs, self.stderr_r, stderr_w = master_ends(self.sock_path)
        lst, ctl_fd = self.listener.fileno(), theirs.fileno()

        def fds() -> None:
            os.dup2(lst, 0)
            os.dup2(ctl_fd, 3)

        settings = {"app": "app:application", "pool": "py", "lazy_app": False,
                    **({} if spare_delay_ms is None else {"spare_delay_ms": spare_delay_ms})}
        boot = BOOT.format(lib=os.path.dirname(PACKAGE_DIR), module="zygote")
        self.proc = subprocess.Popen([sys.executable, "-c", boot, json.dumps(settings)],
                                     preexec_fn=fds, pass_fds=(3,), cwd=base,
                                     stdout=stderr_w, stderr=stderr_w,
                                     env={"PATH": "/usr/bin:/bin", "PYTHONUNBUFFERED": "1"})
        os.close(stderr_w)
        theirs.close()
        self.workers: dict[int, socket.socket] = {}
        self.held: list[int] = []
        assert self.recv() == ["ready"], self.output()

    def output(self) -> bytes:
        os.set_blocking(self.stderr_r, False)
        with contextlib.suppress(BlockingIOError):
            return os.read(self.stderr_r, 65536)
        return b""

    def recv(self, timeout: float = 20) -> list[str]:
        self.ctl.settimeout(timeout)
        return [self.ctl.recv(128).decode()]

    def fork(self, max_requests: int = 0) -> int:
        """One worker; its pid (the kernel's word, via its hello), answered."""
        ours, theirs = channel()
        out_r, out_w = os.pipe()
        board_fd, board = Board.create()
        trace_r, trace_w = os.pipe()
        self.held += [out_r, trace_r]
        board.close()
        self.ctl.sendmsg([f"fork {max_requests}".encode()],
                         [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                           array.array("i", [theirs.fileno(), out_w, out_w, board_fd,
                                             trace_w]))])
        for fd in (out_w, board_fd, trace_w):
            os.close(fd)
        theirs.close()
        deadline = time.time() + 20
        msgs: list = []
        while not msgs and time.time() < deadline:
            time.sleep(0.01)
            msgs, _closed = receive(ours, 1)
        assert msgs and msgs[0].kind == "hello", (msgs, self.output())
        pid = msgs[0].sender
        ours.send(f"pid {pid}".encode())
        self.workers[pid] = ours
        return pid

    def request(self, uri: str = "/") -> fastcgi.Response:
        params = fastcgi.cgi_params(str(self.root), uri)
        return fastcgi.request(self.sock_path, params, b"", timeout=20)

    def close(self) -> None:
        self.ctl.close()  # the master's end: the zygote forks no more
        for pid in self.workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            for s in self.workers.values():
                s.close()
            for fd in (*self.held, self.stderr_r):
                os.close(fd)
            self.listener.close()


@pytest.fixture
def spare_zygote(tmp_path):
    z = PyZygote(tmp_path / "z", spare_delay_ms=0)
    yield z
    z.close()


def test_the_next_order_goes_to_the_spare_and_another_is_forked(spare_zygote):
    def serves_as(pid: int) -> bool:  # its pid, and its host pid from the answered hello
        return spare_zygote.request().body == f"pid={pid} host={pid}".encode()

    the_next_order_goes_to_the_spare(spare_zygote, serves_as)


def test_a_killed_spare_is_never_reported_and_is_replaced(spare_zygote):
    killed_spare_is_never_reported_and_is_replaced(
        spare_zygote, lambda: spare_zygote.request().status == 200)


def test_the_spare_ends_with_its_zygote(tmp_path):
    the_spare_ends_with_its_zygote(lambda name: PyZygote(tmp_path / name, spare_delay_ms=0),
                                   PyZygote.close)


def test_spares_that_keep_dying_are_given_up(spare_zygote):
    spares_that_keep_dying_are_given_up(
        spare_zygote, lambda: spare_zygote.request().status == 200, spare_zygote.output)


def test_no_spare_without_its_delay(tmp_path):
    """A static pool's zygote (no spare_delay_ms) forks only at an order."""
    z = PyZygote(tmp_path / "static", spare_delay_ms=None)
    try:
        time.sleep(0.3)
        assert not children_of(z.proc.pid)
        pid = z.fork()
        assert z.request().body == f"pid={pid} host={pid}".encode()
        assert children_of(z.proc.pid) == {pid}
    finally:
        z.close()
