"""The cgroup interface both drivers implement, and the file I/O they share."""

from __future__ import annotations

import contextlib
import errno
import os
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    memory: int | None = None  # bytes
    cpu: float | None = None  # cores
    pids: int | None = None
    # CPU weight under contention, in processes' worth: a tenant's cgroup competes
    # as one scheduling entity, so with the default weight its max_children workers
    # together would get what one process gets (see weight_v1/weight_v2)
    weight: int = 1


def weight_v1(processes: int) -> int:
    """cpu.shares for `processes` ordinary processes' worth (1024 each; kernel max 262144)."""
    return max(2, min(262144, 1024 * processes))


def weight_v2(processes: int) -> int:
    """cpu.weight for `processes` ordinary processes' worth (100 each; range 1..10000)."""
    return max(1, min(10000, 100 * processes))


@dataclass(frozen=True)
class Usage:
    """Figures read from the kernel; None where this hierarchy cannot tell."""

    memory_current: int | None
    memory_limit: int | None
    oom_kills: int | None
    cpu_seconds: float | None
    pids_current: int | None


CFS_PERIOD_US = 100_000


class CgroupError(OSError):
    pass


def read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None


def read_int(path: str) -> int | None:
    text = read(path)
    if text is None:
        return None
    text = text.strip()
    return int(text) if text.lstrip("-").isdigit() else None


def write(path: str, value: str) -> None:
    try:
        with open(path, "w") as f:
            f.write(value)
    except OSError as e:
        raise CgroupError(e.errno, f"cannot write {value!r} to {path}: {e.strerror}") from None


def keyed(path: str) -> dict[str, int]:
    """"key value" lines (memory.events, memory.oom_control, cpu.stat)."""
    out: dict[str, int] = {}
    for line in (read(path) or "").splitlines():
        k, _, v = line.partition(" ")
        with contextlib.suppress(ValueError):
            out[k] = int(v)
    return out


def make_dir(path: str) -> None:
    os.makedirs(path, mode=0o755, exist_ok=True)


def remove_dir(path: str, timeout: float = 2.0) -> None:
    """rmdir a cgroup; a just-killed task can keep it busy for a moment."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError as e:
            if e.errno != errno.EBUSY or time.monotonic() > deadline:
                raise CgroupError(e.errno, f"cannot remove cgroup {path}: {e.strerror}") from None
            time.sleep(0.02)


def procs(path: str) -> list[int]:
    return [int(x) for x in (read(os.path.join(path, "cgroup.procs")) or "").split()]


class TenantCgroup:
    """One tenant's cgroup; the drivers fill in where each figure lives."""

    name: str

    def create(self) -> None:
        raise NotImplementedError

    def apply(self, limits: Limits) -> None:
        raise NotImplementedError

    def join_files(self) -> list[str]:
        """cgroup.procs files a worker writes "0" into to join."""
        raise NotImplementedError

    def usage(self) -> Usage:
        raise NotImplementedError

    def oom_kills(self) -> int | None:
        """Just the OOM kill count: read every second per tenant, so one file only."""
        raise NotImplementedError

    def pids(self) -> list[int]:
        raise NotImplementedError

    def remove(self) -> None:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError


class Driver:
    version: int
    parent: str  # the tenants' parent, relative to each hierarchy's root
    unit: str  # the leading part of `parent` that a systemd unit owns ("" when none)

    def tenant(self, name: str) -> TenantCgroup:
        raise NotImplementedError

    def check(self) -> list[str]:
        """What is missing for limits to work (empty: all fine)."""
        raise NotImplementedError

    def parent_dirs(self) -> list[str]:
        raise NotImplementedError

    def set_parent_weight(self, processes: int) -> None:
        """The tenants' parent weighs what all their workers together would (each tenant
        weighs its max_children): with the default, every tenant of the host together would
        get what one process in the root group gets, next to the web server and the
        database. Best effort: a parent the master does not own keeps its weight."""

    def cleanup(self) -> None:
        """Remove the (now empty) parent the tenants lived under; the master is leaving."""
        for path in self.parent_dirs():
            with contextlib.suppress(OSError):  # not empty: a tenant's cgroup is still busy
                os.rmdir(path)
