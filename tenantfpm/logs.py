"""Log files: the master's and each tenant's error.log, in PHP-FPM's line format.

Every file is opened relative to a directory the master verified (safefs): a
tenant cannot point the root master at a file of its choosing. Every line is
escaped: what a tenant wrote (its output, its script names, its URIs) can
neither start a line of its own nor put terminal control sequences on the
screen of an admin reading the log.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import time
from datetime import datetime
from typing import TYPE_CHECKING

from tenantfpm import safefs

if TYPE_CHECKING:
    from tenantfpm.config.model import Site

LEVELS = {"alert": 0, "error": 1, "warning": 2, "notice": 3, "debug": 4}
_TS = "%d-%b-%Y %H:%M:%S"
LINE = re.compile(r"^\[(\d{2}-\w{3}-\d{4} \d{2}:\d{2}:\d{2})\] (\w+): (.*)$")


_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")


def escape(text: str) -> str:
    """Control characters (newlines, CR, ESC, C1...) as \\xNN: one line stays one line."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100
                        else f"\\u{ord(m.group()):04x}", text)


def _quote(line: str) -> str:
    """A worker's line inside FPM's quotes: backslash and quote escaped, then controls."""
    return escape(line.replace("\\", "\\\\").replace('"', '\\"'))


def timestamp(t: float | None = None) -> str:
    return time.strftime(_TS, time.localtime(t))


def parse_timestamp(s: str) -> float:
    return datetime.strptime(s, _TS).timestamp()


class LogFile:
    """An append-only log that can be reopened (logrotate, SIGUSR1).

    A bare O_APPEND descriptor and one write() per line, no Python file object:
    each line lands whole even with workers appending too, and a master with a
    thousand tenants does not hold a thousand 8 kB buffers. An idle tenant's log
    rests (closed) until its next line: 10,000 idle tenants cost one descriptor each
    (their socket), not three.
    """

    def __init__(self, path: str, level: str = "debug") -> None:
        self.path = path
        self.threshold = LEVELS[level]
        self._fd: int | None = None
        self.problem: str | None = None  # why the file could not be opened
        self.size = 0  # bytes in the file as last opened plus what this master wrote
        self.resting = False  # closed by rest(): opened again by the next line
        self.reopen()

    def reopen(self) -> None:
        """(Re)open in a verified directory; a failure is kept in `problem`, never raised:
        a tenant's bad log directory fails that tenant, not the master."""
        if self.path == "stderr":
            self._fd = sys.stderr.fileno()
            return
        self.resting = False
        old = self._fd
        try:
            dfd = safefs.open_trusted_dir(os.path.dirname(self.path), create_mode=0o750)
            try:
                fd = safefs.open_in(dfd, os.path.basename(self.path),
                                    os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            finally:
                os.close(dfd)
            os.fchmod(fd, 0o640)
        except OSError as e:
            self.problem = f"cannot open {self.path}: {e.strerror if e.filename else e}"
            return
        self._fd, self.problem = fd, None
        self.size = os.fstat(fd).st_size
        if old is not None:
            os.close(old)

    def rest(self) -> None:
        """Close until the next line (which opens the file again, in a directory verified
        again: a rotation in between is simply followed)."""
        if self._fd is not None and self.path != "stderr":
            os.close(self._fd)
            self._fd, self.resting = None, True

    def _awake(self) -> int | None:
        if self.resting:
            self.reopen()
        return self._fd

    def write(self, level: str, message: str) -> None:
        """One line per line of the master's own `message`; control bytes in a line
        (a tenant's \\r, ESC...) escaped."""
        if LEVELS[level] > self.threshold or self._awake() is None:
            return
        stamp = f"[{timestamp()}] {level.upper()}: "
        self.append("".join(f"{stamp}{escape(line)}\n" for line in message.split("\n")))

    def append(self, text: str) -> None:
        """Text as it is (slow.log entries carry their own header lines)."""
        self.append_bytes(text.encode(errors="replace"))

    def append_bytes(self, data: bytes) -> None:
        fd = self._awake()
        if fd is not None:
            self.size += len(data)
            # a full disk loses log lines; it must not stop the master, nor (as an open
            # failure does) the tenant's next start
            with contextlib.suppress(OSError):
                os.write(fd, data)

    def close(self) -> None:
        if self._fd is not None and self.path != "stderr":
            os.close(self._fd)
        self._fd, self.resting = None, False


class TenantLog:
    """A tenant's error.log: the master's events for it and its workers' output.

    Worker output stops being written once error.log reaches `max_size` (0: no cap)
    until the file is reopened (rotated): the dropped bytes are counted and said once,
    so a tenant cannot fill the host's disk through its stderr.
    """

    def __init__(self, name: str, log_dir: str, max_size: int = 0) -> None:
        self.name = name
        self.dir = log_dir
        self.max_size = max_size
        self.dropped = 0  # bytes of worker output not written since the cap was hit
        self.error = LogFile(os.path.join(log_dir, "error.log"))
        self._slow: LogFile | None = None  # opened on the first slow request
        self._access: LogFile | None = None  # opened on the first access line
        self.access_dropped = 0  # bytes of access lines not written since the cap was hit

    def slow(self, pid: int, script: str | None, frames: list[str] | None,
             why_not: str = "") -> None:
        """One slow.log entry in PHP-FPM's format; without frames, the reason in their place."""
        if self._slow is None:
            self._slow = LogFile(os.path.join(self.dir, "slow.log"))
        lines = [f"\n[{timestamp()}]  [pool {self.name}] pid {pid}",
                 f"script_filename = {escape(script or 'unknown')}"]
        lines += ([escape(f) for f in frames or []] if frames or not why_not
                  else [f"(no backtrace: {escape(why_not)})"])
        self._slow.append("\n".join(lines) + "\n")

    def event(self, level: str, message: str) -> None:
        """One line, whatever tenant data (a script, a URI, its output) the message holds."""
        self.error.write(level, f"[pool {self.name}] {escape(message)}")

    def worker_said(self, pid: int, stream: str, lines: list[str]) -> None:
        """Lines a worker wrote, in one write; escaped like FPM does (backslash, quote)
        and every control byte besides."""
        if self._at_cap(self.error):
            self._drop("dropped", sum(len(x) + 1 for x in lines))
            return
        if self.error.threshold < LEVELS["warning"]:
            return
        stamp = f"[{timestamp()}] WARNING: [pool {self.name}] child {pid} said into {stream}: "
        self.error.append("".join(f'{stamp}"{_quote(t)}"\n' for t in lines))

    def access(self, lines: list[str]) -> None:
        """Lines the workers wrote for access.log (through their pipe: stdio.py), in one
        write, control bytes escaped whatever the worker did; dropped once access.log
        reaches `max_size` (counted and said once), as worker output is in error.log."""
        self.access_bytes("".join(f"{escape(t)}\n" for t in lines).encode(errors="replace"))

    def access_bytes(self, data: bytes) -> None:
        """Whole access lines with nothing left to escape (stdio.plain_lines), in one
        write, under `max_size` as access() is."""
        if self._access is None:
            self._access = LogFile(os.path.join(self.dir, "access.log"))
        if self._at_cap(self._access):
            self._drop("access_dropped", len(data))
            return
        self._access.append_bytes(data)

    def _at_cap(self, f: LogFile) -> bool:
        return bool(self.max_size) and f.size >= self.max_size

    def _drop(self, counter: str, size: int) -> None:
        """Count `size` bytes as dropped (in `counter`); the first time, say so."""
        if not getattr(self, counter):
            log, what = (("access.log", "access lines") if counter == "access_dropped"
                         else ("error.log", "workers' output"))
            self.event("warning", f"{log} reached log.max_size ({self.max_size} bytes): "
                                  f"{what} dropped until the log is rotated")
        setattr(self, counter, getattr(self, counter) + size)

    def _files(self) -> list[LogFile]:
        return [f for f in (self.error, self._slow, self._access) if f is not None]

    def reopen(self) -> None:
        for f in self._files():
            if not f.resting:  # a resting file opens the new one with its next line
                f.reopen()
        if self.dropped:
            self.event("warning", f"{self.dropped} bytes of workers' output were dropped "
                                  "while error.log was at log.max_size")
            self.dropped = 0
        if self.access_dropped:
            self.event("warning", f"{self.access_dropped} bytes of access lines were "
                                  "dropped while access.log was at log.max_size")
            self.access_dropped = 0

    def rest(self) -> None:
        """The tenant is idle (nothing running): its files close until their next line."""
        for f in self._files():
            f.rest()

    @property
    def problem(self) -> str | None:
        """Why a log of this tenant cannot be written (then the tenant must not start)."""
        return next((f.problem for f in self._files() if f.problem), None)

    def close(self) -> None:
        for f in self._files():
            f.close()


def not_kept(site: Site, kind: str) -> str | None:
    """Why tenant `site` keeps no `kind` log (its site file turns it off); None when it
    keeps one. Said by `tenantfpm logs` to root and, through the self-service socket, to
    the tenant's own user, instead of silence."""
    if kind == "access" and not site.log.access:
        return (f"tenant {site.name} keeps no access log: [log] access = false in its site "
                "file (set it to true for one in PHP-FPM's access.format)")
    if kind == "slow" and not site.limits.request_slowlog_timeout:
        return (f"tenant {site.name} has no slow log: [limits] request_slowlog_timeout is 0 "
                "(off)")
    return None
