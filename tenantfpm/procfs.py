"""What the kernel says about a worker, read from /proc without touching the data path.

A worker names itself (/proc/PID/comm is the tenant's to write, and it shows in
`stat` and `status`), so nothing here finds a field by searching text: `stat`
is split after the last ')', `status` by exact key before the first ':'.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass

# accept / accept4 syscall numbers: a worker blocked in one of them on fd 0 is idle
_ACCEPT = {"x86_64": (43, 288), "aarch64": (202, 242)}.get(platform.machine(), (43, 288))
# poll / ppoll: where a worker waits on a kept connection (pyworker/main.py _keepalive)
_POLL = {"x86_64": (7, 271), "aarch64": (73,)}.get(platform.machine(), (7, 271))
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class Sample:
    idle: bool  # blocked in accept(0, ...)
    activity: int  # context switches: changes whenever the worker did anything
    rss: int  # bytes
    cpu_seconds: float


def read_syscall(pid: int) -> tuple[int, int] | None:
    """(syscall number, first argument) the process is blocked in; None while running."""
    with open(f"/proc/{pid}/syscall") as f:
        parts = f.read().split()
    if not parts or parts[0] == "running" or parts[0] == "-1" or len(parts) < 2:
        return None
    return int(parts[0]), int(parts[1], 16)


def _in_accept(call: tuple[int, int] | None) -> bool:
    return call is not None and call[0] in _ACCEPT and call[1] == 0


def is_idle_in_accept(pid: int) -> bool:
    return _in_accept(read_syscall(pid))


@dataclass(frozen=True)
class Usage:
    rss: int  # bytes
    cpu_seconds: float


def is_waiting(pid: int) -> bool:
    """Blocked where an idle worker waits for work: accept on its socket (fd 0), or poll
    on a kept connection and its socket. What a scoreboard's "idle" must agree with."""
    try:
        call = read_syscall(pid)
    except OSError:
        return False
    return _in_accept(call) or (call is not None and call[0] in _POLL)


def usage(pid: int) -> Usage | None:
    """RSS and CPU from /proc/PID/stat alone: all a worker with a scoreboard needs read
    here (its state comes from the page); None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return _usage(stat)


def _usage(stat: str) -> Usage | None:
    try:
        fields = stat[stat.rindex(")") + 2:].split()
        utime, stime = int(fields[11]), int(fields[12])
        rss_pages = int(fields[21])
    except (ValueError, IndexError):
        return None  # not a stat line the kernel writes: the process went away mid-read
    return Usage(rss=rss_pages * PAGE, cpu_seconds=(utime + stime) / CLK_TCK)


def sample(pid: int) -> Sample | None:
    """One look at a worker without a scoreboard; None when it is gone."""
    try:
        idle = is_idle_in_accept(pid)
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
        with open(f"/proc/{pid}/status") as f:
            status = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    u = _usage(stat)
    if u is None:
        return None
    return Sample(idle=idle, activity=_switches(status), rss=u.rss, cpu_seconds=u.cpu_seconds)


_SWITCHES = ("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")


def _switches(status: str) -> int:
    """voluntary + nonvoluntary context switches, by their exact keys."""
    total = 0
    for line in status.split("\n"):
        key, sep, value = line.partition(":")
        if sep and key in _SWITCHES:
            with_digits = value.strip()
            if with_digits.isdigit():
                total += int(with_digits)
    return total


def serving_connection(pid: int, exe: str) -> bool:
    """Has the worker exec'd `exe` and accepted a connection (a socket besides fd 0)?

    A fresh worker that takes a queued connection at once is never seen idle in
    accept(); this tells it apart from one still starting up.
    """
    try:
        if os.readlink(f"/proc/{pid}/exe") != exe:
            return False
    except OSError:
        return False
    return connection(pid) is not None


def connection(pid: int) -> str | None:
    """The accepted connection a busy worker holds ("socket:[inode]"), or None.

    A different one than at the last look means a different request, even if
    the worker was never seen idle in between.
    """
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return None
    for fd in sorted(fds, key=int):
        if fd == "0":
            continue
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:"):
            return target
    return None
