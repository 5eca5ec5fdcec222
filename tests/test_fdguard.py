"""fdguard on its own: the kernel's refusal where it has one, the fallback's reads and
closes that never block their caller (a socket whose close blocks is made here)."""

from __future__ import annotations

import array
import contextlib
import os
import socket
import struct
import threading
import time
from collections.abc import Iterator

import pytest

from tenantfpm import fdguard


@contextlib.contextmanager
def lingering_carrier() -> Iterator[socket.socket]:
    """A socket pair end that carries, in its queue, a TCP socket whose last close()
    blocks while this context lives (SO_LINGER, and a send queue its peer, a listener
    that never accepts, never drains). Closed in an order that never blocks."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    c = socket.socket()
    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 3600))
    c.connect(srv.getsockname())
    c.setblocking(False)
    with contextlib.suppress(BlockingIOError):
        while True:
            c.send(b"x" * 65536)
    x, y = socket.socketpair()
    x.sendmsg([b"a"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [c.fileno()]))])
    c.close()  # not the last reference (the copy in y's queue is): y's holder has that
    try:
        yield y
    finally:
        srv.close()  # the queued connection is reset: every lingering close returns
        x.close()
        y.close()


def send_fd(sock: socket.socket, data: bytes, fd: int) -> None:
    sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))])


def test_a_plain_close_of_the_last_reference_blocks():
    """The harness itself: closing the carrier, when it is the last reference, blocks its
    caller until the lingering socket's peer goes (what the master must never do)."""
    done = threading.Event()
    with lingering_carrier() as y:
        a, b = socket.socketpair()
        send_fd(b, b"x", y.fileno())
        y.close()

        def close_it() -> None:
            a.close()  # the copy in a's queue is the last reference
            done.set()

        t = threading.Thread(target=close_it, daemon=True)
        t.start()
        assert not done.wait(1.0)
    assert done.wait(5.0)  # the peer went: the close returned
    b.close()


def test_the_fallback_reads_and_closes_without_blocking(monkeypatch):
    monkeypatch.setenv(fdguard.FORCE_FALLBACK_ENV, "1")
    a, b = socket.socketpair()
    g = fdguard.guard(a)
    assert isinstance(g, fdguard.GuardedSocket)
    with lingering_carrier() as y:
        send_fd(b, b"hi", y.fileno())
        send_fd(b, b"!", y.fileno())
        y.close()  # the copies in g's queue are the last references now
        closed = fdguard.DISPOSER.closed
        t0 = time.monotonic()
        assert g.recv(64) == b"hi"  # its descriptor to the disposer
        g.close()  # "!" and its descriptor still queued: the disposer closes the socket
        took = time.monotonic() - t0
        assert took < 0.5, took
        deadline = time.monotonic() + 5
        while fdguard.DISPOSER.closed < closed + 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert fdguard.DISPOSER.closed >= closed + 1
    b.close()


def test_recv_into_takes_descriptors_out_too(monkeypatch):
    monkeypatch.setenv(fdguard.FORCE_FALLBACK_ENV, "1")
    a, b = socket.socketpair()
    g = fdguard.guard(a)
    r, w = socket.socketpair()
    send_fd(b, b"data", r.fileno())
    buf = bytearray(16)
    assert g.recv_into(buf) == 4 and bytes(buf[:4]) == b"data"
    for s in (g, b, r, w):
        s.close()


def test_a_listener_refuses_descriptors_where_the_kernel_can(tmp_path):
    if not fdguard.supported():
        pytest.skip("this kernel has no SO_PASSRIGHTS (before 6.16): the fallback is tested")
    lst = fdguard.unix_listener(str(tmp_path / "s"), 0o600)
    assert not isinstance(lst, fdguard.GuardedSocket)
    c = socket.socket(socket.AF_UNIX)
    c.connect(str(tmp_path / "s"))
    lst.setblocking(True)
    s, _ = lst.accept()
    r, w = socket.socketpair()
    with pytest.raises(PermissionError):
        send_fd(c, b"x", r.fileno())
    for x in (lst, c, s, r, w):
        x.close()


def test_the_listener_has_its_mode_from_the_start(tmp_path):
    import os
    import stat
    lst = fdguard.unix_listener(str(tmp_path / "s"), 0o660)
    assert stat.S_IMODE(os.stat(tmp_path / "s").st_mode) == 0o660
    lst.close()


@pytest.mark.parametrize("fallback", [False, True], ids=["kernel", "fallback"])
def test_a_listener_gives_each_user_its_share_of_connections(tmp_path, monkeypatch,
                                                             fallback):
    if fallback:
        monkeypatch.setenv(fdguard.FORCE_FALLBACK_ENV, "1")
    path = str(tmp_path / "s")
    lst = fdguard.unix_listener(path, 0o600, per_user=3)
    lst.setblocking(True)
    clients = [socket.socket(socket.AF_UNIX) for _ in range(5)]
    for c in clients:
        c.connect(path)
    accepted = []
    lst.settimeout(0.5)
    with contextlib.suppress(TimeoutError, BlockingIOError):
        while True:
            accepted.append(lst.accept()[0])
    assert len(accepted) == 3 and lst.per_user.refused == 2  # the other two closed at once
    assert lst.per_user.held == {os.getuid(): 3}
    accepted.pop().close()  # one goes: the user may have another
    late = socket.socket(socket.AF_UNIX)
    late.connect(path)
    accepted.append(lst.accept()[0])
    assert lst.per_user.held == {os.getuid(): 3}
    for s in accepted + clients + [late, lst]:
        s.close()
    assert lst.per_user.held == {}
