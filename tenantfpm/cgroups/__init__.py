"""Per-tenant cgroups behind one interface; the driver is chosen by detection.

A tenant's workers join `<mount>/<cgroup_parent>/<name>` (v2) or that path in
each v1 controller hierarchy. The master creates it, sets the limits, reads
the figures status shows, and removes it when the tenant goes away. Workers
join it themselves (they write "0" into the cgroup.procs files listed by
`join_files`) before they drop root.
"""

from __future__ import annotations

import os

from tenantfpm.cgroups import delegation, mountinfo
from tenantfpm.cgroups.base import Driver, Limits, TenantCgroup, Usage
from tenantfpm.cgroups.v1 import V1Driver
from tenantfpm.cgroups.v2 import V2Driver

__all__ = ["Driver", "Limits", "TenantCgroup", "Usage", "V1Driver", "V2Driver", "detect"]

def detect(parent: str, mount: str = "/sys/fs/cgroup",
           mountinfo_path: str = mountinfo.PATH, delegated: bool = False) -> Driver:
    """v2 when the mount point itself is cgroup2 (unified), v1 otherwise (legacy/hybrid).

    `delegated`: under a systemd unit with Delegate=yes, the tenants' parent goes under
    the unit's cgroup (cgroups/delegation.py) when the hierarchy allows it."""
    mounts = mountinfo.read(mountinfo_path)
    real = os.path.realpath(mount)
    on_top = [m.fstype for m in mounts if m.target == real][-1:]  # the last mount wins
    version = 2 if on_top == ["cgroup2"] else 1
    unit = delegation.delegated_unit(version) if delegated else None
    if unit is not None and version == 2:
        try:
            delegation.leave_unit_root(mount, unit)
        except OSError:
            unit = None  # not ours to divide after all: the root of the hierarchy, as if off
    prefix = unit.strip("/") if unit else ""  # the part of the parent that is the unit's
    if prefix:
        parent = f"{prefix}/{parent}"
    if version == 2:
        return V2Driver(mount, parent, prefix)
    return V1Driver.from_mounts(mounts, parent, prefix)
