"""Per-tenant cgroups behind one interface; the driver is chosen by detection.

A tenant's workers join `<mount>/<cgroup_parent>/<name>` (v2) or that path in
each v1 controller hierarchy. The master creates it, sets the limits, reads
the figures status shows, and removes it when the tenant goes away. Workers
join it themselves (they write "0" into the cgroup.procs files listed by
`join_files`) before they drop root.
"""

from __future__ import annotations

import os

from tenantfpm.cgroups.base import Driver, Limits, TenantCgroup, Usage
from tenantfpm.cgroups.v1 import V1Driver
from tenantfpm.cgroups.v2 import V2Driver

__all__ = ["Driver", "Limits", "TenantCgroup", "Usage", "V1Driver", "V2Driver", "detect"]

CGROUP2_SUPER_MAGIC = 0x63677270


def detect(parent: str, mount: str = "/sys/fs/cgroup",
           mountinfo: str = "/proc/self/mountinfo") -> Driver:
    """v2 when the mount point itself is cgroup2 (unified), v1 otherwise (legacy/hybrid)."""
    if _fs_type(mount, mountinfo) == "cgroup2":
        return V2Driver(mount, parent)
    with open(mountinfo) as f:
        return V1Driver.from_mountinfo(f.read(), parent)


def _fs_type(path: str, mountinfo: str) -> str | None:
    real = os.path.realpath(path)
    found = None
    with open(mountinfo) as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields = left.split()
            if len(fields) > 4 and fields[4] == real:
                found = right.split()[0]  # the last mount on a point wins
    return found
