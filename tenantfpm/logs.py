"""Log files: the master's and each tenant's error.log, in PHP-FPM's line format."""

from __future__ import annotations

import os
import re
import sys
import time
from datetime import datetime

LEVELS = {"alert": 0, "error": 1, "warning": 2, "notice": 3, "debug": 4}
_TS = "%d-%b-%Y %H:%M:%S"
LINE = re.compile(r"^\[(\d{2}-\w{3}-\d{4} \d{2}:\d{2}:\d{2})\] (\w+): (.*)$")


def timestamp(t: float | None = None) -> str:
    return time.strftime(_TS, time.localtime(t))


def parse_timestamp(s: str) -> float:
    return datetime.strptime(s, _TS).timestamp()


class LogFile:
    """An append-only log that can be reopened (logrotate, SIGUSR1).

    A bare O_APPEND descriptor and one write() per line, no Python file object:
    each line lands whole even with workers appending too, and a master with a
    thousand tenants does not hold a thousand 8 kB buffers.
    """

    def __init__(self, path: str, level: str = "debug") -> None:
        self.path = path
        self.threshold = LEVELS[level]
        self._fd: int | None = None
        self.reopen()

    def reopen(self) -> None:
        if self.path == "stderr":
            self._fd = sys.stderr.fileno()
            return
        old = self._fd
        os.makedirs(os.path.dirname(self.path), mode=0o750, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                           0o640)
        os.chmod(self.path, 0o640)
        if old is not None:
            os.close(old)

    def write(self, level: str, message: str) -> None:
        if LEVELS[level] > self.threshold or self._fd is None:
            return
        stamp = f"[{timestamp()}] {level.upper()}: "
        self.append("".join(f"{stamp}{line}\n" for line in message.splitlines() or [""]))

    def append(self, text: str) -> None:
        """Text as it is (slow.log entries carry their own header lines)."""
        if self._fd is not None:
            os.write(self._fd, text.encode(errors="replace"))

    def fileno(self) -> int:
        """The descriptor, for a worker that writes lines itself (python's access.log)."""
        assert self._fd is not None, "closed"
        return self._fd

    def close(self) -> None:
        if self._fd is not None and self.path != "stderr":
            os.close(self._fd)
        self._fd = None


class TenantLog:
    """A tenant's error.log: the master's events for it and its workers' output."""

    def __init__(self, name: str, log_dir: str) -> None:
        self.name = name
        self.dir = log_dir
        self.error = LogFile(os.path.join(log_dir, "error.log"))
        self._slow: LogFile | None = None  # opened on the first slow request
        self._access: LogFile | None = None  # written by python workers themselves

    def slow(self, pid: int, script: str | None, frames: list[str] | None,
             why_not: str = "") -> None:
        """One slow.log entry in PHP-FPM's format; without frames, the reason in their place."""
        if self._slow is None:
            self._slow = LogFile(os.path.join(self.dir, "slow.log"))
        lines = [f"\n[{timestamp()}]  [pool {self.name}] pid {pid}",
                 f"script_filename = {script or 'unknown'}"]
        lines += frames if frames or not why_not else [f"(no backtrace: {why_not})"]
        self._slow.append("\n".join(lines) + "\n")

    def event(self, level: str, message: str) -> None:
        self.error.write(level, f"[pool {self.name}] {message}")

    def worker_said(self, pid: int, stream: str, line: str) -> None:
        # escape like FPM does so one worker line stays one log line
        text = line.replace("\\", "\\\\").replace('"', '\\"')
        self.error.write("warning", f'[pool {self.name}] child {pid} said into {stream}: "{text}"')

    def access_fd(self) -> int:
        """access.log for python workers, which write their own lines to it (O_APPEND,
        so lines of concurrent workers never interleave mid-line); a reopen reaches the
        workers started after it."""
        if self._access is None:
            self._access = LogFile(os.path.join(self.dir, "access.log"))
        return self._access.fileno()

    def _files(self) -> list[LogFile]:
        return [f for f in (self.error, self._slow, self._access) if f is not None]

    def reopen(self) -> None:
        for f in self._files():
            f.reopen()

    def close(self) -> None:
        for f in self._files():
            f.close()
