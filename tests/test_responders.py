"""The same FastCGI transcripts through both responders: the python worker's
(pyworker/responder.py, served in a thread) and the PHP SAPI's (sapi/fcgi.c, a real
worker forked by a real zygote). What each answers at the protocol's level (record
types, request ids, END_REQUEST statuses, GET_VALUES answers, whether output came, and
whether the connection stays open) must be the same; the pages themselves differ."""

from __future__ import annotations

import socket
import struct

import pytest

from tenantfpm.config.model import PHP_SAPI_BINARY
from tenantfpm.wire.fastcgi import (
    ABORT_REQUEST,
    BEGIN_REQUEST,
    END_REQUEST,
    GET_VALUES,
    GET_VALUES_RESULT,
    PARAMS,
    STDERR,
    STDIN,
    STDOUT,
    Record,
    decode_pairs,
    encode_pairs,
    encode_stream,
)
from tests.test_pyworker import Served, hello, read_all
from tests.test_sapi import start_zygote


def begin(rid: int, keep: bool = False, role: int = 1) -> bytes:
    return Record(BEGIN_REQUEST, rid, struct.pack("!HB5x", role, 1 if keep else 0)).encode()


def params(rid: int, script: str) -> bytes:
    return encode_stream(PARAMS, rid, encode_pairs(
        {"SCRIPT_FILENAME": script, "REQUEST_METHOD": "GET", "REQUEST_URI": "/hello.php",
         "SCRIPT_NAME": "/hello.php", "QUERY_STRING": ""}.items()))


def request(rid: int, script: str, keep: bool = False) -> bytes:
    return begin(rid, keep) + params(rid, script) + encode_stream(STDIN, rid, b"")


# each: (name, the bytes a web server sends, given the script to name)
TRANSCRIPTS = {
    "one request": lambda s: request(1, s),
    "kept, pipelined": lambda s: request(1, s, True) + request(2, s, True) + request(3, s),
    "management records": lambda s: (
        Record(GET_VALUES, 0, encode_pairs([("FCGI_MPXS_CONNS", ""), ("FCGI_MAX_REQS", ""),
                                            ("FCGI_MAX_CONNS", ""), ("NOT_ONE", "")])).encode()
        + Record(99, 0, b"").encode() + request(1, s)),
    "a second request while busy": lambda s: (
        begin(1) + begin(2) + params(1, s) + encode_stream(STDIN, 1, b"")),
    "another role": lambda s: begin(1, True, role=2) + request(2, s),
    "another role, not kept": lambda s: begin(1, False, role=2) + request(2, s),
    "the same id begun twice": lambda s: begin(1, True) + begin(1, True) + request(2, s),
    "aborted, not kept": lambda s: begin(1) + Record(ABORT_REQUEST, 1).encode() + request(2, s),
    "aborted before it ran": lambda s: (
        begin(1, True) + Record(ABORT_REQUEST, 1).encode() + request(2, s)),
    "FastCGI version 2": lambda s: b"\x02\x01\x00\x01\x00\x08\x00\x00" + b"\0" * 8,
    "STDIN before PARAMS ended": lambda s: begin(1) + Record(STDIN, 1, b"x").encode(),
}


def protocol(records: list[Record]) -> list[tuple]:
    """What a transcript's answer says at the protocol's level."""
    out: list[tuple] = []
    for r in records:
        if r.type in (STDOUT, STDERR):
            kind = (r.type, r.request_id, bool(r.content))
            if not out or out[-1] != kind:  # how output is cut into records is free
                out.append(kind)
        elif r.type == END_REQUEST:
            out.append((r.type, r.request_id, struct.unpack_from("!IB", r.content)[1]))
        elif r.type == GET_VALUES_RESULT:
            out.append((r.type, r.request_id, sorted(decode_pairs(r.content))))
        else:
            out.append((r.type, r.request_id, r.content))
    return [x for x in out if not (x[0] == STDERR and not x[2])]


@pytest.fixture(scope="module")
def php(tmp_path_factory):
    z = start_zygote(PHP_SAPI_BINARY, tmp_path_factory.mktemp("php"))
    z.fork()
    yield z
    z.close()


def through_php(z, data: bytes) -> list[Record]:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(z.sock_path)
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)  # the transcript is all the web server says
        return read_all(s)


def through_python(data: bytes) -> list[Record]:
    served = Served(hello)
    served.client.sendall(data)
    served.client.shutdown(socket.SHUT_WR)
    return served.finish()


@pytest.mark.parametrize("name", TRANSCRIPTS)
def test_both_responders_answer_a_transcript_alike(php, name):
    python = protocol(through_python(TRANSCRIPTS[name]("/srv/x.py")))
    c = protocol(through_php(php, TRANSCRIPTS[name](str(php.root / "hello.php"))))
    assert c == python
