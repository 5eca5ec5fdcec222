"""Dropping to the tenant's identity: the last steps before exec."""

from __future__ import annotations

import os
import resource
import select
import signal

import prctl


def set_rlimits(open_files: int, core_dumps: bool) -> None:
    if open_files:
        resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, open_files))
    if not core_dumps:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def drop_capability_bounding_set() -> None:
    """Needs CAP_SETPCAP, so before setuid; afterwards nothing can ever regain a capability."""
    prctl.capbset.limit()


def drop_to(uid: int, gid: int) -> None:
    """Groups first, then gid, then uid: after setuid nothing else can be dropped."""
    os.setgroups([gid])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    if os.getuid() != uid or os.geteuid() != uid or os.getgid() != gid:
        raise OSError("identity did not change")


def no_new_privs() -> None:
    """setuid binaries and file capabilities no longer raise privileges across exec."""
    prctl.set_no_new_privs(1)


def die_with_master(lifeline: int) -> None:
    """A worker must not outlive a master that died without cleaning up.

    Set after setuid: changing credentials clears PDEATHSIG. `lifeline` is the
    write end of a pipe whose read end only the master holds; if the master
    died before PDEATHSIG was set, the pipe is broken and the worker gives up.
    """
    prctl.set_pdeathsig(signal.SIGKILL)
    p = select.poll()
    p.register(lifeline, select.POLLOUT)
    for _fd, ev in p.poll(0):
        if ev & select.POLLERR:
            raise OSError("the master is gone")
