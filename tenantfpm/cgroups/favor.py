"""favordynmods: cheap cgroup migrations for a master that moves every new worker.

A worker joins its tenant's cgroup by writing cgroup.procs. The kernel does that
under the global cgroup_threadgroup_rwsem taken for writing, which by default
waits for an RCU grace period first: 8-16 ms per spawn on the reference machine,
a third of an ondemand pool's first request. The cgroup2 option favordynmods
keeps that lock in the mode where a writer does not wait (and from Linux 6.18
gives each process a lock of its own), for slightly dearer fork and exit. The
flag belongs to the kernel's cgroup2 root, but the lock is shared by every
hierarchy, so setting it on any cgroup2 mount (the hybrid layout's
/sys/fs/cgroup/unified too) helps a v1 host as well. Booting with
`cgroup_favordynmods=true` does the same for the whole system.

The parsing and the remount arguments are pure; `enable` is the one effect.
"""

from __future__ import annotations

from dataclasses import dataclass

from tenantfpm.cgroups import mountinfo
from tenantfpm.sandbox import linux

FLAG = "favordynmods"

# a cgroup2 remount sets the root's flags to exactly the options given: any left out
# (systemd's nsdelegate, memory_recursiveprot) would be cleared, so all are carried over
_ROOT_OPTIONS = frozenset({"nsdelegate", "favordynmods", "memory_localevents",
                           "memory_recursiveprot", "memory_hugetlb_accounting",
                           "pids_localevents"})
# ... and MS_REMOUNT also resets the mount point's own flags to what is passed
_MOUNT_FLAGS = {"ro": linux.MS_RDONLY, "nosuid": linux.MS_NOSUID, "nodev": linux.MS_NODEV,
                "noexec": linux.MS_NOEXEC, "noatime": 1024, "nodiratime": 2048,
                "relatime": 1 << 21, "strictatime": 1 << 24}


@dataclass(frozen=True)
class Cgroup2Mount:
    target: str
    mount_options: tuple[str, ...]  # per mount point: rw, nosuid, relatime ...
    root_options: tuple[str, ...]  # the cgroup2 root's: nsdelegate, favordynmods ...

    @property
    def favored(self) -> bool:
        return FLAG in self.root_options

    def remount_args(self, favor: bool = True) -> tuple[int, str]:
        """mount(2) flags and data that change nothing but favordynmods."""
        flags = linux.MS_REMOUNT
        for opt in self.mount_options:
            flags |= _MOUNT_FLAGS.get(opt, 0)
        data = {o for o in self.root_options if o in _ROOT_OPTIONS} - {FLAG}
        return flags, ",".join(sorted(data | {FLAG} if favor else data))


def find_cgroup2(text: str) -> Cgroup2Mount | None:
    """The last cgroup2 mount in this mountinfo text (the one a path lookup reaches)."""
    found = [m for m in mountinfo.parse(text) if m.fstype == "cgroup2"][-1:]
    return Cgroup2Mount(found[0].target, found[0].options, found[0].super_options) \
        if found else None


def current(mountinfo_path: str = mountinfo.PATH) -> Cgroup2Mount | None:
    with open(mountinfo_path) as f:
        return find_cgroup2(f.read())


def enable(mountinfo_path: str = mountinfo.PATH) -> str:
    """Set favordynmods; what was done, for the master's log. OSError if it cannot be."""
    mount = current(mountinfo_path)
    if mount is None:
        raise OSError("no cgroup2 mount to set it on (boot with cgroup_favordynmods=true)")
    if mount.favored:
        return f"favordynmods already set on {mount.target}"
    _remount(mount, favor=True)
    after = current(mountinfo_path)
    if after is None or not after.favored:  # e.g. not in the initial cgroup namespace
        raise OSError(f"remounting {mount.target} with favordynmods did not take")
    return f"favordynmods set on {mount.target}: workers join their cgroup without " \
           "waiting for an RCU grace period"


def restore(before: Cgroup2Mount) -> None:
    """Put the option back as `before` had it (for tests and the benchmark, which must
    leave the host as they found it)."""
    if not before.favored:
        _remount(before, favor=False)


def _remount(mount: Cgroup2Mount, favor: bool) -> None:
    flags, data = mount.remount_args(favor)
    linux.mount("cgroup2", mount.target, None, flags, data)  # the source is ignored on remount
