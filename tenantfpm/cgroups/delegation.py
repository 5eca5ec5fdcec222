"""The master under systemd with Delegate=yes: its tenants' cgroups go under its unit's.

systemd gives a delegated service one cgroup that is the service's to divide: the
tenants then show under the unit (`systemctl status`, `systemd-cgls`), its resource
settings bound them all, and a stop reaches every worker. Whether that applies is
read, never assumed: only a process that systemd started as a service (INVOCATION_ID
set) whose own cgroup is one unit's in every hierarchy that matters (the unified one,
or each of the v1 controllers the tenants use) nests its tenants there; anything else
(a master started from a shell, a unit without delegation on v1) keeps `cgroup_parent`
under the root of each hierarchy.
"""

from __future__ import annotations

import os

from tenantfpm.cgroups import base

V1_CONTROLLERS = ("memory", "cpu", "pids")
LEAF = "master"  # v2: where the master itself moves, out of the unit's root (see below)


def own_unit_cgroup(proc_cgroup: str, version: int) -> str | None:
    """The unit cgroup (`/system.slice/tenantfpm.service`) from /proc/self/cgroup when
    every hierarchy that matters puts this process in that one unit; None otherwise."""
    paths: dict[str, str] = {}
    for line in proc_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if version == 2 and controllers == "":
            paths["unified"] = path
        elif version == 1:
            for c in controllers.split(","):
                if c in V1_CONTROLLERS:
                    paths[c] = path
    wanted = ("unified",) if version == 2 else V1_CONTROLLERS
    found = {paths.get(k) for k in wanted}
    if len(found) != 1:
        return None
    unit = found.pop()
    if version == 2 and unit is not None and unit.endswith("/" + LEAF):
        unit = unit[: -len(LEAF) - 1]  # a master that already moved (a restart in place)
    if unit is None or not unit.startswith("/") or not unit.endswith(".service"):
        return None
    if any(p in ("", ".", "..") for p in unit[1:].split("/")):
        return None
    return unit


def delegated_unit(version: int) -> str | None:
    """This master's unit cgroup if systemd started it as a service, else None."""
    if not os.environ.get("INVOCATION_ID"):
        return None
    with open("/proc/self/cgroup") as f:
        return own_unit_cgroup(f.read(), version)


def leave_unit_root(mount: str, unit: str) -> str:
    """v2's no-internal-processes rule: a cgroup that hands controllers to its children
    holds no process itself, so the master moves into `<unit>/master` before the
    tenants' parent is made beside it. Returns the leaf's path."""
    leaf = os.path.join(mount, unit.lstrip("/"), LEAF)
    base.make_dir(leaf)
    base.write(os.path.join(leaf, "cgroup.procs"), str(os.getpid()))
    return leaf
