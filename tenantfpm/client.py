"""The CLI's side of the control API: HTTP/JSON over the master's Unix socket.

What the master answers carries tenants' text (a zygote's last words, a running URI, a
script name), so a client made `printable` escapes every control character in it, in
answers and in errors alike, before the CLI prints anything: no tenant reaches root's
terminal (OSC 52 into the clipboard, OSC 8 links, a cleared screen)."""

from __future__ import annotations

import http.client
import json
import socket
from typing import Any

from tenantfpm.errors import MasterNotRunning, TenantFPMError
from tenantfpm.logs import escape


class NotFoundError(TenantFPMError):
    pass


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)


def printable(data: Any) -> Any:
    """`data` with every string (keys too) escaped as logs.escape does."""
    if isinstance(data, str):
        return escape(data)
    if isinstance(data, list):
        return [printable(x) for x in data]
    if isinstance(data, dict):
        return {printable(k): printable(v) for k, v in data.items()}
    return data


class Client:
    def __init__(self, control_socket: str, timeout: float = 120.0,
                 printable: bool = False) -> None:
        self.path = control_socket
        self.timeout = timeout
        self.printable = printable

    def call(self, method: str, url: str, body: dict[str, Any] | None = None,
             raw: bool = False) -> Any:
        """The master's answer; escaped when the client is printable, unless `raw` (log
        slices, which `tenantfpm logs` escapes line by line as it prints them)."""
        conn = _UnixConnection(self.path, self.timeout)
        try:
            payload = json.dumps(body).encode() if body is not None else None
            headers = {"Content-Type": "application/json"} if payload else {}
            conn.request(method, url, body=payload, headers=headers)
            resp = conn.getresponse()
            answer = resp.read()
            try:
                data = json.loads(answer or b"null")
                if self.printable and not raw:
                    data = printable(data)
            except ValueError:
                raise TenantFPMError(f"the master answered HTTP {resp.status}: "
                                     f"{escape(answer[:300].decode(errors='replace'))}") from None
        except (FileNotFoundError, ConnectionRefusedError):
            raise MasterNotRunning(f"the master is not running (no control socket at "
                                   f"{self.path})") from None
        except TimeoutError:
            raise TenantFPMError(f"the master did not answer within {self.timeout:g}s") from None
        finally:
            conn.close()
        if resp.status == 404:
            raise NotFoundError(data.get("error", "not found"))
        if resp.status >= 400:
            raise TenantFPMError(data.get("error", f"HTTP {resp.status}"))
        return data

    def running(self) -> bool:
        try:
            self.call("GET", "/v1/tenants")
        except MasterNotRunning:
            return False
        return True
