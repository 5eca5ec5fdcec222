"""Listen-queue figures of the pool sockets, from the kernel (sock_diag).

A Unix listener (the usual tenant socket) is looked up by its inode, which the
kernel answers without walking the others, so a pool's look costs the same
with ten tenants or ten thousand; TCP listeners share one dump per family.
pyroute2 encodes and decodes the sock_diag messages; the round trip is a plain
blocking netlink socket here, because pyroute2's synchronous API runs an event
loop of its own, which cannot nest in the master's. Only sockets of the
master's network namespace are visible.
"""

from __future__ import annotations

import os
import socket
import struct
from dataclasses import dataclass

from pyroute2.netlink.diag import (
    SOCK_DIAG_BY_FAMILY,
    UDIAG_SHOW_RQLEN,
    MarshalDiag,
    inet_diag_req,
    unix_diag_req,
)

NETLINK_SOCK_DIAG = 4
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
_LISTEN = 1 << 10  # TCP_LISTEN (10) is also the state of a listening unix socket
NO_COOKIE = (1 << 64) - 1  # INET_DIAG_NOCOOKIE: look the socket up by inode alone


@dataclass(frozen=True)
class Queue:
    pending: int  # connections accepted by the kernel, not yet by a worker
    backlog: int  # the listen() backlog in force


def key_of(sock: socket.socket) -> int:
    """The socket's inode: how sock_diag names it, for Unix and TCP alike."""
    return os.fstat(sock.fileno()).st_ino


def _ends_dump(data: bytes) -> bool:
    """Whether this netlink datagram carries NLMSG_DONE (or an error ending the dump)."""
    offset = 0
    while offset + 16 <= len(data):
        length, mtype = struct.unpack_from("=IH", data, offset)
        if mtype == NLMSG_DONE:
            return True
        if mtype == NLMSG_ERROR:
            raise OSError("sock_diag request failed")
        if length == 0:
            return True
        offset += (length + 3) & ~3
    return False


class ListenQueues:
    def __init__(self) -> None:
        self._nl: socket.socket | None = None
        self._seq = 0
        self._marshal = MarshalDiag()

    def _dump(self, family: int, inode: int | None = None) -> list[object]:
        """Every listening socket of `family`, or (Unix only) the one with `inode`: a
        lookup the kernel answers without walking the others."""
        if self._nl is None:
            self._nl = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG)
            self._nl.settimeout(1.0)
        if family == socket.AF_UNIX:
            req = unix_diag_req()
            req["udiag_states"] = _LISTEN
            req["udiag_show"] = UDIAG_SHOW_RQLEN
            if inode is not None:
                req["udiag_ino"] = inode
                req["udiag_cookie"] = NO_COOKIE
        else:
            req = inet_diag_req()
            req["idiag_states"] = _LISTEN
            req["sdiag_protocol"] = socket.IPPROTO_TCP
        req["sdiag_family"] = family
        self._seq += 1
        req["header"]["type"] = SOCK_DIAG_BY_FAMILY
        req["header"]["flags"] = NLM_F_REQUEST | (NLM_F_DUMP if inode is None else 0)
        req["header"]["sequence_number"] = self._seq
        req.encode()
        self._nl.send(req.data)
        chunks = []
        while True:
            data = self._nl.recv(1 << 20)
            if inode is not None:  # an exact lookup answers in one message, or an error
                if len(data) >= 16 and struct.unpack_from("=IH", data)[1] == NLMSG_ERROR:
                    return []
                chunks.append(data)
                break
            chunks.append(data)
            if _ends_dump(data):
                break
        return [m for data in chunks for m in self._marshal.parse(data)
                if m["header"]["type"] == SOCK_DIAG_BY_FAMILY]

    def unix_one(self, inode: int) -> Queue | None:
        """One Unix listener's queue, by its inode: O(1), whatever else the host listens on."""
        try:
            for m in self._dump(socket.AF_UNIX, inode):
                rq = m.get_attr("UNIX_DIAG_RQLEN")  # type: ignore[attr-defined]
                if rq and m["udiag_ino"] == inode:  # type: ignore[index]
                    return Queue(rq["udiag_rqueue"], rq["udiag_wqueue"])  # type: ignore[index]
        except OSError:
            self.close()
        return None

    def read(self, families: set[int]) -> dict[int, Queue]:
        out: dict[int, Queue] = {}
        try:
            if socket.AF_UNIX in families:
                for m in self._dump(socket.AF_UNIX):
                    rq = m.get_attr("UNIX_DIAG_RQLEN")  # type: ignore[attr-defined]
                    if rq:
                        out[m["udiag_ino"]] = Queue(rq["udiag_rqueue"],  # type: ignore[index]
                                                    rq["udiag_wqueue"])
            for fam in (socket.AF_INET, socket.AF_INET6):
                if fam in families:
                    for m in self._dump(fam):
                        out[m["idiag_inode"]] = Queue(m["idiag_rqueue"],  # type: ignore[index]
                                                      m["idiag_wqueue"])  # type: ignore[index]
        except OSError:
            self.close()
        return out

    def close(self) -> None:
        if self._nl is not None:
            self._nl.close()
            self._nl = None
