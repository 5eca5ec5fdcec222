"""One FastCGI request through a WSGI application (PEP 3333).

The environ is the FastCGI params (CGI variables, as latin-1 strings) plus the
wsgi.* keys; the body streams from STDIN records into `wsgi.input` as the
application reads it; the status and headers go out as CGI headers ahead of
the first body bytes, all of it in STDOUT records. `finish_request` is
PHP's fastcgi_finish_request(): the client gets its complete response while
the application keeps running.
"""

from __future__ import annotations

import re
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import IO, Any
from urllib.parse import unquote_to_bytes

from tenantfpm.pyworker.responder import Aborted, Closed, Connection, Request
from tenantfpm.wire.fastcgi import STDOUT, encode_stream

FLUSH = 65536  # output bytes buffered before they go out (a hello world is one send)
STATUS = re.compile(r"^\d{3} .")
MESSAGES = {413: "413 Content Too Large", 500: "500 Internal Server Error"}


class BodyTooLarge(Exception):
    """The body passed post_max_size / upload_max_filesize while the app read it."""


class ExecutionTimeout(BaseException):
    """max_execution_time passed. A BaseException, so an application's `except Exception`
    does not swallow it: PHP's timeout is not catchable either."""


@dataclass(frozen=True)
class Settings:
    body_limit: int = 0  # bytes; 0: none
    display_errors: bool = False


class Input:
    """wsgi.input: reads pull STDIN records off the connection, nothing is read ahead."""

    def __init__(self, conn: Connection, limit: int) -> None:
        self.conn = conn
        self.limit = limit
        self.buf = bytearray()
        self.eof = False
        self.received = 0

    def _more(self) -> bool:
        if self.eof:
            return False
        chunk = self.conn.read_stdin()
        if not chunk:
            self.eof = True
            return False
        self.received += len(chunk)
        if self.limit and self.received > self.limit:
            raise BodyTooLarge(f"request body over {self.limit} bytes")
        self.buf += chunk
        return True

    def _take(self, n: int) -> bytes:
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            while self._more():
                pass
            return self._take(len(self.buf))
        while len(self.buf) < size and self._more():
            pass
        return self._take(size)

    def readline(self, size: int | None = -1) -> bytes:
        limit = -1 if size is None else size
        start = 0
        while True:
            i = self.buf.find(b"\n", start)
            if i >= 0 and (limit < 0 or i < limit):
                return self._take(i + 1)
            if 0 <= limit <= len(self.buf):
                return self._take(limit)
            start = len(self.buf)
            if not self._more():
                return self._take(len(self.buf))

    def readlines(self, hint: int = -1) -> list[bytes]:
        lines, total = [], 0
        while line := self.readline():
            lines.append(line)
            total += len(line)
            if 0 < hint <= total:
                break
        return lines

    def __iter__(self) -> Input:
        return self

    def __next__(self) -> bytes:
        line = self.readline()
        if not line:
            raise StopIteration
        return line


def _paths(env: dict[str, Any]) -> None:
    """SCRIPT_NAME/PATH_INFO for an app mounted at the root when nginx sends no PATH_INFO.

    nginx's stock fastcgi_params set SCRIPT_NAME to the whole path (it is meant
    for PHP files); a WSGI app then routes on PATH_INFO, which we derive from
    REQUEST_URI, keeping SCRIPT_NAME only when it is a proper prefix of the path.
    """
    if env.get("PATH_INFO"):
        return
    raw = env.get("REQUEST_URI", "").split("?", 1)[0]
    path = unquote_to_bytes(raw).decode("latin-1") if raw else "/"
    script = env.get("SCRIPT_NAME", "").rstrip("/")
    if script and path.startswith(script + "/") and path != script:
        env["SCRIPT_NAME"], env["PATH_INFO"] = script, path[len(script):]
    else:
        env["SCRIPT_NAME"], env["PATH_INFO"] = "", path


def environ(params: dict[str, str], body: Input, errors: IO[str]) -> dict[str, Any]:
    env: dict[str, Any] = dict(params)
    env.setdefault("REQUEST_METHOD", "GET")
    env.setdefault("SERVER_NAME", "localhost")
    env.setdefault("SERVER_PORT", "80")
    env.setdefault("SERVER_PROTOCOL", "HTTP/1.0")
    env.setdefault("QUERY_STRING", "")
    for key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
        if not env.get(key):
            env.pop(key, None)
    _paths(env)
    https = env.get("HTTPS", "").lower() in ("on", "1") or env.get("REQUEST_SCHEME") == "https"
    env.update({
        "wsgi.version": (1, 0), "wsgi.url_scheme": "https" if https else "http",
        "wsgi.input": body, "wsgi.errors": errors, "wsgi.multithread": False,
        "wsgi.multiprocess": True, "wsgi.run_once": False,
    })
    return env


class Response:
    """start_response(), write() and the buffered output of one request."""

    def __init__(self, conn: Connection, rid: int, keep_conn: bool = True) -> None:
        self.conn = conn
        self.rid = rid
        self.keep_conn = keep_conn  # else our side of the connection ends with the response
        self.status: str | None = None
        self.headers: list[tuple[str, str]] = []
        self.committed = False  # headers are in the output: they can no longer change
        self.finished = False  # END_REQUEST went out
        self.out = bytearray()

    @property
    def code(self) -> int:
        return int(self.status[:3]) if self.status else 0

    def start_response(self, status: str, headers: list[tuple[str, str]],
                       exc_info: Any = None) -> Callable[[bytes], None]:
        if exc_info:
            try:
                if self.committed:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif self.status is not None:
            raise AssertionError("start_response() called a second time without exc_info")
        if not isinstance(status, str) or not STATUS.match(status):
            raise AssertionError(f"invalid status {status!r}: want e.g. '200 OK'")
        for h in headers:
            if not (isinstance(h, tuple) and len(h) == 2 and isinstance(h[0], str)
                    and isinstance(h[1], str)):
                raise AssertionError(f"invalid header {h!r}: want a (str, str) tuple")
            if "\n" in h[0] or "\n" in h[1] or "\r" in h[1] or ":" in h[0]:
                raise AssertionError(f"invalid header {h!r}: no newlines, no ':' in the name")
        self.status, self.headers = status, list(headers)
        return self.write

    def _commit(self) -> None:
        if self.status is None:
            raise AssertionError("the application sent body bytes before start_response()")
        head = "".join(f"{k}: {v}\r\n" for k, v in self.headers)
        self.out[:0] = f"Status: {self.status}\r\n{head}\r\n".encode("latin-1")
        self.committed = True

    def write(self, data: bytes) -> None:
        if not isinstance(data, bytes | bytearray):
            raise TypeError(f"WSGI output must be bytes, not {type(data).__name__}")
        if self.finished or not data:
            return  # after finish_request() the client is gone: output goes nowhere
        if not self.committed:
            self._commit()
        self.out += data
        if len(self.out) >= FLUSH:
            self.conn.send(encode_stream(STDOUT, self.rid, self.out, end=False))
            self.out.clear()

    def finish(self) -> None:
        """Complete the response to the web server; later output is dropped."""
        if self.finished:
            return
        if not self.committed:
            self._commit()
        self.finished = True
        self.conn.end(self.rid, self.out, last=not self.keep_conn)
        self.out.clear()

    def error(self, code: int, detail: str) -> None:
        """Replace an uncommitted response with an error page."""
        self.status, self.headers = MESSAGES[code], [("Content-Type", "text/plain; charset=utf-8")]
        self.out.clear()
        self.write((MESSAGES[code] + "\n" + detail).encode())


def run_app(app: Callable[..., Iterable[bytes]], conn: Connection, req: Request,
            settings: Settings, errors: IO[str],
            app_done: Callable[[], None] = lambda: None) -> Response:
    """Serve one request; returns the response (its status, for the logs).

    `app_done` runs as soon as the application is through (returned, raised, or
    its iterable closed), before the rest of the response goes out: the worker
    disarms max_execution_time there, so the timer never fires in our own I/O.
    """
    resp = Response(conn, req.id, req.keep_conn)
    body = Input(conn, settings.body_limit)
    env = environ(req.params, body, errors)
    env["tenantfpm.finish_request"] = resp.finish
    try:
        length = int(env.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    if settings.body_limit and length > settings.body_limit:
        conn.drain_stdin()
        resp.error(413, f"The request body ({length} bytes) is over the limit of "
                        f"{settings.body_limit} bytes.\n")
        resp.finish()
        return resp
    try:
        try:
            result = app(env, resp.start_response)
            try:
                for chunk in result:
                    resp.write(chunk)
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
        finally:
            app_done()
    except Closed:
        raise  # the connection is gone: nothing more to send on it
    except Aborted:
        resp.finished = True  # the web server gave up on this request: no answer wanted
        return resp
    except (Exception, ExecutionTimeout) as e:
        _fail(resp, e, settings, errors)
    conn.drain_stdin()
    resp.finish()
    return resp


def _fail(resp: Response, e: BaseException, settings: Settings, errors: IO[str]) -> None:
    tb = "".join(traceback.format_exception(e))
    errors.write(tb)
    errors.flush()
    if resp.committed:
        return  # the status is out already: the response just ends here
    if isinstance(e, BodyTooLarge):
        resp.error(413, f"{e}\n")
    else:
        resp.error(500, tb if settings.display_errors else "")
