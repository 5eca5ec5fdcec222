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
from collections.abc import Callable, Iterator

import pytest

from tenantfpm import fdguard


@contextlib.contextmanager
def lingering_socket() -> Iterator[socket.socket]:
    """A TCP socket whose last close() blocks while this context lives (SO_LINGER, and a
    send queue its peer, a listener that never accepts, never drains)."""
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
    try:
        yield c
    finally:
        srv.close()  # the queued connection is reset: every lingering close returns


@contextlib.contextmanager
def lingering_carrier() -> Iterator[socket.socket]:
    """A socket pair end that carries, in its queue, a lingering_socket(). Closed in an
    order that never blocks."""
    x, y = socket.socketpair()
    try:
        with lingering_socket() as c:
            send_fd(x, b"a", c.fileno())
            c.close()  # not the last reference (the copy in y's queue is): y's holder has it
            yield y
    finally:  # after the reset: y's close no longer waits
        x.close()
        y.close()


def send_fd(sock: socket.socket, data: bytes, fd: int) -> None:
    sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))])


def returns(fn: Callable[[], None]) -> None:
    """`fn` came back: a close that blocked would hold it for the lingering socket's hour."""
    failed: list[BaseException] = []

    def run() -> None:
        try:
            fn()
        except BaseException as e:  # re-raised below, in the test's thread
            failed.append(e)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(30)
    assert not t.is_alive(), "blocked"
    if failed:
        raise failed[0]


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

        def read_and_close() -> None:
            assert g.recv(64) == b"hi"  # its descriptor to the disposer
            g.close()  # "!" and its descriptor still queued: the disposer closes the socket

        returns(read_and_close)
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


def test_the_disposer_defuses_what_it_can_and_closes_it_at_once():
    """A carrier of a lingering socket, and a socket that holds such a carrier in its
    queue: emptied, reset, closed in the caller's thread, by none of the disposer's."""
    for nested in (False, True):
        with lingering_carrier() as y:
            if nested:
                a, b = socket.socketpair()
                send_fd(b, b"x", y.fileno())
                y.close()  # not the last reference: the copy in a's queue is
                b.close()
                fd = a.detach()
            else:
                fd = y.detach()  # the last reference: its queue holds the lingering one
            before = fdguard.DISPOSER.defused
            returns(lambda fd=fd: fdguard.DISPOSER.close(fd))
            assert fdguard.DISPOSER.defused == before + 1


def test_a_lingering_tcp_socket_is_reset_not_waited_for():
    with lingering_socket() as c:
        assert fdguard.defuse(c.fileno(), [fdguard.DEFUSE_BUDGET])
        returns(c.close)  # without defuse(): an hour


def test_a_defused_unix_socket_can_be_sent_nothing_more():
    """Shut for reading before it is emptied: its peer cannot queue a descriptor between
    the emptying and the close."""
    a, b = socket.socketpair()
    r, w = socket.socketpair()
    send_fd(b, b"x", r.fileno())
    assert fdguard.defuse(a.fileno(), [fdguard.DEFUSE_BUDGET])
    with pytest.raises(BrokenPipeError):
        send_fd(b, b"y", w.fileno())
    for s in (a, b, r, w):
        s.close()


def test_what_cannot_be_judged_is_left_to_the_threads(tmp_path):
    lst = socket.socket(socket.AF_UNIX)
    lst.bind(str(tmp_path / "l"))
    lst.listen(1)  # its pending connections hold queues of their own
    assert not fdguard.defuse(lst.fileno(), [fdguard.DEFUSE_BUDGET])
    lst.close()
    with open(tmp_path / "f", "w") as f:  # a file: its close may wait on its filesystem
        assert not fdguard.defuse(f.fileno(), [fdguard.DEFUSE_BUDGET])
    # a nest deeper than the budget
    outer, feed = socket.socketpair()
    for _ in range(3):
        x, y = socket.socketpair()
        send_fd(feed, b"n", x.fileno())
        x.close()
        y.close()
    assert not fdguard.defuse(outer.fileno(), [2])
    outer.close()
    feed.close()
