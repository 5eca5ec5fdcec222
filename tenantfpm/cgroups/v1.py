"""cgroup v1: one hierarchy per controller (memory, cpu, cpuacct, pids).

Written by hand rather than with cgroupspy: that package has no pids
controller and walks the whole tree on construction, and what is needed here
is a handful of files per tenant.
"""

from __future__ import annotations

import contextlib
import os

from tenantfpm.cgroups import base
from tenantfpm.cgroups.base import Limits, Usage
from tenantfpm.cgroups.mountinfo import Mount

CONTROLLERS = ("memory", "cpu", "cpuacct", "pids")
UNLIMITED_V1 = 1 << 62  # memory.limit_in_bytes reads 9223372036854771712 when unset


class V1Driver(base.Driver):
    version = 1

    def __init__(self, mounts: dict[str, str], parent: str, unit: str = "") -> None:
        self.mounts = mounts  # controller -> its hierarchy's mount point
        self.parent = parent
        self.unit = unit  # the part of `parent` that is not the master's (a systemd unit's)

    @classmethod
    def from_mounts(cls, mounts: list[Mount], parent: str, unit: str = "") -> V1Driver:
        found: dict[str, str] = {}
        for m in mounts:
            if m.fstype == "cgroup":
                for opt in m.super_options:
                    if opt in CONTROLLERS:
                        found.setdefault(opt, m.target)
        return cls(found, parent, unit)

    def check(self) -> list[str]:
        return [f"cgroup v1 controller {c!r} is not mounted" for c in ("memory", "cpu", "pids")
                if c not in self.mounts]

    def parent_dirs(self) -> list[str]:
        return [os.path.join(m, self.parent) for m in self.mounts.values()]

    def tenant(self, name: str) -> V1Tenant:
        return V1Tenant(self, name)

    def set_parent_weight(self, processes: int) -> None:
        cpu = self.mounts.get("cpu")
        if cpu:
            with contextlib.suppress(OSError):
                base.write(os.path.join(cpu, self.parent, "cpu.shares"),
                           str(base.weight_v1(processes)))


class V1Tenant(base.TenantCgroup):
    def __init__(self, driver: V1Driver, name: str) -> None:
        self.name = name
        self.driver = driver

    @property
    def paths(self) -> dict[str, str]:
        """The tenant's directory in each hierarchy, joined when asked (a start, a limit,
        a spawn): 10,000 idle tenants need none of these strings kept."""
        return {c: os.path.join(m, self.driver.parent, self.name)
                for c, m in self.driver.mounts.items()}

    def _file(self, controller: str, name: str) -> str | None:
        d = self.paths.get(controller)
        return os.path.join(d, name) if d else None

    def create(self) -> None:
        for path in self.paths.values():
            base.make_dir(path)

    def apply(self, limits: Limits) -> None:
        mem = self.paths.get("memory")
        if mem:
            limit = str(limits.memory) if limits.memory else "-1"
            memsw = os.path.join(mem, "memory.memsw.limit_in_bytes")
            has_memsw = os.path.exists(memsw)
            if has_memsw:  # memsw >= limit at every step: lift it, set the limit, lower it
                base.write(memsw, "-1")
            base.write(os.path.join(mem, "memory.limit_in_bytes"), limit)
            if has_memsw:  # the limit covers swap too, or a tenant could swap past it
                base.write(memsw, limit)
        cpu = self.paths.get("cpu")
        if cpu:
            base.write(os.path.join(cpu, "cpu.cfs_period_us"), str(base.CFS_PERIOD_US))
            quota = int(limits.cpu * base.CFS_PERIOD_US) if limits.cpu else -1
            base.write(os.path.join(cpu, "cpu.cfs_quota_us"), str(quota))
            base.write(os.path.join(cpu, "cpu.shares"), str(base.weight_v1(limits.weight)))
        pids = self.paths.get("pids")
        if pids:
            base.write(os.path.join(pids, "pids.max"), str(limits.pids) if limits.pids else "max")

    def join_files(self) -> list[str]:
        return [os.path.join(p, "cgroup.procs") for p in self.paths.values()]

    def usage(self) -> Usage:
        limit = None
        f = self._file("memory", "memory.limit_in_bytes")
        if f:
            raw = base.read_int(f)
            limit = raw if raw is not None and raw < UNLIMITED_V1 else None
        oom = None
        f = self._file("memory", "memory.oom_control")
        if f:
            oom = base.keyed(f).get("oom_kill")  # kernels >= 4.13
        cpu_ns = None
        f = self._file("cpuacct", "cpuacct.usage")
        if f:
            cpu_ns = base.read_int(f)
        cur = self._file("memory", "memory.usage_in_bytes")
        pids = self._file("pids", "pids.current")
        return Usage(
            memory_current=base.read_int(cur) if cur else None,
            memory_limit=limit,
            oom_kills=oom,
            cpu_seconds=cpu_ns / 1e9 if cpu_ns is not None else None,
            pids_current=base.read_int(pids) if pids else None,
        )

    def oom_kills(self) -> int | None:
        f = self._file("memory", "memory.oom_control")
        return base.keyed(f).get("oom_kill") if f else None

    def pids(self) -> list[int]:
        seen: set[int] = set()
        for p in self.paths.values():
            seen.update(base.procs(p))
        return sorted(seen)

    def remove(self) -> None:
        for path in self.paths.values():
            base.remove_dir(path)

    def describe(self) -> str:
        return ", ".join(f"{c}:{p}" for c, p in sorted(self.paths.items()))
