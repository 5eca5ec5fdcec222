"""cgroup v2: one unified hierarchy.

Controllers must be enabled in every ancestor's cgroup.subtree_control, and a
cgroup with controllers enabled for its children may hold no processes itself
(the no-internal-processes rule): tenants are leaves under `cgroup_parent`,
which only ever holds tenants.
"""

from __future__ import annotations

import contextlib
import os

from tenantfpm.cgroups import base
from tenantfpm.cgroups.base import Limits, Usage

WANTED = ("memory", "cpu", "pids")


class V2Driver(base.Driver):
    version = 2

    def __init__(self, mount: str, parent: str, unit: str = "") -> None:
        self.mount = mount
        self.parent = parent
        self.unit = unit  # the part of `parent` that is not the master's (a systemd unit's)

    @property
    def parent_path(self) -> str:
        return os.path.join(self.mount, self.parent)

    def available(self) -> set[str]:
        return set((base.read(os.path.join(self.mount, "cgroup.controllers")) or "").split())

    def check(self) -> list[str]:
        missing = [c for c in WANTED if c not in self.available()]
        return [f"cgroup v2 controller {c!r} is not available at {self.mount}" for c in missing]

    def prepare_parent(self) -> None:
        """Enable the controllers from the mount down to the parent of the tenants."""
        wanted = [c for c in WANTED if c in self.available()]
        path = self.mount
        parts = [p for p in self.parent.split("/") if p]
        for part in parts:
            self._enable(path, wanted)
            path = os.path.join(path, part)
            base.make_dir(path)
        self._enable(path, wanted)

    @staticmethod
    def _enable(path: str, wanted: list[str]) -> None:
        control = os.path.join(path, "cgroup.subtree_control")
        have = set((base.read(control) or "").split())
        missing = [c for c in wanted if c not in have]
        if missing:
            base.write(control, " ".join(f"+{c}" for c in missing))

    def parent_dirs(self) -> list[str]:
        """The levels the master made and may weigh or remove, deepest first."""
        parts = [p for p in self.parent.split("/") if p]
        keep = len([p for p in self.unit.split("/") if p])
        return [os.path.join(self.mount, *parts[:i]) for i in range(len(parts), keep, -1)]

    def set_parent_weight(self, processes: int) -> None:
        for path in self.parent_dirs():  # every level below the mount competes with siblings
            with contextlib.suppress(OSError):
                base.write(os.path.join(path, "cpu.weight"), str(base.weight_v2(processes)))

    def tenant(self, name: str) -> V2Tenant:
        return V2Tenant(self, name)


class V2Tenant(base.TenantCgroup):
    def __init__(self, driver: V2Driver, name: str) -> None:
        self.driver = driver
        self.name = name
        self.path = os.path.join(driver.parent_path, name)

    def _f(self, name: str) -> str:
        return os.path.join(self.path, name)

    def create(self) -> None:
        self.driver.prepare_parent()
        base.make_dir(self.path)

    def apply(self, limits: Limits) -> None:
        have = set((base.read(self._f("cgroup.controllers")) or "").split())
        if "memory" in have:
            base.write(self._f("memory.max"), str(limits.memory) if limits.memory else "max")
            if os.path.exists(self._f("memory.swap.max")):  # the limit covers swap too
                base.write(self._f("memory.swap.max"), "0" if limits.memory else "max")
        if "cpu" in have:
            quota = str(int(limits.cpu * base.CFS_PERIOD_US)) if limits.cpu else "max"
            base.write(self._f("cpu.max"), f"{quota} {base.CFS_PERIOD_US}")
            base.write(self._f("cpu.weight"), str(base.weight_v2(limits.weight)))
        if "pids" in have:
            base.write(self._f("pids.max"), str(limits.pids) if limits.pids else "max")

    def join_files(self) -> list[str]:
        return [self._f("cgroup.procs")]

    def usage(self) -> Usage:
        raw = (base.read(self._f("memory.max")) or "").strip()
        events = base.keyed(self._f("memory.events"))
        usec = base.keyed(self._f("cpu.stat")).get("usage_usec")
        return Usage(
            memory_current=base.read_int(self._f("memory.current")),
            memory_limit=int(raw) if raw.isdigit() else None,
            oom_kills=events.get("oom_kill"),
            cpu_seconds=usec / 1e6 if usec is not None else None,
            pids_current=base.read_int(self._f("pids.current")),
        )

    def oom_kills(self) -> int | None:
        return base.keyed(self._f("memory.events")).get("oom_kill")

    def pids(self) -> list[int]:
        return base.procs(self.path)

    def remove(self) -> None:
        base.remove_dir(self.path)

    def describe(self) -> str:
        return self.path
