"""listenq.py against the kernel: real listeners with connections waiting, and the parser
with what a hostile or broken answer could hold."""

import socket
import struct

import pytest

from tenantfpm import listenq
from tenantfpm.listenq import ListenQueues, Queue, key_of


def test_a_unix_listeners_queue_by_its_inode(tmp_path):
    path = str(tmp_path / "s.sock")
    with socket.socket(socket.AF_UNIX) as srv:
        srv.bind(path)
        srv.listen(7)
        q = ListenQueues()
        assert q.unix_one(key_of(srv)) == Queue(0, 7)
        clients = [socket.socket(socket.AF_UNIX) for _ in range(3)]
        for c in clients:
            c.connect(path)
        assert q.unix_one(key_of(srv)) == Queue(3, 7)
        assert q.unix_all()[key_of(srv)] == Queue(3, 7)
        (tmp_path / "f").write_text("")  # an inode that is no socket: no answer
        assert q.unix_one((tmp_path / "f").stat().st_ino) is None
        for c in clients:
            c.close()
        q.close()


def test_a_tcp_listeners_queue_from_the_socket_itself():
    with socket.socket() as srv, socket.socket(socket.AF_INET6) as srv6:
        srv.bind(("127.0.0.1", 0))
        srv.listen(5)
        assert listenq.tcp_one(srv) == Queue(0, 5)
        c = socket.create_connection(srv.getsockname())
        assert listenq.tcp_one(srv) == Queue(1, 5)
        c.close()
        srv6.bind(("::1", 0))
        srv6.listen(3)
        c6 = socket.create_connection(srv6.getsockname()[:2])
        assert listenq.tcp_one(srv6) == Queue(1, 3)
        c6.close()


def _msg(body: bytes, mtype: int = listenq.SOCK_DIAG_BY_FAMILY, length: int | None = None):
    return struct.pack("=IHHII", length if length is not None else 16 + len(body), mtype,
                       0, 1, 0) + body


def test_the_parser_stops_at_what_was_received():
    rqlen = struct.pack("=HH", 12, listenq.UNIX_DIAG_RQLEN) + struct.pack("=II", 2, 9)
    good = _msg(struct.pack("=BBBBIII", 1, 1, 10, 0, 42, 0, 0) + rqlen)
    assert listenq.parse(good, socket.AF_UNIX) == ({42: Queue(2, 9)}, False)
    assert listenq.parse(good + _msg(b"", listenq.NLMSG_DONE), socket.AF_UNIX)[1]
    # a length past the datagram, an attribute past its message, a message too short
    assert listenq.parse(_msg(b"x" * 20, length=4000), socket.AF_UNIX) == ({}, True)
    bad_attr = struct.pack("=HH", 200, listenq.UNIX_DIAG_RQLEN) + struct.pack("=II", 2, 9)
    assert listenq.parse(_msg(struct.pack("=BBBBIII", 1, 1, 10, 0, 42, 0, 0) + bad_attr),
                         socket.AF_UNIX) == ({}, False)
    assert listenq.parse(_msg(b"\x01\x02"), socket.AF_INET) == ({}, False)
    assert listenq.parse(_msg(b"", length=3), socket.AF_UNIX) == ({}, True)
    with pytest.raises(OSError):
        listenq.parse(_msg(struct.pack("=i", -1), listenq.NLMSG_ERROR), socket.AF_UNIX)
