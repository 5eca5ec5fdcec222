"""FastCGI codec (records, name-value pairs) and a blocking client.

Hand-written because no maintained library covers both sides; the client is what
`tenantfpm request` and the tests speak to a tenant's socket. The protocol's numbers and
our responders' bounds are the C responder's too (sapi/wire.h: FCGI_*).
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

VERSION = 1
BEGIN_REQUEST, ABORT_REQUEST, END_REQUEST, PARAMS, STDIN, STDOUT, STDERR, DATA = range(1, 9)
GET_VALUES, GET_VALUES_RESULT, UNKNOWN_TYPE = 9, 10, 11
RESPONDER = 1
KEEP_CONN = 1
REQUEST_COMPLETE, CANT_MPX_CONN, OVERLOADED, UNKNOWN_ROLE = range(4)
HEADER = struct.Struct("!BBHHBx")
MAX_CONTENT = 65535
PARAMS_MAX_BYTES = 1 << 20  # name-value pairs of one request, together
PARAMS_MAX_PAIRS = 4096  # how many (the C responder's bound)


class ProtocolError(Exception):
    pass


class Record(NamedTuple):
    """One record. A named tuple rather than a dataclass: the python worker parses four
    per request, and a tuple is cheaper to build and unpacks in one step."""

    type: int
    request_id: int
    content: bytes = b""

    def encode(self) -> bytes:
        if len(self.content) > MAX_CONTENT:
            raise ValueError("record content over 65535 bytes; use encode_stream")
        pad = -len(self.content) % 8
        return (HEADER.pack(VERSION, self.type, self.request_id, len(self.content), pad)
                + self.content + b"\0" * pad)


def encode_stream(rtype: int, request_id: int, data: bytes | bytearray,
                  end: bool = True) -> bytes:
    """A stream (PARAMS/STDIN/STDOUT...) as records, closed by an empty record if `end`
    (a responder flushing output part way leaves the stream open)."""
    out = [Record(rtype, request_id, bytes(data[i:i + MAX_CONTENT])).encode()
           for i in range(0, len(data), MAX_CONTENT)]
    if end:
        out.append(Record(rtype, request_id, b"").encode())
    return b"".join(out)


def _encode_length(n: int) -> bytes:
    return bytes([n]) if n < 128 else struct.pack("!I", n | 0x80000000)


def encode_pairs(pairs: Iterable[tuple[str | bytes, str | bytes]]) -> bytes:
    out = []
    for k, v in pairs:
        kb = k.encode() if isinstance(k, str) else k
        vb = v.encode() if isinstance(v, str) else v
        out.append(_encode_length(len(kb)) + _encode_length(len(vb)) + kb + vb)
    return b"".join(out)


def decode_pairs(data: bytes | bytearray) -> list[tuple[bytes, bytes]]:
    """Name-value pairs; ProtocolError if a length runs past the data."""
    return _pairs(data, bytes(data))


def decode_params(data: bytes | bytearray) -> dict[str, str]:
    """Name-value pairs as latin-1 strings (PEP 3333's environ), decoded in one go."""
    return dict(_pairs(data, data.decode("latin-1")))


def _pairs(data: bytes | bytearray, source: Any) -> list[tuple[Any, Any]]:
    """Lengths read from `data`, names and values sliced from `source` (the same bytes,
    or their latin-1 text: same offsets). A flat loop: the python worker decodes some
    twenty pairs per request (a generator with a helper closure cost it a fifth of
    its time)."""
    out = []
    i, n = 0, len(data)
    while i < n:
        kl = data[i]
        if kl & 0x80:
            if i + 4 > n:
                raise ProtocolError("truncated name-value length")
            kl = int.from_bytes(data[i:i + 4], "big") & 0x7FFFFFFF
            i += 4
        else:
            i += 1
        if i >= n:
            raise ProtocolError("truncated name-value pair")
        vl = data[i]
        if vl & 0x80:
            if i + 4 > n:
                raise ProtocolError("truncated name-value length")
            vl = int.from_bytes(data[i:i + 4], "big") & 0x7FFFFFFF
            i += 4
        else:
            i += 1
        end = i + kl + vl
        if end > n:
            raise ProtocolError("name-value pair longer than its record")
        out.append((source[i:i + kl], source[i + kl:end]))
        i = end
    return out


class RecordReader:
    """Incremental record parser: feed bytes, take complete records."""

    def __init__(self) -> None:
        self.buf = bytearray()  # the start of a record not complete yet

    def feed(self, data: bytes | bytearray | memoryview) -> list[Record]:
        self.buf += data
        out = []
        pos, n = 0, len(self.buf)
        while n - pos >= HEADER.size:
            version, rtype, rid, clen, plen = HEADER.unpack_from(self.buf, pos)
            if version != VERSION:
                raise ProtocolError(f"FastCGI version {version}, not {VERSION}")
            total = HEADER.size + clen + plen
            if n - pos < total:
                break
            start = pos + HEADER.size
            out.append(Record(rtype, rid, bytes(self.buf[start:start + clen])))
            pos += total
        del self.buf[:pos]  # once per feed, not once per record
        return out


@dataclass
class Response:
    stdout: bytes = b""
    stderr: bytes = b""
    app_status: int | None = None
    protocol_status: int | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    @property
    def complete(self) -> bool:
        return self.app_status is not None

    @property
    def status(self) -> int:
        """HTTP status from the CGI Status header (200 when absent, as nginx does)."""
        for k, v in self.headers:
            if k.lower() == "status":
                try:
                    return int(v.split()[0])
                except (ValueError, IndexError):
                    return 502
        return 200

    def split(self) -> None:
        head, sep, body = self.stdout.partition(b"\r\n\r\n")
        if not sep:
            head, sep, body = self.stdout.partition(b"\n\n")
        if not sep:
            self.body = self.stdout
            return
        self.body = body
        for line in head.decode("latin-1").splitlines():
            k, _, v = line.partition(":")
            self.headers.append((k.strip(), v.strip()))


def connect(address: str, timeout: float | None = 30.0) -> socket.socket:
    if address.startswith("/"):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        target: object = address
    else:
        host, _, port = address.rpartition(":")
        host = host.strip("[]")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        s = socket.socket(family, socket.SOCK_STREAM)
        target = (host, int(port))
    s.settimeout(timeout)
    try:
        s.connect(target)  # type: ignore[arg-type]
    except OSError:
        s.close()
        raise
    return s


def encode_request(params: dict[str, str], body: bytes = b"", request_id: int = 1,
                   keep: bool = False) -> bytes:
    """One whole responder request as a web server sends it; `keep`: FCGI_KEEP_CONN
    (the connection stays open for the next request)."""
    flags = KEEP_CONN if keep else 0
    return (Record(BEGIN_REQUEST, request_id, struct.pack("!HB5x", RESPONDER, flags)).encode()
            + encode_stream(PARAMS, request_id, encode_pairs(params.items()))
            + encode_stream(STDIN, request_id, body))


def request(address: str, params: dict[str, str], body: bytes = b"",
            timeout: float | None = 30.0, request_id: int = 1) -> Response:
    """One responder request on a fresh connection; the answer may be incomplete."""
    msg = encode_request(params, body, request_id)
    resp = Response()
    out, err = bytearray(), bytearray()
    with connect(address, timeout) as s:
        s.sendall(msg)
        reader = RecordReader()
        while resp.app_status is None:
            try:
                data = s.recv(65536)
            except ConnectionResetError:  # the worker died mid-request: incomplete
                break
            if not data:
                break
            for rec in reader.feed(data):
                if rec.request_id != request_id:
                    continue
                if rec.type == STDOUT:
                    out += rec.content
                elif rec.type == STDERR:
                    err += rec.content
                elif rec.type == END_REQUEST and len(rec.content) >= 5:
                    resp.app_status, resp.protocol_status = struct.unpack_from("!IB", rec.content)
    resp.stdout, resp.stderr = bytes(out), bytes(err)
    resp.split()
    return resp


def cgi_params(root: str, uri: str, method: str = "GET", body: bytes = b"",
               headers: Iterable[tuple[str, str]] = (), server_port: int = 80,
               index: str = "index.php") -> dict[str, str]:
    """The params nginx's fastcgi_params + SCRIPT_FILENAME would send for this URI."""
    path, _, query = uri.partition("?")
    if not path.startswith("/"):
        path = "/" + path
    script = path + index if path.endswith("/") else path
    params = {
        "GATEWAY_INTERFACE": "CGI/1.1", "SERVER_SOFTWARE": "tenantfpm",
        "SERVER_PROTOCOL": "HTTP/1.1", "SERVER_NAME": "localhost",
        "SERVER_ADDR": "127.0.0.1", "SERVER_PORT": str(server_port),
        "REMOTE_ADDR": "127.0.0.1", "REMOTE_PORT": "0",
        "REQUEST_METHOD": method, "REQUEST_URI": uri, "DOCUMENT_URI": script,
        "SCRIPT_NAME": script, "SCRIPT_FILENAME": root.rstrip("/") + script,
        "DOCUMENT_ROOT": root, "QUERY_STRING": query, "REDIRECT_STATUS": "200",
        "CONTENT_LENGTH": str(len(body)) if body else "",
        "CONTENT_TYPE": "",
    }
    for k, v in headers:
        key = k.strip().upper().replace("-", "_")
        if key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            params[key] = v.strip()
        else:
            params["HTTP_" + key] = v.strip()
    if body and not params["CONTENT_TYPE"]:
        params["CONTENT_TYPE"] = "application/x-www-form-urlencoded"
    return params
