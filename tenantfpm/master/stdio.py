"""One pool's worker output: stdout/stderr pipes read on the master's loop into error.log,
and the access pipe (the lines a worker writes for access.log) into access.log.

PHP-FPM's fpm_stdio.c seam. The output is the tenant's, so it is bounded: at
most `[log] rate_limit` bytes a second of output and `access_rate_limit` of access
lines are read (a token bucket each, ratelimit.py); past it the pipe leaves the loop
until enough tokens are back, the pipe fills and the writers block, so a flood slows
the flooding tenant and costs the master a few reads a second. Lines are cut at FPM's
log_limit (access lines at ACCESS_LINE_LIMIT) and escaped by TenantLog.

An access pipe has a line per request, so it is read in batches: after each read it
leaves the loop for ACCESS_BATCH (the pipe holds what comes meanwhile; a line reaches
access.log that much later; the pipe holds 1 MiB: runtimes/base.py), so the master
wakes 20 times a second per busy worker, not once per request (hello.php at 35,000
requests a second: 0.5 us of the master's CPU per request at 50 ms, 0.85 at 20 ms).

access.log goes through the master, not a descriptor of it in the worker: any
process of the tenant can take a descriptor its worker holds, and a root-owned
log in a tenant's hands is the host's disk (fallocate), forged or erased lines.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable

from tenantfpm.logs import TenantLog
from tenantfpm.master.worker import Worker
from tenantfpm.ratelimit import TokenBucket

LOG_LINE_LIMIT = 1024  # FPM's log_limit default
ACCESS_LINE_LIMIT = 8192  # the PHP writer's line buffer (sapi/accesslog.c): %Q%q, headers
STREAMS = ("stdout", "stderr", "access")
ACCESS_BATCH = 0.05  # seconds an access pipe rests after a read
CHUNK = 65536  # most bytes of one worker's output read per loop callback
MIN_READ = 16384  # ... and, when the tenant's output is throttled, the least


class Output:
    def __init__(self, loop: asyncio.AbstractEventLoop, log: Callable[[], TenantLog],
                 rate: int, access_rate: int) -> None:
        self.loop = loop
        self.log = log  # the pool's current log (a reload may open another)
        self.budget = TokenBucket(rate, max(rate, CHUNK) * 4)  # stdout and stderr
        self.access_budget = TokenBucket(access_rate, max(access_rate, CHUNK) * 4)
        self.paused = False  # said (once per pool start) that output is throttled

    def set_rate(self, rate: int, access_rate: int) -> None:
        for b, r in ((self.budget, rate), (self.access_budget, access_rate)):
            b.rate, b.burst = r, max(r, CHUNK) * 4

    def _bucket(self, stream: str) -> TokenBucket:
        return self.access_budget if stream == "access" else self.budget

    def watch(self, w: Worker) -> None:
        """Start reading a new worker's pipes."""
        for fd, stream in _pipes(w):
            self.loop.add_reader(fd, self._on_readable, w, fd, stream)

    def _on_readable(self, w: Worker, fd: int, stream: str) -> None:
        bucket = self._bucket(stream)
        budget = bucket.available(time.monotonic())
        if budget < MIN_READ:  # no trickle of tiny reads: wait for a worthwhile one
            self._pause(w, fd, stream)
            return
        try:
            data = os.read(fd, min(CHUNK, budget))
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._close(w, fd, stream)
            return
        bucket.take(len(data))
        self._lines(w, stream, data)
        if stream == "access":  # the next lines in a batch, ACCESS_BATCH from now
            self.loop.remove_reader(fd)
            self.loop.call_later(ACCESS_BATCH, self._resume, w, fd, stream)

    def _pause(self, w: Worker, fd: int, stream: str) -> None:
        self.loop.remove_reader(fd)
        bucket = self._bucket(stream)
        if not self.paused:
            self.paused = True
            self.log().event("warning", f"workers write more than log.rate_limit "
                                        f"({int(bucket.rate)} bytes/s) of "
                                        f"{'access lines' if stream == 'access' else 'output'}"
                                        ": it is read more slowly (they wait)")
        self.loop.call_later(bucket.wait(MIN_READ), self._resume, w, fd, stream)

    def _resume(self, w: Worker, fd: int, stream: str) -> None:
        if getattr(w, stream) == fd:  # not closed meanwhile (its worker was reaped)
            self.loop.add_reader(fd, self._on_readable, w, fd, stream)

    def _lines(self, w: Worker, stream: str, data: bytes) -> None:
        limit = ACCESS_LINE_LIMIT if stream == "access" else LOG_LINE_LIMIT
        buf = w.partial.get(stream, b"") + data
        end = buf.rfind(b"\n") + 1
        whole, rest = buf[:end], buf[end:]
        w.partial[stream] = rest[-limit:] if len(rest) > limit else rest
        if stream == "access" and whole and plain_lines(whole, limit):
            self.log().access_bytes(whole)  # as they are: nothing in them to escape
            return
        texts = [t for t in (line[:limit].decode(errors="replace").rstrip("\r")
                             for line in whole.split(b"\n")[:-1]) if t]
        if not texts:
            return
        if stream == "access":
            self.log().access(texts)
            return
        w.last_output = texts[-1]
        self.log().worker_said(w.pid, stream, texts)

    def drain(self, w: Worker) -> None:
        """What the worker wrote before it died (within the budget plus one chunk: a
        grandchild may hold the pipe and keep writing), then close its pipes."""
        for fd, stream in _pipes(w):
            bucket = self._bucket(stream)
            allowance = bucket.available(time.monotonic()) + CHUNK
            while getattr(w, stream) == fd and allowance > 0:
                try:
                    data = os.read(fd, min(CHUNK, allowance))
                except OSError:
                    break
                if not data:
                    break
                allowance -= len(data)
                bucket.take(len(data))
                self._lines(w, stream, data)
            if getattr(w, stream) == fd:
                self._close(w, fd, stream)

    def _close(self, w: Worker, fd: int, stream: str) -> None:
        self.loop.remove_reader(fd)
        rest = w.partial.pop(stream, b"")
        if rest:
            text = rest.decode(errors="replace")
            if stream == "access":
                self.log().access([text])
            else:
                w.last_output = text
                self.log().worker_said(w.pid, stream, [text])
        os.close(fd)
        setattr(w, stream, None)


_PLAIN = bytes(range(0x20, 0x7F)) + b"\n"  # printable ASCII and the newline


def plain_lines(data: bytes, limit: int) -> bool:
    """Whole lines of printable ASCII, none empty or longer than `limit`: what a writer
    that escaped its lines sends, written as it is (the master's per-request cost at
    tens of thousands of requests a second); anything else goes line by line."""
    return (not data.translate(None, _PLAIN) and b"\n\n" not in data
            and not data.startswith(b"\n") and max(map(len, data.split(b"\n"))) <= limit)


def _pipes(w: Worker) -> list[tuple[int, str]]:
    """The worker's pipes the master reads, with their names (the Worker's fields)."""
    return [(fd, stream) for stream in STREAMS if (fd := getattr(w, stream)) is not None]
