"""One pool's worker output: stdout/stderr pipes read on the master's loop into error.log.

PHP-FPM's fpm_stdio.c seam. The output is the tenant's, so it is bounded: at
most `[log] rate_limit` bytes a second are read (a token bucket, ratelimit.py);
past it the pipe leaves the loop until enough tokens are back, the pipe fills
and the writers block, so a flood slows the flooding tenant and costs the
master a few reads a second. Lines are cut at FPM's log_limit and escaped by
TenantLog.
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
CHUNK = 65536  # most bytes of one worker's output read per loop callback
MIN_READ = 16384  # ... and, when the tenant's output is throttled, the least


class Output:
    def __init__(self, loop: asyncio.AbstractEventLoop, log: Callable[[], TenantLog],
                 rate: int) -> None:
        self.loop = loop
        self.log = log  # the pool's current log (a reload may open another)
        self.budget = TokenBucket(rate, max(rate, CHUNK) * 4)
        self.paused = False  # said (once per pool start) that output is throttled

    def set_rate(self, rate: int) -> None:
        self.budget.rate, self.budget.burst = rate, max(rate, CHUNK) * 4

    def watch(self, w: Worker) -> None:
        """Start reading a new worker's pipes."""
        for fd, stream in ((w.stdout, "stdout"), (w.stderr, "stderr")):
            if fd is not None:
                self.loop.add_reader(fd, self._on_readable, w, fd, stream)

    def _on_readable(self, w: Worker, fd: int, stream: str) -> None:
        budget = self.budget.available(time.monotonic())
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
        self.budget.take(len(data))
        self._lines(w, stream, data)

    def _pause(self, w: Worker, fd: int, stream: str) -> None:
        self.loop.remove_reader(fd)
        if not self.paused:
            self.paused = True
            self.log().event("warning", f"workers write more than log.rate_limit "
                                        f"({int(self.budget.rate)} bytes/s): their output "
                                        "is read more slowly (they wait)")
        self.loop.call_later(self.budget.wait(MIN_READ), self._resume, w, fd, stream)

    def _resume(self, w: Worker, fd: int, stream: str) -> None:
        if fd in (w.stdout, w.stderr):  # not closed meanwhile (its worker was reaped)
            self.loop.add_reader(fd, self._on_readable, w, fd, stream)

    def _lines(self, w: Worker, stream: str, data: bytes) -> None:
        buf = w.partial.get(stream, b"") + data
        *lines, rest = buf.split(b"\n")
        w.partial[stream] = rest[-LOG_LINE_LIMIT:] if len(rest) > LOG_LINE_LIMIT else rest
        texts = [t for t in (line[:LOG_LINE_LIMIT].decode(errors="replace").rstrip("\r")
                             for line in lines) if t]
        if texts:
            w.last_output = texts[-1]
            self.log().worker_said(w.pid, stream, texts)

    def drain(self, w: Worker) -> None:
        """What the worker wrote before it died (within the budget plus one chunk: a
        grandchild may hold the pipe and keep writing), then close its pipes."""
        for fd, stream in ((w.stdout, "stdout"), (w.stderr, "stderr")):
            if fd is None:
                continue
            allowance = self.budget.available(time.monotonic()) + CHUNK
            while fd in (w.stdout, w.stderr) and allowance > 0:
                try:
                    data = os.read(fd, min(CHUNK, allowance))
                except OSError:
                    break
                if not data:
                    break
                allowance -= len(data)
                self.budget.take(len(data))
                self._lines(w, stream, data)
            if fd in (w.stdout, w.stderr):
                self._close(w, fd, stream)

    def _close(self, w: Worker, fd: int, stream: str) -> None:
        self.loop.remove_reader(fd)
        rest = w.partial.pop(stream, b"")
        if rest:
            text = rest.decode(errors="replace")
            w.last_output = text
            self.log().worker_said(w.pid, stream, [text])
        os.close(fd)
        if stream == "stdout":
            w.stdout = None
        else:
            w.stderr = None
