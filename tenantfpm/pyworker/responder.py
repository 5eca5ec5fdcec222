"""The worker's side of FastCGI: one connection, one request at a time, strict about input.

Records come from tenantfpm.fastcgi (the codec `tenantfpm request` uses too).
Anything malformed (another protocol version, a record that does not fit,
oversized or broken params, a sender that trickles) ends the connection with
`Closed`; the worker then takes the next one. Management records are answered
in place; a second request on a connection that is busy gets CANT_MPX_CONN, as
the specification says.

The socket stays blocking; every read and write passes MSG_DONTWAIT and waits
in poll() for what is left of a deadline, so a total time limit (not a
per-call one) holds against a sender that sends one byte at a time.
"""

from __future__ import annotations

import collections
import contextlib
import select
import socket
import struct
import time
from dataclasses import dataclass

from tenantfpm.wire.fastcgi import (
    ABORT_REQUEST,
    BEGIN_REQUEST,
    CANT_MPX_CONN,
    END_REQUEST,
    GET_VALUES,
    GET_VALUES_RESULT,
    KEEP_CONN,
    PARAMS,
    PARAMS_MAX_BYTES,
    REQUEST_COMPLETE,
    RESPONDER,
    STDIN,
    STDOUT,
    UNKNOWN_ROLE,
    UNKNOWN_TYPE,
    VERSION,
    ProtocolError,
    Record,
    RecordReader,
    decode_pairs,
    decode_params,
    encode_pairs,
    encode_stream,
)

GET_VALUES_ANSWERS = {b"FCGI_MAX_CONNS": b"1", b"FCGI_MAX_REQS": b"1", b"FCGI_MPXS_CONNS": b"0"}
_BEGIN = struct.Struct("!HB5x")
_END = struct.Struct("!IB3x")
# a response's close: the empty STDOUT record, then END_REQUEST with its body, in one pack
_CLOSE = struct.Struct("!BBHHBx" "BBHHBx" "IB3x")
_DONTWAIT = socket.MSG_DONTWAIT


@dataclass(frozen=True)
class Limits:
    max_params: int = PARAMS_MAX_BYTES  # bytes of name-value pairs in one request
    header_timeout: float = 30.0  # from waiting for a request to its last PARAMS record
    body_timeout: float = 60.0  # longest silence while the body streams in
    send_timeout: float = 60.0  # longest wait for the web server to take our output


class Closed(Exception):
    """The connection is over: the peer left, or broke the protocol (the message says how)."""


class Aborted(Exception):
    """The web server sent ABORT_REQUEST for the request being read."""


@dataclass
class Request:
    id: int
    keep_conn: bool
    params: dict[str, str]  # decoded as latin-1, as PEP 3333 wants environ strings


def receive_buffer() -> memoryview:
    """What a connection reads into. recv(n) would allocate n bytes per call (a large n goes
    through mmap/munmap in glibc); the worker makes one for its life and lends it to each
    connection, since a buffer per connection clears 64 kB per request when the web
    server opens a connection per request (nginx's default)."""
    return memoryview(bytearray(65536))


class Connection:
    def __init__(self, sock: socket.socket, limits: Limits = Limits(),
                 rbuf: memoryview | None = None) -> None:
        """`rbuf`: a receive_buffer() no other connection reads into at the same time."""
        self.sock = sock
        self.limits = limits
        self.reader = RecordReader()  # the codec `tenantfpm request` reads with too
        self.records: collections.deque[Record] = collections.deque()  # parsed, not taken
        self.rbuf = rbuf if rbuf is not None else receive_buffer()
        self._poll: select.poll | None = None  # made on the first wait: most requests
        # arrive whole in the first read
        self.current: int | None = None  # the request being served
        self.stdin_done = True

    def _wait(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for input; False if none came."""
        if self._poll is None:
            self._poll = select.poll()
            self._poll.register(self.sock.fileno(), select.POLLIN)
        return bool(self._poll.poll(timeout * 1000))

    # --- bytes in ---------------------------------------------------------

    def pending(self) -> bool:
        """Input already received and not yet taken (a pipelined next request)."""
        return bool(self.records) or bool(self.reader.buf)

    def _fill(self, deadline: float, what: str) -> None:
        while True:
            try:
                n = self.sock.recv_into(self.rbuf, 0, _DONTWAIT)
            except BlockingIOError:
                left = deadline - time.monotonic()
                if left <= 0 or not self._wait(left):
                    raise Closed(f"timed out waiting for {what}") from None
                continue
            except (ConnectionResetError, BrokenPipeError) as e:
                raise Closed(f"connection reset while waiting for {what}") from e
            if not n:
                raise Closed("" if what == "a request" and not self.pending()
                             else f"connection closed while waiting for {what}")
            try:
                self.records.extend(self.reader.feed(self.rbuf[:n]))
            except ProtocolError as e:
                raise Closed(f"protocol error: {e}") from e
            return

    def _record(self, deadline: float, what: str) -> Record:
        while not self.records:
            self._fill(deadline, what)
        return self.records.popleft()

    def _management(self, rtype: int, content: bytes) -> None:
        if rtype == GET_VALUES:
            try:
                names = [k for k, _ in decode_pairs(content)]
            except ProtocolError as e:
                raise Closed(f"protocol error: GET_VALUES: {e}") from e
            answer = encode_pairs((k, GET_VALUES_ANSWERS[k]) for k in names
                                  if k in GET_VALUES_ANSWERS)
            self.send(Record(GET_VALUES_RESULT, 0, answer).encode())
        else:
            self._unknown(rtype)

    def _unknown(self, rtype: int) -> None:
        self.send(Record(UNKNOWN_TYPE, 0, bytes([rtype]) + b"\0" * 7).encode())

    def _refuse(self, rid: int, protocol_status: int) -> None:
        self.send(Record(END_REQUEST, rid, _END.pack(0, protocol_status)).encode())

    def next_request(self) -> Request | None:
        """The next request's params; None when the web server closed the connection."""
        deadline = time.monotonic() + self.limits.header_timeout
        rid: int | None = None
        keep = False
        params = bytearray()
        while True:
            try:
                rtype, r, content = self._record(deadline, "a request" if rid is None
                                                 else "the request's params")
            except Closed as e:
                if str(e) == "":
                    return None
                raise
            if r == 0:
                self._management(rtype, content)
                continue
            if rtype == BEGIN_REQUEST:
                if len(content) != 8:
                    raise Closed("protocol error: BEGIN_REQUEST body is not 8 bytes")
                role, flags = _BEGIN.unpack(content)
                if r == rid:
                    raise Closed(f"protocol error: request {r} begun twice")
                if rid is not None:
                    self._refuse(r, CANT_MPX_CONN)
                    continue
                if role != RESPONDER:
                    self._refuse(r, UNKNOWN_ROLE)
                    if not flags & KEEP_CONN:
                        raise Closed(f"role {role} is not served")
                    continue
                rid, keep = r, bool(flags & KEEP_CONN)
            elif r != rid:
                continue  # a record of a request that is not (or no longer) active: ignored
            elif rtype == PARAMS:
                if not content:
                    break
                params += content
                if len(params) > self.limits.max_params:
                    raise Closed(f"params over {self.limits.max_params} bytes")
            elif rtype == ABORT_REQUEST:
                self._refuse(r, REQUEST_COMPLETE)
                rid, params = None, bytearray()
                if not keep:
                    raise Closed("aborted by the web server")
            elif rtype == STDIN:
                raise Closed("protocol error: STDIN before the end of PARAMS")
            else:
                self._unknown(rtype)
        assert rid is not None
        try:
            pairs = decode_params(params)
        except ProtocolError as e:
            raise Closed(f"protocol error: {e}") from e
        self.current, self.stdin_done = rid, False
        return Request(rid, keep, pairs)

    def read_stdin(self) -> bytes:
        """The next piece of the body; b"" once it is complete."""
        if self.stdin_done or self.current is None:
            return b""
        while True:
            deadline = time.monotonic() + self.limits.body_timeout
            rtype, r, content = self._record(deadline, "the request body")
            if r == 0:
                self._management(rtype, content)
            elif r != self.current:
                if rtype == BEGIN_REQUEST:
                    self._refuse(r, CANT_MPX_CONN)
            elif rtype == STDIN:
                if not content:
                    self.stdin_done = True
                return content
            elif rtype == ABORT_REQUEST:
                self.stdin_done = True
                raise Aborted()
            elif rtype not in (PARAMS, BEGIN_REQUEST):
                self._unknown(rtype)

    # --- bytes out --------------------------------------------------------

    def send(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        deadline = 0.0
        while view:
            try:
                n = self.sock.send(view, _DONTWAIT)
            except BlockingIOError:
                now = time.monotonic()
                deadline = deadline or now + self.limits.send_timeout
                if now >= deadline or not select.select([], [self.sock], [], deadline - now)[1]:
                    raise Closed("timed out sending the response") from None
                continue
            except (BrokenPipeError, ConnectionResetError) as e:
                raise Closed("the web server closed the connection") from e
            view = view[n:]

    def end(self, rid: int, tail: bytes | bytearray = b"", app_status: int = 0,
            last: bool = False) -> None:
        """The last output, the closing empty STDOUT and END_REQUEST, in one send.

        `last`: the web server did not ask to keep the connection, so our side of it ends
        here too. nginx without fastcgi_keep_conn (its default) answers its client at that
        end, not at END_REQUEST: otherwise a response after finish_request() would wait
        for the application to return (FPM's fcgi_close() shuts down there too).
        """
        close = _CLOSE.pack(VERSION, STDOUT, rid, 0, 0, VERSION, END_REQUEST, rid, _END.size, 0,
                            app_status, REQUEST_COMPLETE)
        self.send(encode_stream(STDOUT, rid, tail, end=False) + close)
        if last:
            with contextlib.suppress(OSError):  # the peer is gone already: nobody to tell
                self.sock.shutdown(socket.SHUT_WR)
        if self.current == rid:
            self.current = None

    def drain_stdin(self) -> None:
        """Read (and drop) what is left of the body, so the next request parses cleanly."""
        while not self.stdin_done and self.current is not None:
            self.read_stdin()
