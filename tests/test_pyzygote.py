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
import threading
import time
from pathlib import Path

import pytest

from tenantfpm import fastcgi
from tenantfpm.master.zygote import channel, receive
from tenantfpm.pyworker.scoreboard import Board
from tenantfpm.runtimes.python import BOOT, PACKAGE_DIR
from tests.procs import children_of

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
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(self.sock_path)
        self.listener.listen(64)
        self.ctl, theirs = channel()
        self.ctl.setblocking(True)
        self.stderr_r, stderr_w = os.pipe()
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
        assert self.recv() == "ready", self.output()

    def output(self) -> bytes:
        os.set_blocking(self.stderr_r, False)
        with contextlib.suppress(BlockingIOError):
            return os.read(self.stderr_r, 65536)
        return b""

    def recv(self, timeout: float = 20) -> str:
        self.ctl.settimeout(timeout)
        return self.ctl.recv(128).decode()

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


def wait_for(what: str, check, timeout: float = 10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def spare_of(z: PyZygote) -> int:
    """The zygote's one child that is not a worker."""
    spares = wait_for("the spare", lambda: children_of(z.proc.pid) - set(z.workers))
    assert len(spares) == 1, spares
    return spares.pop()


def no_message(z: PyZygote, within: float = 0.5) -> bool:
    with contextlib.suppress(TimeoutError):
        z.recv(timeout=within)
        return False
    return True


def test_the_next_order_goes_to_the_spare_and_another_is_forked(spare_zygote):
    z = spare_zygote
    spare = spare_of(z)
    pid = z.fork()
    assert pid == spare  # no fork at the order: the spare became the worker
    r = z.request()
    assert r.status == 200 and r.body == f"pid={pid} host={pid}".encode(), r
    again = spare_of(z)
    assert again != pid
    os.kill(pid, signal.SIGTERM)
    assert z.recv() == f"exit {pid} 0"  # a worker from the spare is reported as any other
    del z.workers[pid]


def test_a_killed_spare_is_never_reported_and_is_replaced(spare_zygote):
    z = spare_zygote
    spare = spare_of(z)
    os.kill(spare, signal.SIGKILL)  # the tenant's code may do it: same user
    assert no_message(z)  # the master never heard of it
    assert spare_of(z) != spare
    # the spare dies while the zygote is not looking and an order waits: it is forked
    spare = spare_of(z)
    os.kill(z.proc.pid, signal.SIGSTOP)
    try:
        os.kill(spare, signal.SIGKILL)
        wait_for("the spare's end", lambda: Path(f"/proc/{spare}/stat").read_text()
                 .rsplit(")", 1)[1].split()[0] == "Z")
        t = threading.Timer(0.2, os.kill, (z.proc.pid, signal.SIGCONT))
        t.start()
        pid = z.fork()
        t.join()
    finally:
        os.kill(z.proc.pid, signal.SIGCONT)
    assert pid != spare
    assert z.request().status == 200


def test_the_spare_ends_with_its_zygote(tmp_path):
    z = PyZygote(tmp_path / "closed", spare_delay_ms=0)
    spare = spare_of(z)
    z.close()  # the master's end of the channel: the zygote forks no more, exits with 0
    assert z.proc.returncode == 0
    assert not Path(f"/proc/{spare}").exists()  # its spare went first, reaped
    killed = PyZygote(tmp_path / "killed", spare_delay_ms=0)
    try:
        spare = spare_of(killed)
        killed.proc.kill()  # no PID namespace here to take the spare along
        killed.proc.wait(timeout=20)
        wait_for("the spare's end", lambda: not Path(f"/proc/{spare}").exists())
    finally:
        killed.close()


def test_spares_that_keep_dying_are_given_up(spare_zygote):
    """A spare that cannot live (killed at once, every time) must not cost a fork per
    look: after three in a row the zygote forks at each order again."""
    z = spare_zygote
    for _ in range(3):
        spare = spare_of(z)
        os.kill(spare, signal.SIGKILL)
        wait_for("its end", lambda: spare not in children_of(z.proc.pid))  # noqa: B023
    time.sleep(0.3)
    assert not children_of(z.proc.pid)
    pid = z.fork()
    assert z.request().status == 200
    time.sleep(0.3)
    assert children_of(z.proc.pid) == {pid}
    assert b"forking at each order from now on" in z.output()


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
