"""Listen-queue figures of the pool sockets, from the kernel.

A Unix listener (the usual tenant socket) is looked up by its inode (sock_diag),
which the kernel answers without walking the others, so a pool's look costs the same
with ten tenants or ten thousand. A TCP listener is the master's own socket, so it
asks that socket (TCP_INFO: the accept queue and its backlog): never a dump of every
listener on the host, which any tenant can fill with tens of thousands of its own.
Only sockets of the master's network namespace are visible.

The messages are packed by hand from linux/sock_diag.h, unix_diag.h and
inet_diag.h: three fixed structs and one attribute. pyroute2 encoded them
before, but importing it adds 22 MB to the master (its package imports all of
itself), a quarter of what a master with 10,000 tenants may use.
"""

from __future__ import annotations

import os
import socket
import struct
from dataclasses import dataclass

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
_LISTEN = 1 << 10  # TCP_LISTEN (10) is also the state of a listening unix socket
NO_COOKIE = 0xFFFFFFFF  # INET_DIAG_NOCOOKIE, each half: look the socket up by inode alone
UDIAG_SHOW_RQLEN = 0x10
UNIX_DIAG_RQLEN = 4

_NLMSG = struct.Struct("=IHHII")  # nlmsghdr: len, type, flags, seq, pid
# unix_diag_req: family, protocol, pad, states, ino, show, cookie[2]
_UNIX_REQ = struct.Struct("=BBHIIIII")
_UNIX_MSG = struct.Struct("=BBBBIII")  # unix_diag_msg: family, type, state, pad, ino, cookie
# struct tcp_info up to tcpi_sacked: for a listener, tcpi_unacked is the accept queue and
# tcpi_sacked its backlog (tcp_get_info)
_TCP_INFO = struct.Struct("=8xIIIIII")
_RTA = struct.Struct("=HH")  # rtattr: len, type
_RQLEN = struct.Struct("=II")  # unix_diag_rqlen: rqueue, wqueue


@dataclass(frozen=True)
class Queue:
    pending: int  # connections accepted by the kernel, not yet by a worker
    backlog: int  # the listen() backlog in force


def tcp_one(sock: socket.socket) -> Queue | None:
    """A TCP listener's queue, from the socket itself: O(1), whatever else the host
    listens on."""
    try:
        raw = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO.size)
    except OSError:
        return None
    if len(raw) < _TCP_INFO.size:
        return None
    unacked, sacked = _TCP_INFO.unpack(raw)[4:6]
    return Queue(unacked, sacked)


def key_of(sock: socket.socket) -> int:
    """The socket's inode: how sock_diag names it, for Unix and TCP alike."""
    return os.fstat(sock.fileno()).st_ino


def _align(n: int) -> int:
    return (n + 3) & ~3


def parse(data: bytes, family: int) -> tuple[dict[int, Queue], bool]:
    """The listeners (inode -> queue) in one netlink datagram, and whether it ends the
    answer. Every length is checked against what was received: a short or odd message
    ends the parse, never reads past the datagram."""
    out: dict[int, Queue] = {}
    offset = 0
    while offset + _NLMSG.size <= len(data):
        length, mtype = _NLMSG.unpack_from(data, offset)[:2]
        if mtype == NLMSG_DONE:
            return out, True
        if mtype == NLMSG_ERROR:
            raise OSError("sock_diag request failed")
        if length < _NLMSG.size or offset + length > len(data):
            return out, True
        body, end = offset + _NLMSG.size, offset + length
        if mtype == SOCK_DIAG_BY_FAMILY and family == socket.AF_UNIX \
                and body + _UNIX_MSG.size <= end:
            ino = _UNIX_MSG.unpack_from(data, body)[4]
            at = body + _UNIX_MSG.size
            while at + _RTA.size <= end:
                alen, atype = _RTA.unpack_from(data, at)
                if alen < _RTA.size or at + alen > end:
                    break
                if atype == UNIX_DIAG_RQLEN and alen >= _RTA.size + _RQLEN.size:
                    out[ino] = Queue(*_RQLEN.unpack_from(data, at + _RTA.size))
                at += _align(alen)
        offset += _align(length)
    return out, False


class ListenQueues:
    def __init__(self) -> None:
        self._nl: socket.socket | None = None
        self._seq = 0

    def _ask(self, family: int, inode: int | None = None) -> dict[int, Queue]:
        """Every listening Unix socket, or the one with `inode`: a lookup the kernel
        answers without walking the others."""
        if self._nl is None:
            self._nl = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG)
            self._nl.settimeout(1.0)
        req = _UNIX_REQ.pack(family, 0, 0, _LISTEN, inode or 0, UDIAG_SHOW_RQLEN,
                             *((NO_COOKIE, NO_COOKIE) if inode is not None else (0, 0)))
        self._seq += 1
        flags = NLM_F_REQUEST | (NLM_F_DUMP if inode is None else 0)
        self._nl.send(_NLMSG.pack(_NLMSG.size + len(req), SOCK_DIAG_BY_FAMILY, flags,
                                  self._seq, 0) + req)
        out: dict[int, Queue] = {}
        while True:
            data = self._nl.recv(1 << 20)
            if inode is not None:  # an exact lookup answers in one message, or an error
                if len(data) >= _NLMSG.size and _NLMSG.unpack_from(data)[1] == NLMSG_ERROR:
                    return {}
                return parse(data, family)[0]
            found, done = parse(data, family)
            out.update(found)
            if done:
                return out

    def unix_one(self, inode: int) -> Queue | None:
        """One Unix listener's queue, by its inode: O(1), whatever else the host listens on."""
        try:
            return self._ask(socket.AF_UNIX, inode).get(inode)
        except OSError:
            self.close()
        return None

    def unix_all(self) -> dict[int, Queue]:
        """Every Unix listener of the namespace (tests)."""
        try:
            return self._ask(socket.AF_UNIX)
        except OSError:
            self.close()
        return {}

    def close(self) -> None:
        if self._nl is not None:
            self._nl.close()
            self._nl = None
