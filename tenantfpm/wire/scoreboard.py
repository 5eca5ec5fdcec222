"""A worker's slot, shared with the master: exact figures instead of /proc guesses.

Our workers (the python worker, and the PHP SAPI's: sapi/scoreboard.c, whose struct
sapi/wire.h generates from NUMBERS and TEXTS below) publish their state, counters and
current request here, as PHP-FPM's children do in FPM's scoreboard; php-cgi keeps its
counters to itself, so for it the master infers a worker's state from /proc. The slot
is a memfd the master creates; the worker gets it as an inherited fd and maps it. One
writer (the worker), one reader (the master): a sequence number, odd while a write is
under way, lets the reader detect a torn read and retry (a seqlock); no locks, no
syscalls on the worker's hot path.

The page is the tenant's to write, so the master treats it as hostile: the
memfd is sealed against resizing, the master never maps it (it preads: a page
truncated under a mapping would kill the master with SIGBUS), and every field
it reads is checked; a slot that fails a check reads as unknown (None), which
degrades that worker's figures only.
"""

from __future__ import annotations

import fcntl
import math
import mmap
import os
import struct
from dataclasses import dataclass

# states, in the order a request goes through them
STARTING, IDLE, READING, RUNNING, EXITING = range(5)
STATE_NAMES = {STARTING: "Starting", IDLE: "Idle", READING: "Reading headers",
               RUNNING: "Running", EXITING: "Finishing"}

# the page: a sequence number, then NUMBERS (they change at every step of a request),
# then TEXTS (when a request starts), packed: no padding but what NUMBERS names
NUMBERS = (  # Slot's field (or "pad"), struct code, what it holds
    ("state", "B", "a state above"),
    ("pad", "7x", ""),
    ("requests", "Q", "completed requests"),
    ("accepted", "Q", "connections accepted"),
    ("request_start", "d", "CLOCK_MONOTONIC seconds when the current/last request began"),
    ("content_length", "q", "-1: none"),
    ("last_duration", "d", "seconds; -1: no request finished yet"),
    ("last_cpu", "d", "CPU seconds of the last request; -1: none"),
    ("last_cpu_percent", "d", "-1: none"),
    ("last_memory", "Q", "peak memory of the last request, bytes"),
    ("last_status", "H", "its HTTP status"),
)
TEXTS = (("method", 64), ("uri", 1024), ("script", 1024), ("fatal", 512))  # NUL-padded

_SEQ = struct.Struct("=Q")
_NUMBERS = struct.Struct("=" + "".join(code for _, code, _ in NUMBERS))
_TEXTS = struct.Struct("=" + "".join(f"{n}s" for _, n in TEXTS))
_TEXTS_AT = _SEQ.size + _NUMBERS.size
SIZE = mmap.PAGESIZE * ((_TEXTS_AT + _TEXTS.size) // mmap.PAGESIZE + 1)


def _text(b: bytes) -> str:
    return b.rstrip(b"\0").decode("utf-8", "replace")


def _bytes(s: str, n: int) -> bytes:
    """What fits with a NUL after it, as the C writer keeps it (sb_text)."""
    return s.encode("utf-8", "surrogateescape")[:n - 1]


@dataclass
class Slot:
    state: int = STARTING
    requests: int = 0  # completed requests
    accepted: int = 0  # connections accepted
    request_start: float = 0.0  # time.monotonic() when the current (or last) request began
    content_length: int = -1
    last_duration: float = -1.0  # seconds; -1: no request finished yet
    last_cpu: float = -1.0  # CPU seconds of the last request
    last_cpu_percent: float = -1.0
    last_memory: int = 0  # the worker's peak RSS in bytes when the last request ended
    last_status: int = 0
    method: str = ""
    uri: str = ""
    script: str = ""
    fatal: str = ""  # why the worker could not start (the traceback's last line)


READ_TRIES = 64  # torn reads retried; a worker that writes all the time reads as unknown
COUNT_MAX = 1 << 48  # more requests or bytes than any worker can reach: garbage
SECONDS_MAX = 1e8  # about three years


def _valid(n: tuple) -> bool:
    """The numbers a well-behaved worker can write (see Slot)."""
    (state, requests, accepted, start, length, duration, cpu, cpu_pct, memory,
     status) = n
    floats = (start, duration, cpu, cpu_pct)
    return (state in STATE_NAMES and requests < COUNT_MAX and accepted < COUNT_MAX
            and all(math.isfinite(f) for f in floats)
            and 0.0 <= start < SECONDS_MAX and -1 <= length < COUNT_MAX
            and (duration == -1.0 or 0.0 <= duration < SECONDS_MAX)
            and (cpu == -1.0 or 0.0 <= cpu < SECONDS_MAX)
            and (cpu_pct == -1.0 or 0.0 <= cpu_pct <= 100.0 * 4096)
            and memory < COUNT_MAX and status < 1000)


class Board:
    """One worker's mapped slot: the worker's side (it writes)."""

    def __init__(self, fd: int) -> None:
        self.map = mmap.mmap(fd, SIZE)

    @staticmethod
    def create() -> tuple[int, Reader]:
        """(fd for the worker, the master's reader); the fd is close-on-exec here and
        sealed: neither side can shrink or grow it."""
        fd = os.memfd_create("tenantfpm-scoreboard", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            os.ftruncate(fd, SIZE)
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS,
                        fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL)
            return fd, Reader(os.dup(fd))
        except OSError:
            os.close(fd)
            raise

    def publish(self, s: Slot, texts: bool = False) -> None:
        """Write the counters and state; the strings too when `texts` (a new request,
        a fatal error): packing them costs more than everything else together."""
        (seq,) = _SEQ.unpack_from(self.map, 0)
        _SEQ.pack_into(self.map, 0, seq + 1)
        _NUMBERS.pack_into(self.map, _SEQ.size, s.state, s.requests, s.accepted,
                           s.request_start, s.content_length, s.last_duration, s.last_cpu,
                           s.last_cpu_percent, s.last_memory, s.last_status)
        if texts:
            _TEXTS.pack_into(self.map, _TEXTS_AT, _bytes(s.method, 64), _bytes(s.uri, 1024),
                             _bytes(s.script, 1024), _bytes(s.fatal, 512))
        _SEQ.pack_into(self.map, 0, seq + 2)

    def close(self) -> None:
        self.map.close()


class Reader:
    """The master's side: preads of the page, each field checked."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def read(self) -> Slot | None:
        """A consistent, plausible copy; None if the worker kept writing through a few
        tries, or wrote what no worker of ours writes."""
        size = _TEXTS_AT + _TEXTS.size
        for _ in range(READ_TRIES):
            try:
                page = os.pread(self.fd, size, 0)
                (after,) = _SEQ.unpack(os.pread(self.fd, _SEQ.size, 0))
            except (OSError, struct.error):
                return None
            if len(page) < size:
                return None
            (before,) = _SEQ.unpack_from(page, 0)
            if before & 1 or before != after:
                os.sched_yield()  # let a worker in the middle of a write finish it
                continue
            numbers = _NUMBERS.unpack_from(page, _SEQ.size)
            if not _valid(numbers):
                return None
            texts = _TEXTS.unpack_from(page, _TEXTS_AT)
            return Slot(*numbers, *(_text(t) for t in texts))
        return None

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
