"""fork + the child's sequence + exec, reporting a failed step to the master.

The child never returns into the master's code: every path ends in exec or
os._exit. A failed step writes "step: reason" into a close-on-exec pipe, so the
master can tell "exec failed: no such file" from "exited at once". The fork is the
spawn server's (spawner.py) once the master has one: the same child, still the
master's, without copying a master that holds thousands of tenants.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
from dataclasses import dataclass, field
from typing import Protocol

from tenantfpm.sandbox import namespaces, privileges, rootfs, seccomp
from tenantfpm.wire.fds import HOST_PID_ENV

_ALL_SIGNALS = set(signal.Signals)
_MAX_FD = os.sysconf("SC_OPEN_MAX")
# [pm] scheduling_policy: Linux's names, as chrt and systemd's CPUSchedulingPolicy= use them
SCHEDULING_POLICIES = {"batch": os.SCHED_BATCH, "other": os.SCHED_OTHER}


@dataclass(frozen=True)
class Sandbox:
    """The per-tenant part of the sequence, planned by the master once per (re)start."""

    hostname: str
    root: rootfs.RootSpec
    steps: list[rootfs.Step]
    pid_namespace: bool = True
    netns: str | None = None  # handle of the tenant's network namespace; None: the host's


@dataclass(frozen=True)
class WarmStart:
    """The program a PHP zygote runs, as a warm process execs it before its tenant is known
    (host paths: the tenant's view does not exist yet). Plans with equal ones share warm
    processes."""

    program: str
    preload: str | None = None  # LD_PRELOAD: the SAPI library, for the php-cgi engine
    scan_dir: str | None = None  # the conf.d whose extensions it loads ahead


@dataclass(frozen=True)
class Plan:
    argv: list[str]
    env: dict[str, str]
    cwd: str
    uid: int
    gid: int
    listen_fd: int
    open_files: int = 0
    core_dumps: bool = False
    catch_output: bool = True
    cgroup_procs: list[str] = field(default_factory=list)  # files to write "0" into
    scheduling_policy: str = "other"  # of SCHEDULING_POLICIES, set whatever the master has
    pass_fds: tuple[int, ...] = ()  # become the worker's fds 3, 4, ... in this order
    sandbox: Sandbox | None = None
    # what a warm process for this plan execs (spawner.py may hand the plan to one)
    warm: WarmStart | None = None

    @property
    def new_pid_namespace(self) -> bool:
        """Whether the process is PID 1 of a PID namespace of its own, whoever forks it."""
        return self.sandbox is not None and self.sandbox.pid_namespace


@dataclass
class Spawned:
    pid: int
    stdout: int | None  # read ends, owned by the caller
    stderr: int | None
    errpipe: int
    warm: bool = False  # a warm process took the plan (spawner.py): no exec


def default_signals() -> None:
    """Every handler back to the default: a new child of the master's, or the server's,
    must run none of theirs."""
    for sig in _ALL_SIGNALS:
        if sig not in (signal.SIGKILL, signal.SIGSTOP):
            with contextlib.suppress(OSError, ValueError):
                signal.signal(sig, signal.SIG_DFL)
    signal.set_wakeup_fd(-1)


def _child(plan: Plan, out_w: int | None, err_w: int | None, errpipe_w: int) -> None:
    step = "start"
    try:
        step = "signals"
        default_signals()
        step = "fds"
        os.dup2(plan.listen_fd, 0, inheritable=True)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(out_w if out_w is not None else devnull, 1, inheritable=True)
        os.dup2(err_w if err_w is not None else devnull, 2, inheritable=True)
        # out of the way of the targets first: a source may sit on another's target number
        first_free = 3 + len(plan.pass_fds)
        errpipe_w = fcntl.fcntl(errpipe_w, fcntl.F_DUPFD_CLOEXEC, first_free)
        moved = [fcntl.fcntl(fd, fcntl.F_DUPFD, first_free) for fd in plan.pass_fds]
        for target, fd in enumerate(moved, start=3):
            os.dup2(fd, target, inheritable=True)
        os.closerange(first_free, errpipe_w)
        os.closerange(errpipe_w + 1, _MAX_FD)
        # the host's pid, for logs and correlation; getmypid() says 1 in a PID namespace
        env = {**plan.env, HOST_PID_ENV: os.readlink("/proc/self")}
        step = "cgroup"
        for path in plan.cgroup_procs:
            with open(path, "w") as f:
                f.write("0")
        step = "scheduling policy"
        os.sched_setscheduler(0, SCHEDULING_POLICIES[plan.scheduling_policy],
                              os.sched_param(0))
        box = plan.sandbox
        if box is not None:
            if box.netns:
                step = "network namespace"
                namespaces.join_network(box.netns)
            step = "namespaces"
            namespaces.enter_worker_namespaces(box.hostname)
            step = "filesystem"
            rootfs.build(box.root.new_root, box.steps)
        step = "rlimits"
        privileges.set_rlimits(plan.open_files, plan.core_dumps)
        if box is not None:
            step = "capabilities"
            privileges.drop_capability_bounding_set()
        step = "setuid"
        privileges.drop_to(plan.uid, plan.gid)
        if box is not None:
            step = "no_new_privs"
            privileges.no_new_privs()
            step = "seccomp"
            seccomp.install(channel=bool(plan.pass_fds),
                            unix_listener=seccomp.listens_on_unix(0))
        step = "pdeathsig"
        privileges.die_with_master(errpipe_w)
        step = "chdir"
        os.chdir(plan.cwd)
        step = "exec"
        signal.pthread_sigmask(signal.SIG_SETMASK, set())
        os.execve(plan.argv[0], plan.argv, env)
    except BaseException as e:
        reason = getattr(e, "strerror", None) or str(e) or type(e).__name__
        filename = getattr(e, "filename", None)
        if filename:
            reason += f": {filename}"
        try:
            os.write(errpipe_w, f"{step}: {reason}".encode()[:512])
        finally:
            os._exit(127)


class Forker(Protocol):
    def fork(self, plan: Plan, out_w: int | None, err_w: int | None,
             errpipe_w: int) -> tuple[int, bool] | None:
        """(pid, whether a warm process took the plan); None: fork here."""

    def close(self) -> None: ...


# the master's spawn server (spawner.py), once it has one; None: fork here
server: Forker | None = None


def _fork(plan: Plan, out_w: int | None, err_w: int | None, errpipe_w: int) -> int:
    """Fork here; signals are blocked around fork so no handler runs in the child."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, _ALL_SIGNALS)
    try:
        pid = namespaces.fork(plan.new_pid_namespace)
        if pid == 0:
            _child(plan, out_w, err_w, errpipe_w)  # never returns
    finally:
        # only the parent gets here: the child always execs or _exits
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
    return pid


def spawn(plan: Plan) -> Spawned:
    """Start a process as the plan says, by the spawn server when there is one (the
    master's child either way)."""
    out_r = out_w = err_r = err_w = None
    if plan.catch_output:
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
    errpipe_r, errpipe_w = os.pipe()  # both close-on-exec (PEP 446)
    try:
        forked = server.fork(plan, out_w, err_w, errpipe_w) if server is not None else None
        pid, warm = forked if forked is not None else (_fork(plan, out_w, err_w, errpipe_w),
                                                       False)
    except BaseException:
        for fd in (out_r, out_w, err_r, err_w, errpipe_r, errpipe_w):
            if fd is not None:
                os.close(fd)
        raise
    for fd in (out_w, err_w, errpipe_w):
        if fd is not None:
            os.close(fd)
    for fd in (out_r, err_r, errpipe_r):
        if fd is not None:
            os.set_blocking(fd, False)
    return Spawned(pid, out_r, err_r, errpipe_r, warm)
