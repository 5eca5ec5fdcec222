"""The python worker's FastCGI responder and WSGI layer, over real socket pairs.

The responder runs in a thread on one end of a socketpair; the test speaks
FastCGI on the other end with the project's own codec, so both directions of
the shared codec are exercised. The fuzz tests feed hypothesis-made byte
streams and check the one promise the worker makes: it answers, or it drops
the connection with `Closed`, and nothing else ever escapes.
"""

from __future__ import annotations

import contextlib
import faulthandler
import inspect
import os
import socket
import struct
import threading
import time
from collections.abc import Callable
from wsgiref.validate import validator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tenantfpm.master.trace import traceback_frames
from tenantfpm.pyworker import accesslog
from tenantfpm.pyworker.responder import Closed, Connection, Limits
from tenantfpm.pyworker.wsgi import Input, Settings, environ, run_app
from tenantfpm.wire import fastcgi
from tenantfpm.wire.fastcgi import (
    ABORT_REQUEST,
    BEGIN_REQUEST,
    CANT_MPX_CONN,
    END_REQUEST,
    GET_VALUES,
    GET_VALUES_RESULT,
    PARAMS,
    STDIN,
    STDOUT,
    UNKNOWN_ROLE,
    UNKNOWN_TYPE,
    Record,
    RecordReader,
    encode_pairs,
    encode_request,
    encode_stream,
)
from tenantfpm.wire.scoreboard import RUNNING, Board, Slot

FAST = Limits(max_params=4096, header_timeout=0.5, body_timeout=0.5, send_timeout=0.5)


def begin(rid: int = 1, keep: bool = False, role: int = 1) -> bytes:
    return Record(BEGIN_REQUEST, rid, struct.pack("!HB5x", role, 1 if keep else 0)).encode()


def hello(environ, start_response):
    # PEP 3333 (and wsgiref's validator) want a size: what CONTENT_LENGTH says
    body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    start_response("200 OK", [("Content-Type", "text/plain"), ("X-Len", str(len(body)))])
    return [b"hello ", environ["PATH_INFO"].encode("latin-1"), b" ", body[:16]]


def read_all(sock: socket.socket) -> list[Record]:
    """Every record until the other side closes (or goes quiet past the socket's timeout)."""
    reader, out = RecordReader(), []
    while True:
        try:
            data = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            break
        if not data:
            break
        out += reader.feed(data)
    return out


class Served:
    """A responder thread serving `app` on one end of a socketpair, as the worker would."""

    def __init__(self, app: Callable, limits: Limits = FAST, cfg: Settings | None = None):
        self.client, server = socket.socketpair()
        self.client.settimeout(5)
        self.error: BaseException | None = None
        self.closed_reason: str | None = None
        self.statuses: list[int] = []
        self.thread = threading.Thread(target=self._run,
                                       args=(server, app, limits, cfg or Settings()))
        self.thread.start()

    def _run(self, server: socket.socket, app: Callable, limits: Limits, cfg: Settings):
        import io

        conn = Connection(server, limits)
        try:
            while (req := conn.next_request()) is not None:
                self.statuses.append(run_app(app, conn, req, cfg, io.StringIO()).code)
                if not req.keep_conn:
                    break
        except Closed as e:
            self.closed_reason = str(e)
        except BaseException as e:  # the test fails on anything but Closed
            self.error = e
        finally:
            server.close()

    def records(self) -> list[Record]:
        return read_all(self.client)

    def finish(self) -> list[Record]:
        recs = self.records()
        self.client.close()
        self.thread.join(5)
        assert not self.thread.is_alive()
        if self.error is not None:
            raise self.error
        return recs


def stdout_of(recs: list[Record], rid: int = 1) -> bytes:
    return b"".join(r.content for r in recs if r.type == STDOUT and r.request_id == rid)


def ends(recs: list[Record]) -> list[tuple[int, int, int]]:
    return [(r.request_id, *struct.unpack_from("!IB", r.content)) for r in recs
            if r.type == END_REQUEST]


def test_one_request_with_a_body_of_several_long_records():
    body = bytes(range(256)) * 1000  # 256000 bytes: four STDIN records
    s = Served(hello)
    s.client.sendall(encode_request({"REQUEST_METHOD": "POST", "REQUEST_URI": "/x%20y",
                                     "CONTENT_LENGTH": str(len(body))}, body))
    recs = s.finish()
    out = stdout_of(recs)
    assert out.startswith(b"Status: 200 OK\r\n") and b"X-Len: 256000\r\n" in out
    assert out.endswith(b"hello /x y " + body[:16])
    assert ends(recs) == [(1, 0, 0)]


def test_keep_conn_serves_requests_one_after_another_and_pipelined():
    s = Served(hello)
    s.client.sendall(encode_request({"REQUEST_URI": "/a"}, request_id=1, keep=True)
                     + encode_request({"REQUEST_URI": "/b"}, request_id=2, keep=True))
    s.client.sendall(encode_request({"REQUEST_URI": "/c"}, request_id=3, keep=False))
    recs = s.finish()
    assert [e[0] for e in ends(recs)] == [1, 2, 3]
    assert stdout_of(recs, 2).endswith(b"hello /b ")


def test_get_values_and_unknown_management_records_are_answered():
    s = Served(hello)
    s.client.sendall(Record(GET_VALUES, 0, encode_pairs([("FCGI_MPXS_CONNS", ""),
                                                         ("FCGI_MAX_REQS", ""),
                                                         ("NOT_A_VARIABLE", "")])).encode()
                     + Record(99, 0, b"").encode() + encode_request({"REQUEST_URI": "/"}))
    recs = s.finish()
    got = dict(fastcgi.decode_pairs(next(r for r in recs if r.type == GET_VALUES_RESULT).content))
    assert got == {b"FCGI_MPXS_CONNS": b"0", b"FCGI_MAX_REQS": b"1"}
    assert next(r for r in recs if r.type == UNKNOWN_TYPE).content[0] == 99
    assert ends(recs) == [(1, 0, 0)]


def test_a_second_request_on_a_busy_connection_is_refused_with_cant_mpx_conn():
    s = Served(hello)
    s.client.sendall(begin(1) + begin(2) + encode_stream(PARAMS, 1, b"")
                     + encode_stream(STDIN, 1, b""))
    recs = s.finish()
    assert (2, 0, CANT_MPX_CONN) in ends(recs) and (1, 0, 0) in ends(recs)


def test_other_roles_are_refused_with_unknown_role():
    s = Served(hello)
    s.client.sendall(begin(1, keep=True, role=2)
                     + encode_request({"REQUEST_URI": "/"}, request_id=2))
    recs = s.finish()
    assert ends(recs) == [(1, 0, UNKNOWN_ROLE), (2, 0, 0)]


def test_abort_while_the_body_streams_in_ends_the_request_without_an_answer():
    seen = []

    def app(environ, start_response):
        try:
            environ["wsgi.input"].read()
        finally:
            seen.append("read")
        start_response("200 OK", [])
        return [b"never"]

    s = Served(app)
    s.client.sendall(begin(1) + encode_stream(PARAMS, 1, b"")
                     + Record(STDIN, 1, b"part").encode() + Record(ABORT_REQUEST, 1).encode())
    recs = s.finish()
    assert seen == ["read"] and b"never" not in stdout_of(recs)


@pytest.mark.parametrize("garbage, reason", [
    (b"\x02\x01\x00\x01\x00\x08\x00\x00" + b"\0" * 8, "FastCGI version 2"),
    (begin(1)[:5], "timed out"),  # a truncated record, then silence
    (begin(1) + Record(PARAMS, 1, b"\x7f").encode() + Record(PARAMS, 1).encode(),
     "truncated name-value"),
    (begin(1) + Record(PARAMS, 1, b"\x01\x02a").encode() + Record(PARAMS, 1).encode(),
     "longer than its record"),
    (begin(1) + Record(BEGIN_REQUEST, 1, b"\0\1").encode(), "not 8 bytes"),
    (begin(1) + Record(STDIN, 1, b"x").encode(), "STDIN before the end of PARAMS"),
])
def test_malformed_input_closes_the_connection_with_the_reason(garbage, reason):
    s = Served(hello)
    s.client.sendall(garbage)
    s.finish()
    assert reason in (s.closed_reason or "")


def test_oversized_params_and_a_slowloris_sender_are_cut_off():
    s = Served(hello)
    big = encode_pairs([("HTTP_X", "v" * 5000)])
    s.client.sendall(begin(1) + b"".join(Record(PARAMS, 1, big[i:i + 1000]).encode()
                                         for i in range(0, len(big), 1000)))
    s.finish()
    assert "params over 4096 bytes" in s.closed_reason

    # one byte every 50 ms: each in time for a per-call timeout of 0.5 s, but the whole
    # request is not, and the worker holds to the total
    s = Served(hello)
    data = encode_request({"REQUEST_URI": "/"})
    started = time.monotonic()
    try:
        for b in data:
            s.client.send(bytes([b]))
            time.sleep(0.05)
    except OSError:
        pass  # the worker closed on us: that is the point
    s.finish()
    assert s.closed_reason.startswith("timed out waiting for")
    assert time.monotonic() - started < len(data) * 0.05


record_types = st.sampled_from([BEGIN_REQUEST, ABORT_REQUEST, END_REQUEST, PARAMS, STDIN,
                                STDOUT, GET_VALUES, 0, 12, 255])
records = st.builds(lambda t, rid, content, pad: (
    struct.pack("!BBHHBx", 1, t, rid, len(content), pad) + content + b"\0" * pad),
    record_types, st.sampled_from([0, 1, 2, 65535]), st.binary(max_size=300),
    st.integers(0, 8))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.binary(max_size=600), st.lists(records, max_size=8).map(b"".join),
                 st.tuples(st.lists(records, max_size=4).map(b"".join),
                           st.binary(max_size=40)).map(lambda t: encode_request(
                               {"REQUEST_URI": "/"}, keep=True) + t[0] + t[1])))
def test_fuzzed_streams_get_answers_or_a_closed_connection_and_nothing_else(data):
    s = Served(hello, Limits(max_params=2048, header_timeout=0.05, body_timeout=0.05,
                             send_timeout=0.5))
    with contextlib.suppress(OSError):
        s.client.sendall(data)
    s.client.shutdown(socket.SHUT_WR)
    s.finish()  # re-raises anything the responder raised that is not Closed


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(min_size=1, max_size=300), st.text(max_size=300),
                       max_size=5))
def test_params_survive_the_round_trip_through_the_codec(params):
    seen = {}

    def app(environ, start_response):
        seen.update(environ)
        start_response("204 No Content", [])
        return []

    s = Served(app, Limits())
    s.client.sendall(encode_request(params))
    s.finish()
    for k, v in params.items():
        if k.startswith(("wsgi.", "tenantfpm.")):  # the server's own keys win
            assert seen[k] != v or k not in seen
        elif k not in ("PATH_INFO", "SCRIPT_NAME") and not (
                k in ("CONTENT_TYPE", "CONTENT_LENGTH") and not v):
            assert seen[k.encode().decode("latin-1")] == v.encode().decode("latin-1")


def test_wsgiref_validator_accepts_the_server_for_get_and_post():
    checked = validator(hello)
    s = Served(checked)
    s.client.sendall(encode_request({"REQUEST_METHOD": "POST", "REQUEST_URI": "/v?q=1",
                                     "QUERY_STRING": "q=1", "SERVER_NAME": "h",
                                     "SERVER_PORT": "80", "CONTENT_TYPE": "text/plain",
                                     "CONTENT_LENGTH": "5"}, b"abcde", keep=True)
                     + encode_request({"REQUEST_URI": "/", "CONTENT_LENGTH": ""}))
    recs = s.finish()
    assert s.statuses == [200, 200], stdout_of(recs)


def test_an_exception_is_a_500_with_or_without_the_traceback():
    def boom(environ, start_response):
        raise ValueError("the app broke")

    for display, shown in ((True, True), (False, False)):
        s = Served(boom, cfg=Settings(display_errors=display))
        s.client.sendall(encode_request({"REQUEST_URI": "/"}))
        out = stdout_of(s.finish())
        assert out.startswith(b"Status: 500 Internal Server Error\r\n")
        assert (b"ValueError: the app broke" in out) is shown


def test_a_body_over_the_limit_is_413_before_the_app_runs_or_while_it_reads():
    calls = []

    def app(environ, start_response):
        calls.append(1)
        environ["wsgi.input"].read()
        start_response("200 OK", [])
        return [b"read it"]

    s = Served(app, cfg=Settings(body_limit=1000))
    s.client.sendall(encode_request({"CONTENT_LENGTH": "2000"}, b"x" * 2000))
    assert stdout_of(s.finish()).startswith(b"Status: 413")
    assert calls == []
    s = Served(app, cfg=Settings(body_limit=1000))  # no CONTENT_LENGTH: counted as it comes
    s.client.sendall(encode_request({}, b"x" * 2000))
    assert stdout_of(s.finish()).startswith(b"Status: 413") and calls == [1]


def test_finish_request_completes_the_response_while_the_app_goes_on():
    go_on, done = threading.Event(), threading.Event()

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"accepted"
        environ["tenantfpm.finish_request"]()
        go_on.wait(5)
        yield b"too late"
        done.set()

    s = Served(app)
    s.client.sendall(encode_request({"REQUEST_URI": "/"}))
    reader, recs = RecordReader(), []
    while not any(r.type == END_REQUEST for r in recs):
        recs += reader.feed(s.client.recv(65536))
    assert not done.is_set()  # the client has its whole answer, the app still runs
    go_on.set()
    recs += s.finish()
    assert stdout_of(recs).endswith(b"\r\n\r\naccepted") and done.is_set()


@pytest.mark.parametrize("keep", [False, True], ids=["not-kept", "kept"])
def test_finish_request_ends_a_connection_not_kept_at_once(keep):
    # nginx without fastcgi_keep_conn answers its client at the end of the connection,
    # not at END_REQUEST: a connection it does not keep must end with the response
    go_on = threading.Event()

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"accepted"
        environ["tenantfpm.finish_request"]()
        go_on.wait(5)

    s = Served(app)
    s.client.sendall(encode_request({"REQUEST_URI": "/"}, keep=keep))
    s.client.settimeout(1)
    reader, recs, ended = RecordReader(), [], False
    try:
        while data := s.client.recv(65536):
            recs += reader.feed(data)
        ended = True
    except TimeoutError:
        pass
    assert ends(recs) == [(1, 0, 0)] and ended is not keep  # while the app still runs
    go_on.set()
    s.finish()


@pytest.mark.parametrize("size", [0, 5, 65535, 65536 + 7])
def test_the_end_of_a_response_reads_back_as_records(size):
    # end() sends the last output through encode_stream() and packs the closing empty
    # STDOUT and END_REQUEST itself; together they must be the records a web server
    # expects, in that order
    a, b = socket.socketpair()
    a.settimeout(5)
    tail = bytes(i % 251 for i in range(size))
    Connection(b).end(3, tail, app_status=7, last=True)
    reader, recs = RecordReader(), []
    while data := a.recv(65536):
        recs += reader.feed(data)
    a.close()
    b.close()
    stdout = [r for r in recs if r.type == STDOUT]
    assert stdout_of(recs, 3) == tail and stdout[-1].content == b""
    assert all(r.request_id == 3 for r in recs) and recs[-1].type == END_REQUEST
    assert ends(recs) == [(3, 7, 0)] and len(stdout) == (size + 65534) // 65535 + 1


def test_input_reads_lines_and_sizes_across_record_boundaries():
    a, b = socket.socketpair()
    conn = Connection(b, Limits())
    a.sendall(begin(1) + encode_stream(PARAMS, 1, b"")
              + Record(STDIN, 1, b"one\ntw").encode() + Record(STDIN, 1, b"o\nthree").encode()
              + Record(STDIN, 1).encode())
    assert conn.next_request() is not None
    body = Input(conn, 0)
    assert body.readline() == b"one\n"
    assert body.readline(2) == b"tw"
    assert body.read(4) == b"o\nth"
    assert list(body) == [b"ree"] and body.read() == b""
    a.close()
    b.close()


def test_environ_paths_for_nginx_stock_params_and_for_a_mounted_app():
    inp = Input(None, 0)  # type: ignore[arg-type]
    stock = environ({"SCRIPT_NAME": "/blog/post", "REQUEST_URI": "/blog/post?x=1"}, inp, None)
    assert (stock["SCRIPT_NAME"], stock["PATH_INFO"]) == ("", "/blog/post")
    mounted = environ({"SCRIPT_NAME": "/app", "REQUEST_URI": "/app/a%2Fb"}, inp, None)
    assert (mounted["SCRIPT_NAME"], mounted["PATH_INFO"]) == ("/app", "/a/b")
    given_ = environ({"SCRIPT_NAME": "", "PATH_INFO": "/p", "HTTPS": "on"}, inp, None)
    assert given_["PATH_INFO"] == "/p" and given_["wsgi.url_scheme"] == "https"


def test_scoreboard_round_trip_and_torn_reads():
    fd, board = Board.create()
    try:
        worker = Board(fd)
        slot = Slot(state=RUNNING, requests=7, accepted=8, request_start=12.5, method="POST",
                    uri="/é?x=1", script="/srv/app.py", content_length=42, fatal="")
        worker.publish(slot, texts=True)
        assert board.read() == slot
        worker.map[0:8] = struct.pack("=Q", 99)  # odd: a write in progress
        assert board.read() is None
    finally:
        board.close()


@pytest.mark.parametrize("field,value", [("state", 99), ("accepted", 2**64 - 1),
                                         ("last_duration", float("nan")),
                                         ("request_start", float("inf")),
                                         ("last_status", 9999)])
def test_scoreboard_garbage_reads_as_unknown(field, value):
    """A tenant writes what it likes into its page: the master reads None, not garbage."""
    fd, board = Board.create()
    try:
        worker = Board(fd)
        worker.publish(Slot(**{field: value}), texts=True)
        assert board.read() is None
        worker.publish(Slot(state=RUNNING), texts=True)
        assert board.read() == Slot(state=RUNNING)
    finally:
        board.close()


def test_scoreboard_cannot_be_resized_by_the_worker():
    fd, board = Board.create()
    try:
        with pytest.raises(PermissionError):
            os.ftruncate(fd, 0)
        with pytest.raises(PermissionError):
            os.ftruncate(fd, 1 << 20)
        assert board.read() == Slot(state=0, last_duration=0.0, last_cpu=0.0,
                                    last_cpu_percent=0.0, content_length=0)
    finally:
        board.close()
        os.close(fd)


def test_access_log_lines_in_fpm_format():
    parts = accesslog.compile_format('%R - %u %t "%m %r%Q%q" %s %{mili}d %{kilo}M %n %p')
    e = accesslog.Entry({"REMOTE_ADDR": "10.0.0.1", "REQUEST_METHOD": "GET",
                         "REQUEST_URI": "/a?b=1", "QUERY_STRING": "b=1"}, 404, 0.0, 0.25,
                        0.1, 4 << 20, "shop", 77, 1)
    line = accesslog.render(parts, e)
    assert line.startswith('10.0.0.1 -  ')
    assert line.endswith(' "GET /a?b=1" 404 250.000 4096 shop 77')
    with pytest.raises(ValueError, match="unknown access_format code '%Z'"):
        accesslog.compile_format("%Z %s")


def test_slow_log_frames_from_a_real_faulthandler_dump(tmp_path):
    """The master's parser against what faulthandler writes with a thread besides the
    request's: only the request thread's application frames, innermost first."""
    dump = tmp_path / "dump"
    parked = threading.Event()
    other = threading.Thread(target=parked.wait, args=(5,))
    other.start()

    def inner():
        with open(dump, "w") as f:
            faulthandler.dump_traceback(f, all_threads=True)
        return inspect.currentframe().f_lineno - 1  # the dump_traceback() line

    def app(environ, start_response):
        line = inner()
        start_response("200 OK", [])
        return [str(line).encode()]

    s = Served(app)
    s.client.sendall(encode_request({"REQUEST_URI": "/"}))
    line = int(stdout_of(s.finish()).split(b"\r\n\r\n")[1])
    parked.set()
    other.join()
    frames = traceback_frames(dump.read_text(), 20)
    assert frames[0] == f"inner() {__file__}:{line}"
    assert frames[1].startswith(f"app() {__file__}:") and len(frames) == 2
    assert traceback_frames(dump.read_text(), 1) == frames[:1]
