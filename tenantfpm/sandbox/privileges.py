"""Dropping to the tenant's identity: the last step before exec."""

from __future__ import annotations

import os
import resource
import signal

import prctl


def set_rlimits(open_files: int, core_dumps: bool) -> None:
    if open_files:
        resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, open_files))
    if not core_dumps:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def drop_to(uid: int, gid: int) -> None:
    """Groups first, then gid, then uid: after setuid nothing else can be dropped."""
    os.setgroups([gid])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    if os.getuid() != uid or os.geteuid() != uid or os.getgid() != gid:
        raise OSError("identity did not change")


def die_with_master() -> None:
    """A worker must not outlive a master that died without cleaning up."""
    prctl.set_pdeathsig(signal.SIGKILL)
