"""Dropping to the tenant's identity: the last steps before exec."""

from __future__ import annotations

import os
import resource
import select
import signal

import prctl

# what a worker with open_files = 0 inherits: the limit the master was started with,
# not the one it raised for itself (see raise_own_nofile)
_inherited_nofile: tuple[int, int] | None = None


NOFILE_WANTED = 1 << 20  # the master's own descriptor limit, where the kernel allows it


def raise_own_nofile() -> tuple[int, int]:
    """The master holds a socket and log files per tenant: a thousand tenants need more
    than the usual 1024 descriptors. Workers still get the original limit."""
    global _inherited_nofile
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    _inherited_nofile = (soft, hard)
    # root (with CAP_SYS_RESOURCE) may go past the hard limit it was started with, up to
    # the kernel's fs.nr_open: an idle tenant holds one descriptor (its socket), an active
    # one a few more per worker (the package's unit sets LimitNOFILE itself); without the
    # capability, the hard limit it was given
    try:
        with open("/proc/sys/fs/nr_open") as f:
            ceiling = int(f.read())
    except (OSError, ValueError):
        ceiling = hard
    want = max(hard, min(ceiling, NOFILE_WANTED))
    if soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
        except (OSError, ValueError):  # not root, or a container's ceiling: what we may
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return soft, hard


def inherited_nofile() -> tuple[int, int] | None:
    """The limit workers get by default, for the spawn server to apply in the master's
    stead (it was started with the raised one)."""
    return _inherited_nofile


def keep_inherited_nofile(limits: tuple[int, int] | None) -> None:
    global _inherited_nofile
    _inherited_nofile = limits


def set_rlimits(open_files: int, core_dumps: bool) -> None:
    if open_files:
        resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, open_files))
    elif _inherited_nofile is not None:
        resource.setrlimit(resource.RLIMIT_NOFILE, _inherited_nofile)
    # inheriting would not do: a shell's usual soft limit of 0 writes no core either
    core = resource.RLIM_INFINITY if core_dumps else 0
    resource.setrlimit(resource.RLIMIT_CORE, (core, core))


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
