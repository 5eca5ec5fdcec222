"""status_listen: a FastCGI responder answering PHP-FPM status pages for any tenant.

The pool is named by the path (`/status/NAME`, what php-fpm_exporter's
`unix:///run/tenantfpm/status.sock;/status/NAME` sends) or by `?pool=NAME`;
FPM's own flags (`json`, `openmetrics`, `full`) pick the format. One request
per connection unless the web server asks to keep it (FCGI_KEEP_CONN).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import struct
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

from tenantfpm import fdguard, fpm_status
from tenantfpm.config.rules import parse_listen
from tenantfpm.wire import fastcgi

if TYPE_CHECKING:
    from tenantfpm.master.arbiter import Master

MAX_PARAMS = 64 * 1024  # a status request has a few hundred bytes of params
READ_TIMEOUT = 10.0


class StatusServer:
    def __init__(self, master: Master, listen: str, group: str = "root") -> None:
        self.master = master
        self.address = parse_listen(listen)
        self.group = group  # who may read every tenant's status besides root
        self.server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        a = self.address
        if a.is_unix:
            assert a.path is not None
            # 0660 from the first moment: no user but root and the group
            sock = fdguard.unix_listener(a.path, 0o660, group=self.group)
            self.server = await asyncio.start_unix_server(self.serve, sock=sock)
        else:
            self.server = await asyncio.start_server(self.serve, a.host, a.port)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
        if self.address.is_unix and self.address.path:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.address.path)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self._serve(reader, writer)
        except (fastcgi.ProtocolError, TimeoutError, ConnectionError, asyncio.IncompleteReadError):
            pass  # a broken client: drop the connection, keep serving others
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        records = fastcgi.RecordReader()
        pending: dict[int, tuple[int, bytearray]] = {}  # request id -> (flags, params)
        while True:
            data = await asyncio.wait_for(reader.read(65536), READ_TIMEOUT)
            if not data:
                return
            for rec in records.feed(data):
                if rec.type == fastcgi.BEGIN_REQUEST:
                    role, flags = struct.unpack_from("!HB", rec.content)
                    if role != fastcgi.RESPONDER:
                        writer.write(_end(rec.request_id, 0, fastcgi.UNKNOWN_ROLE))
                        continue
                    pending[rec.request_id] = (flags, bytearray())
                elif rec.type == fastcgi.PARAMS and rec.request_id in pending:
                    buf = pending[rec.request_id][1]
                    if rec.content:
                        buf += rec.content
                        if len(buf) > MAX_PARAMS:
                            raise fastcgi.ProtocolError("params too large")
                        continue
                    flags, raw = pending.pop(rec.request_id)
                    params = {k.decode(errors="replace"): v.decode(errors="replace")
                              for k, v in fastcgi.decode_pairs(bytes(raw))}
                    writer.write(self.respond(rec.request_id, params))
                    await writer.drain()
                    if not flags & fastcgi.KEEP_CONN:
                        return
                elif rec.type == fastcgi.GET_VALUES:
                    pairs = fastcgi.encode_pairs([("FCGI_MPXS_CONNS", "0"),
                                                  ("FCGI_MAX_CONNS", "64"),
                                                  ("FCGI_MAX_REQS", "64")])
                    writer.write(fastcgi.Record(fastcgi.GET_VALUES_RESULT, 0, pairs).encode())

    def respond(self, request_id: int, params: dict[str, str]) -> bytes:
        path = params.get("SCRIPT_NAME") or params.get("DOCUMENT_URI") or \
            params.get("REQUEST_URI", "").split("?", 1)[0]
        query = params.get("QUERY_STRING", "")
        name = parse_qs(query).get("pool", [""])[0]
        parts = [p for p in path.split("/") if p]
        if not name and len(parts) >= 2:
            name = parts[-1]
        pool = self.master.pools.get(name)
        if pool is None:
            status, ctype = "404 Not Found", "text/plain"
            body = (f"no tenant named {name!r}\n" if name else
                    "name the tenant: /status/NAME or ?pool=NAME\n").encode()
        else:
            pool.sample()
            ctype, body = fpm_status.render(pool.status(full=True), query)
            status = "200 OK"
        head = (f"Status: {status}\r\nContent-Type: {ctype}\r\n"
                "Expires: Thu, 01 Jan 1970 00:00:00 GMT\r\n"
                "Cache-Control: no-cache, no-store, must-revalidate, max-age=0\r\n\r\n")
        return (fastcgi.encode_stream(fastcgi.STDOUT, request_id, head.encode() + body)
                + _end(request_id, 0, fastcgi.REQUEST_COMPLETE))


def _end(request_id: int, app_status: int, protocol_status: int) -> bytes:
    return fastcgi.Record(fastcgi.END_REQUEST, request_id,
                          struct.pack("!IB3x", app_status, protocol_status)).encode()
