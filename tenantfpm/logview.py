"""Where `tenantfpm logs` reads from: the file itself (root) or the master's self-service
socket (a tenant's own user, who may not read the root-owned file). Both give the lines
so far, then, to follow, what is appended, across a rotation."""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

from tenantfpm.client import Client
from tenantfpm.errors import TenantFPMError

POLL = 0.3  # seconds between looks while following


def open_log(path: str) -> Any:
    """A log file as text, never a FIFO or device someone put in its place (opening one
    would hang the command)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise TenantFPMError(f"{path} is not a regular file")
    os.set_blocking(fd, True)
    return open(fd, errors="replace")


class FileLog:
    def __init__(self, path: str) -> None:
        self.path = path
        self.missing = not os.path.exists(path)
        self._f: Any = None

    def lines(self) -> Iterator[str]:
        try:
            self._f = open_log(self.path)
        except FileNotFoundError:
            return
        for line in self._f:
            yield line.rstrip("\n")

    def follow(self) -> Iterator[str]:
        f = self._f
        while True:
            line = f.readline() if f is not None else ""
            if line:
                yield line.rstrip("\n")
                continue
            time.sleep(POLL)
            try:
                st = os.stat(self.path)
            except FileNotFoundError:
                continue
            if f is None or st.st_ino != os.fstat(f.fileno()).st_ino:
                f = open_log(self.path)  # rotated (or made): the new file from its start


class RemoteLog:
    """The same through the self-service socket, a bounded slice per call."""

    def __init__(self, client: Client, name: str | None, kind: str) -> None:
        self.client, self.name, self.kind = client, name, kind
        self.offset, self.inode, self.partial = 0, None, ""
        first = self._get(0, 1)
        self.missing = not first["exists"]
        self.not_kept: str | None = first.get("not_kept")  # why, when the site turns it off

    def _get(self, offset: int, limit: int | None = None) -> dict[str, Any]:
        q: dict[str, str | int] = {"kind": self.kind, "offset": offset}
        if limit:
            q["limit"] = limit
        if self.name:
            q["name"] = self.name
        return self.client.call("GET", f"/v1/self/logs?{urlencode(q)}", raw=True)

    def _take(self, r: dict[str, Any]) -> list[str]:
        self.offset = r["next"]
        text = self.partial + r["data"]
        *done, self.partial = text.split("\n")
        return done

    def lines(self) -> Iterator[str]:
        while True:
            r = self._get(self.offset)
            if not r["exists"]:
                return
            self.inode = r["inode"]
            if not r["data"]:
                return
            yield from self._take(r)
            if self.offset >= r["size"]:
                return

    def follow(self) -> Iterator[str]:
        while True:
            r = self._get(self.offset)
            if r["exists"] and r["inode"] != self.inode:  # rotated: the new file from 0
                self.inode, self.offset, self.partial = r["inode"], 0, ""
                continue
            if r.get("data"):
                yield from self._take(r)
            else:
                time.sleep(POLL)
