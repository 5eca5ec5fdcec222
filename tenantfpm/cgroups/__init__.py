"""Per-tenant cgroups behind one interface; the driver is chosen by detection.

A tenant's workers join `<mount>/<cgroup_parent>/<name>` (v2) or that path in
each v1 controller hierarchy. The master creates it, sets the limits, reads
the figures status shows, and removes it when the tenant goes away. Workers
join it themselves (they write "0" into the cgroup.procs files listed by
`join_files`) before they drop root.
"""

from __future__ import annotations

import os

from tenantfpm.cgroups import mountinfo
from tenantfpm.cgroups.base import Driver, Limits, TenantCgroup, Usage
from tenantfpm.cgroups.v1 import V1Driver
from tenantfpm.cgroups.v2 import V2Driver

__all__ = ["Driver", "Limits", "TenantCgroup", "Usage", "V1Driver", "V2Driver", "detect"]

def detect(parent: str, mount: str = "/sys/fs/cgroup",
           mountinfo_path: str = mountinfo.PATH) -> Driver:
    """v2 when the mount point itself is cgroup2 (unified), v1 otherwise (legacy/hybrid)."""
    mounts = mountinfo.read(mountinfo_path)
    real = os.path.realpath(mount)
    on_top = [m.fstype for m in mounts if m.target == real][-1:]  # the last mount wins
    if on_top == ["cgroup2"]:
        return V2Driver(mount, parent)
    return V1Driver.from_mounts(mounts, parent)
