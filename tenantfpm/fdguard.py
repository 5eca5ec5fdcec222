"""Descriptors that someone else sends the master: refused by the kernel, or closed off
the loop.

Why this exists: a unix socket carries descriptors (SCM_RIGHTS) on every socket type,
and whoever drops the last reference to a passed descriptor runs its close(). A TCP
socket with SO_LINGER and a send queue that cannot drain blocks that close for as long
as its sender likes (Linux honours the linger time for non-blocking sockets too), and
so does a unix socket that holds such a socket in its queue. A receiver that reads with
a plain recv() drops what came along in its own thread, as does one that closes what
recvmsg() brought, or closes a socket with such a message still queued. The master must
never be that receiver: any local user reaches self.sock, any tenant its zygote's
channel.

Two ways, the same guarantee:
- the kernel's SO_PASSRIGHTS = 0 (Linux 6.16 and later) on every unix socket the master
  reads from a tenant or a user: the sender's sendmsg() fails with EPERM and nothing is
  ever queued (an accepted socket inherits it from its listener);
- elsewhere (Debian 12's own 6.1) every read takes the descriptors out with recvmsg()
  and a control buffer large enough for the most one message can carry (SCM_MAX_FD),
  and both those descriptors and the sockets themselves go to `DISPOSER`. It defuses
  what it can and closes that at once (defuse(): a TCP socket's linger set to an
  abortive 0; a unix socket shut for reading, so nothing more can be queued, and
  emptied, its contents defused in turn), and closes the rest (a file whose close may
  wait, a listener, a deep nest) in threads of its own, which may block; the loop
  never does. `TENANTFPM_NO_PASSRIGHTS=1` forces this fallback (the tests run both).
"""

from __future__ import annotations

import array
import contextlib
import functools
import grp
import os
import queue
import socket
import struct
import threading
from collections.abc import Callable

SO_PASSRIGHTS = 83  # include/uapi/asm-generic/socket.h, Linux 6.16
SCM_MAX_FD = 253  # the most descriptors one message (one skb) can carry
CONTROL_SPACE = socket.CMSG_SPACE(SCM_MAX_FD * 4) + socket.CMSG_SPACE(12)  # + credentials
FORCE_FALLBACK_ENV = "TENANTFPM_NO_PASSRIGHTS"
_UCRED = struct.Struct("3i")  # pid, uid, gid
_ABORT = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() resets at once, never waits
DEFUSE_BUDGET = 64  # descriptors one defuse() may take out of nested queues


def forced_off() -> bool:
    return os.environ.get(FORCE_FALLBACK_ENV) == "1"


def refuse(sock: socket.socket) -> bool:
    """Ask the kernel to refuse descriptors sent to `sock`; False where it cannot (the
    kernel has no SO_PASSRIGHTS, or the fallback is forced): the caller then reads and
    closes through this module."""
    if forced_off():
        return False
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_PASSRIGHTS, 0)
    except OSError:
        return False
    return True


def supported() -> bool:
    """Whether this kernel refuses passed descriptors on request (and it is not forced off)."""
    a, b = socket.socketpair()
    try:
        return refuse(a)
    finally:
        a.close()
        b.close()


def defuse(fd: int, budget: list[int]) -> bool:
    """Make closing `fd` harmless from here, without waiting; whether that worked.

    A socket of any family but unix gets an abortive linger (0 s), which is what made a
    close block in the first place. A unix socket is shut for reading first (its peer's
    sends fail from then on, so nothing new can be queued behind our back), then
    emptied, each descriptor found in it defused in turn or handed to the threads;
    `budget` bounds how many one top-level call takes out. Anything else (not a socket:
    a file whose close may wait on its filesystem; a listener, whose pending connections
    hold queues of their own; an unknown type) is not ours to judge: False."""
    try:
        s = socket.socket(fileno=fd)
    except OSError:
        return False
    try:
        if s.family != socket.AF_UNIX:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _ABORT)
            return True
        if s.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            return False
        s.shutdown(socket.SHUT_RD)
        while budget[0] > 0:
            try:
                data, anc, _f, _a = s.recvmsg(65536, CONTROL_SPACE,
                                              socket.MSG_DONTWAIT | socket.MSG_CMSG_CLOEXEC)
            except BlockingIOError:
                return True  # empty
            found = rights(anc)
            for inner in found:
                budget[0] -= 1
                if defuse(inner, budget):
                    os.close(inner)
                else:
                    DISPOSER.close_later(inner)
            if not data and not found:
                return True  # the end: nothing queued
        return False  # more than the budget: the threads
    except OSError:
        return False
    finally:
        s.detach()


class Disposer:
    """Closes descriptors that came from outside without ever blocking the caller.

    What defuse() makes harmless is closed at once. The rest goes to threads of its own,
    where a close may block: a thread that has taken a descriptor and not come back is
    stuck in its close; the next descriptor then gets a new thread, up to MAX_THREADS.
    Past that, descriptors wait in the queue (the master holds them, bounded by the
    per-user connection limit and its descriptor limit) until a thread comes back: the
    loop never waits."""

    MAX_THREADS = 16

    def __init__(self) -> None:
        self._q: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0
        self._idle = 0
        self.closed = 0  # descriptors closed, for tests and status
        self.defused = 0  # of them, closed at once

    def close(self, fd: int) -> None:
        if defuse(fd, [DEFUSE_BUDGET]):
            with contextlib.suppress(OSError):
                os.close(fd)
            with self._lock:
                self.closed += 1
                self.defused += 1
            return
        self.close_later(fd)

    def close_later(self, fd: int) -> None:
        """In a thread: a close that may block."""
        self._q.put(fd)
        with self._lock:
            if self._idle == 0 and self._threads < self.MAX_THREADS:
                self._threads += 1
                threading.Thread(target=self._run, name="fd-disposer", daemon=True).start()

    def close_all(self, fds: list[int] | array.array[int]) -> None:
        for fd in fds:
            self.close(fd)

    def _run(self) -> None:
        while True:
            with self._lock:
                self._idle += 1
            fd = self._q.get()
            with self._lock:
                self._idle -= 1
            with contextlib.suppress(OSError):
                os.close(fd)
            with self._lock:
                self.closed += 1


DISPOSER = Disposer()


def rights(anc: list[tuple[int, int, bytes]]) -> array.array[int]:
    """The descriptors among recvmsg()'s ancillary data."""
    fds = array.array("i")
    for level, kind, payload in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
    return fds


def dispose_rights(anc: list[tuple[int, int, bytes]]) -> int:
    """Hand every descriptor that came along to the disposer; how many there were."""
    fds = rights(anc)
    DISPOSER.close_all(fds)
    return len(fds)


class Connection(socket.socket):
    """An accepted connection that tells its listener when it closes (the per-user count)."""

    release: Callable[[], None] | None = None

    def _released(self) -> None:
        release, self.release = self.release, None
        if release is not None:
            release()

    def close(self) -> None:
        self._released()
        super().close()


class GuardedSocket(Connection):
    """A unix stream socket for a kernel without SO_PASSRIGHTS: every read takes the
    descriptors out with the data (recvmsg with room for SCM_MAX_FD) and hands them to
    the disposer, and close() hands the socket itself over too, since closing it with a
    message still queued would drop what that message carries."""

    def recv(self, bufsize: int, flags: int = 0) -> bytes:  # type: ignore[override]
        data, anc, _f, _a = self.recvmsg(bufsize, CONTROL_SPACE, flags | socket.MSG_CMSG_CLOEXEC)
        dispose_rights(anc)
        return data

    def recv_into(self, buffer, nbytes: int = 0, flags: int = 0) -> int:  # type: ignore[override]
        view = memoryview(buffer)
        if nbytes:
            view = view[:nbytes]
        n, anc, _f, _a = self.recvmsg_into([view], CONTROL_SPACE,
                                           flags | socket.MSG_CMSG_CLOEXEC)
        dispose_rights(anc)
        return n

    def close(self) -> None:
        self._released()
        if self.fileno() >= 0:
            DISPOSER.close(self.detach())


class PerUser:
    """How many connections each local user holds to one listener, and the most it may:
    one user's flood of connections costs the master that many descriptors, never its
    whole limit (the others are closed as they are accepted)."""

    def __init__(self, most: int) -> None:
        self.most = most
        self.held: dict[int, int] = {}
        self.refused = 0  # connections closed at accept, over a user's share

    def take(self, uid: int) -> bool:
        n = self.held.get(uid, 0)
        if n >= self.most:
            self.refused += 1
            return False
        self.held[uid] = n + 1
        return True

    def give(self, uid: int) -> None:
        n = self.held.get(uid, 0) - 1
        if n > 0:
            self.held[uid] = n
        else:
            self.held.pop(uid, None)


def peer_uid(sock: socket.socket) -> int:
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    return _UCRED.unpack(raw)[1]


class Listener(socket.socket):
    """A listening unix socket whose accept() gives Connections: GuardedSockets where the
    kernel cannot refuse descriptors, and at most `per_user` of them per local user (the
    kernel's SO_PEERCRED says who). asyncio's and aiohttp's servers call this accept()."""

    guarded = False
    per_user: PerUser | None = None

    def accept(self) -> tuple[socket.socket, object]:
        while True:
            fd, addr = self._accept()  # type: ignore[attr-defined]
            cls = GuardedSocket if self.guarded else Connection
            conn = cls(self.family, self.type, self.proto, fileno=fd)
            limit = self.per_user
            if limit is not None:
                try:
                    uid = peer_uid(conn)
                except OSError:
                    conn.close()
                    continue
                if not limit.take(uid):
                    conn.close()  # over its share: gone before it is read
                    continue
                conn.release = functools.partial(limit.give, uid)
            return conn, addr


def guard(sock: socket.socket) -> socket.socket:
    """`sock` with SO_PASSRIGHTS = 0, or the same descriptor as a GuardedSocket."""
    if refuse(sock):
        return sock
    return GuardedSocket(sock.family, sock.type, sock.proto, fileno=sock.detach())


def unix_listener(path: str, mode: int, backlog: int = 128, per_user: int | None = None,
                  group: str | None = None) -> Listener:
    """A listening unix stream socket at `path`, `mode` from its first moment (and in
    `group`), whose connections never bring the master a descriptor to close, and
    (`per_user`) of which one local user holds at most that many at once."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    sock = Listener(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.guarded = not refuse(sock)  # inherited by every accepted connection
    if per_user is not None:
        sock.per_user = PerUser(per_user)
    old = os.umask(0o777 & ~mode)
    try:
        sock.bind(path)
    except BaseException:
        sock.close()
        raise
    finally:
        os.umask(old)
    os.chmod(path, mode)
    if group is not None:
        os.chown(path, 0, grp.getgrnam(group).gr_gid, follow_symlinks=False)
    sock.listen(backlog)
    sock.setblocking(False)
    return sock
