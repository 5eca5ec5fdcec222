"""Namespaces: the PID namespace the master forks into, and the ones a worker unshares.

The worker is PID 1 of a PID namespace of its own without a second fork: the
master unshares CLONE_NEWPID (which affects only its future children), forks,
and returns to its own PID namespace with setns. The worker's parent is then
the master itself, so PR_SET_PDEATHSIG and waitpid() work as for any child.
php-cgi installs a SIGTERM handler, so as PID 1 it still honours the master's
graceful SIGTERM; SIGKILL always works.
"""

from __future__ import annotations

import os

from tenantfpm.sandbox import linux

WORKER_NAMESPACES = (linux.CLONE_NEWNS | linux.CLONE_NEWIPC | linux.CLONE_NEWUTS
                     | linux.CLONE_NEWCGROUP)

_own_pid_ns: int | None = None


def fork(new_pid_namespace: bool) -> int:
    """os.fork(); with `new_pid_namespace` the child is PID 1 of a fresh PID namespace.

    Only the parent returns to its own namespace: the child could not (a
    process never leaves for an ancestor namespace) and must not try.
    """
    global _own_pid_ns
    if not new_pid_namespace:
        return os.fork()
    if _own_pid_ns is None:
        _own_pid_ns = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    linux.unshare(linux.CLONE_NEWPID)
    try:
        pid = os.fork()
    except BaseException:
        linux.setns(_own_pid_ns, linux.CLONE_NEWPID)
        raise
    if pid:
        linux.setns(_own_pid_ns, linux.CLONE_NEWPID)
    return pid


def join_network(path: str) -> None:
    """Enter the tenant's network namespace (kept alive by a bind-mounted handle)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        linux.setns(fd, linux.CLONE_NEWNET)
    finally:
        os.close(fd)


def enter_worker_namespaces(hostname: str) -> None:
    """Mount, IPC, UTS and cgroup namespaces of the worker's own (cgroup: after joining it)."""
    linux.unshare(WORKER_NAMESPACES)
    linux.sethostname(hostname)


def isolate_master_mounts() -> None:
    """The master's own mount namespace, receiving the host's mounts but not giving back.

    Tenant /tmp filesystems and network namespace handles are mounted here, so
    they vanish with the master however it dies, and never clutter the host's
    mount table.
    """
    linux.unshare(linux.CLONE_NEWNS)
    linux.mount(None, "/", None, linux.MS_REC | linux.MS_SLAVE)
