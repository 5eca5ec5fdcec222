"""The spawn server: the master's sandboxed processes forked by a small process of its own.

fork() copies the caller's page tables and descriptor table, and the child's exec tears
the copy down again. The master holds every tenant's objects and listening socket: with
10,000 tenants (115 MB, 10,000 descriptors) that took 9-17 ms of each cold start
(`perf trace`: clone 3.5-5.5 ms, close_range 2-3.8 ms, execve 3.8-6.2 ms). This server is
a fresh interpreter exec'd at the master's start with only the sandbox imported, so a
fork costs the same whatever the number of tenants.

Each child is cloned with CLONE_PARENT: it is the master's child, as if the master had
forked it (its SIGCHLD, waitpid and PR_SET_PDEATHSIG are the master's), and the server
keeps no children. The master waits for the pid; a server that is gone or does not
answer is dropped, and the master forks by itself as before. (A server stopped for 5 s
between its clone and its answer would leave that child unknown to the master; only
root can stop it.)

  master -> server   pickled (Plan, output caught or not, the workers' default descriptor
                     limit) + SCM_RIGHTS: the error pipe's write end, the listening
                     socket, [stdout, stderr,] the pass_fds
  server -> master   the child's pid, or minus the errno of a clone that failed; and
                     whether a warm process took the plan (below)

The warm PHP. A PHP zygote's start is mostly PHP's exec and the loading of its
libraries (28-35 ms of a 50 ms `add`, docs/performance.md), none of which depends on the
tenant. So, unless the master's `warm_php` is off, the server keeps one process ahead for
the last kind of PHP plan it saw (`Plan.warm`): cloned as a sandboxed zygote is (the
master's child, PID 1 of a PID namespace of its own), it execs PHP with `-W`
(sapi/warm.c), loads the conf.d's extensions, says "ready" and waits, building nothing
yet. A plan of that kind that finds it ready goes to it as an order (warm.py), which it
carries out step for step as _child() would (descriptors, cgroups, namespaces, root,
identity, filter), and the server starts the next one after answering; otherwise the
plan is cloned as usual. A warm process that dies unused is reaped by the master as an
unknown child, and noticed here by its closed channel.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import os
import pickle
import select
import signal
import socket
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import prctl

from tenantfpm.sandbox import linux, privileges, warm
from tenantfpm.sandbox.spawn import Plan, WarmStart, _child, default_signals

REPLY = struct.Struct("qq")  # pid, and 1 if a warm process took the plan
MAX_PLAN = 1 << 16  # one message, well within a socket's default send buffer
MAX_FDS = 3 + 8
SERVER_FD = 3  # the server's end of its channel
ANSWER_WITHIN = 5.0  # seconds; a clone takes about a millisecond

_py = ctypes.PyDLL(None, use_errno=True)  # the GIL stays held across the clone, as os.fork
_py.syscall.restype = ctypes.c_long
_py.syscall.argtypes = [ctypes.c_long, ctypes.c_ulong, ctypes.c_void_p, ctypes.c_void_p,
                        ctypes.c_void_p, ctypes.c_ulong]


def clone(flags: int) -> int:
    """os.fork() with clone flags of our own (CLONE_PARENT, CLONE_NEWPID): Python's fork
    hooks around the raw system call, as os.fork() runs them around fork()."""
    ctypes.pythonapi.PyOS_BeforeFork()
    pid = _py.syscall(linux.SYS_CLONE, flags | signal.SIGCHLD, None, None, None, 0)
    if pid == 0:
        ctypes.pythonapi.PyOS_AfterFork_Child()
        return 0
    err = ctypes.get_errno()
    ctypes.pythonapi.PyOS_AfterFork_Parent()
    if pid < 0:
        raise OSError(err, f"clone: {os.strerror(err)}")
    return pid


# --- the warm PHP ----------------------------------------------------------------

WARM_FAILURES_MAX = 3  # warm processes in a row that died unused: then none of that kind
WARM_FD = 3  # its end of the order channel (sapi/warm.c)


@dataclass
class Warm:
    """One warm process, and what it was started as."""

    start: WarmStart
    pid: int
    sock: socket.socket
    ready: bool = False

    def _events(self) -> int:
        poller = select.poll()
        poller.register(self.sock, select.POLLIN)
        return sum(ev for _fd, ev in poller.poll(0))

    def usable(self) -> bool:
        """Ready and alive; reads its "ready" if it has come."""
        if not self.ready and self._events() & select.POLLIN:
            try:
                said = self.sock.recv(16, socket.MSG_DONTWAIT)
            except OSError:
                said = b""
            if said != b"ready":
                return False
            self.ready = True
        return self.ready and not self._events()  # nothing more to read, no hang-up

    def ended(self) -> bool:
        return bool(self._events() & (select.POLLHUP | select.POLLERR))

    def close(self) -> None:
        """Its channel closed: it ends (or has ended) on its own."""
        self.sock.close()


def _warm_child(start: WarmStart, fd: int) -> None:
    """The warm process before its exec: the master's child in a PID namespace of its own,
    root, in the master's mount namespace until its order."""
    try:
        # it starts on CPU time nobody else wants: a zygote that was handed the last one
        # starts PHP at the same moment (its order sets the tenant's policy)
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        default_signals()
        prctl.set_pdeathsig(signal.SIGKILL)  # its parent is the master (CLONE_PARENT)
        # getppid() says 0 across a PID namespace: a server that died with the master
        # before the line above left the channel hung up
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        if any(ev & select.POLLHUP for _fd, ev in poller.poll(0)):
            os._exit(0)
        devnull = os.open(os.devnull, os.O_RDWR)
        for target in (0, 1, 2):
            os.dup2(devnull, target)
        os.dup2(fd, WARM_FD)
        os.closerange(WARM_FD + 1, os.sysconf("SC_OPEN_MAX"))
        argv = [start.program, "-W"]
        for name in warm.extensions(start.scan_dir):
            argv += ["-P", name]
        env = {"LD_PRELOAD": start.preload} if start.preload else {}
        signal.pthread_sigmask(signal.SIG_SETMASK, set())
        os.execve(start.program, argv, env)
    finally:
        os._exit(127)


class WarmKeeper:
    """The server's warm process, if any, and whether to make the next one."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.current: Warm | None = None
        self.failures = 0  # warm processes in a row that died unused

    def wanted(self, plan: Plan) -> bool:
        """Whether a warm process may serve this plan (one PHP namespace of its own)."""
        return (self.enabled and plan.warm is not None and plan.sandbox is not None
                and plan.new_pid_namespace)

    def take(self, plan: Plan) -> Warm | None:
        w = self.current
        if w is None or w.start != plan.warm:
            return None
        if not w.usable():
            if not w.ready and not w.ended():
                return None  # still starting: this plan is cloned, the warm one waits
            self.drop()
            self.failures += 1
            return None
        self.current = None
        self.failures = 0
        return w

    def give_back(self, w: Warm) -> None:
        """A warm process taken for a plan it could not serve: still the next one's."""
        self.current = w

    def drop(self) -> None:
        if self.current is not None:
            self.current.close()
            self.current = None

    def refill(self, start: WarmStart) -> None:
        """Start the next warm process of this kind, unless one is on its way."""
        w = self.current
        if w is not None and w.start == start:
            return
        if w is not None:  # another kind: the newest plan's kind wins
            self.drop()
            self.failures = 0
        if self.failures >= WARM_FAILURES_MAX:
            if self.failures == WARM_FAILURES_MAX:  # said once, on the master's stderr
                self.failures += 1
                print(f"tenantfpm spawn server: {WARM_FAILURES_MAX} warm PHP processes in a "
                      f"row ended before their tenant ({start.program}): none from now on, "
                      "zygotes exec PHP themselves", file=sys.stderr, flush=True)
            return
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            pid = clone(linux.CLONE_PARENT | linux.CLONE_NEWPID)
        except OSError:
            ours.close()
            theirs.close()
            self.failures += 1
            return
        if pid == 0:
            _warm_child(start, theirs.fileno())  # never returns
        theirs.close()
        self.current = Warm(start, pid, ours)


def _to_warm(keeper: WarmKeeper, plan: Plan, caught: bool, fds: list[int]) -> int | None:
    """The pid of the warm process that took the plan as its order; None: clone it."""
    w = keeper.take(plan)
    if w is None:
        return None
    order = warm.order(plan, caught, w.pid, privileges.inherited_nofile())
    if order is None:  # beyond a warm process's bounds: still the next plan's
        keeper.give_back(w)
        return None
    try:
        socket.send_fds(w.sock, [order], fds)
    except OSError:  # it died since take()
        return None
    finally:
        w.close()  # the order outlives its sender's end
    return w.pid


# --- the server -----------------------------------------------------------------


def _one(sock: socket.socket, keeper: WarmKeeper) -> bool:
    """Serve one order; False when the master has closed the channel."""
    try:
        data, fds, _flags, _addr = socket.recv_fds(sock, MAX_PLAN, MAX_FDS)
    except InterruptedError:
        return True
    if not data:
        return False
    try:
        plan, caught, nofile = pickle.loads(data)
        privileges.keep_inherited_nofile(nofile)
        errpipe_w, listen_fd = fds[0], fds[1]
        out_w, err_w = (fds[2], fds[3]) if caught else (None, None)
        plan = dataclasses.replace(plan, listen_fd=listen_fd,
                                   pass_fds=tuple(fds[4 if caught else 2:]))
        wanted = keeper.wanted(plan)
        pid = _to_warm(keeper, plan, caught, fds) if wanted else None
        warm_taken = pid is not None
        if pid is None:
            flags = linux.CLONE_PARENT | (linux.CLONE_NEWPID if plan.new_pid_namespace else 0)
            try:
                pid = clone(flags)
            except OSError as e:
                pid = -(e.errno or 1)
            if pid == 0:
                _child(plan, out_w, err_w, errpipe_w)  # never returns
        sock.send(REPLY.pack(pid, int(warm_taken)))
        if wanted and plan.warm is not None:  # the next one, off the answer's path
            keeper.refill(plan.warm)
    finally:
        for fd in fds:
            os.close(fd)
    return True


def serve(fd: int, warm_php: bool) -> None:
    """The server's life: orders until the master closes the channel or dies."""
    prctl.set_pdeathsig(signal.SIGKILL)
    if os.getppid() == 1:  # the master died before that
        return
    os.closerange(SERVER_FD + 1, os.sysconf("SC_OPEN_MAX"))
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT,
                signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, signal.SIG_IGN)  # the master's signals: its own to act on
    sock = socket.socket(fileno=fd)
    keeper = WarmKeeper(warm_php)
    while _one(sock, keeper):
        pass
    keeper.drop()


# --- the master's side ------------------------------------------------------------


class Server:
    """The master's handle on its spawn server."""

    def __init__(self, pid: int, sock: socket.socket, log: Callable[[str, str], None]) -> None:
        self.pid = pid
        # signalled through a pidfd: the master reaps the server like any child of its
        # own, and its pid may name another process by the time it is killed
        self.pidfd = os.pidfd_open(pid)
        self.sock = sock
        self.log = log

    @classmethod
    def start(cls, log: Callable[[str, str], None], warm_php: bool = False) -> Server | None:
        """Exec the server; None (the master forks by itself) if it cannot start. Not a
        subprocess.Popen: the master's waitpid(-1) reaps it, which Popen would race."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        package_home = str(Path(__file__).resolve().parents[2])
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PYTHONPATH": package_home}
        try:
            pid = os.posix_spawn(
                sys.executable, [sys.executable, "-s", "-m", "tenantfpm.sandbox.spawner",
                                 *(["--warm-php"] if warm_php else [])], env,
                file_actions=[(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                              (os.POSIX_SPAWN_DUP2, theirs.fileno(), SERVER_FD)],
                setsigmask=(), setsigdef=set(signal.Signals) - {signal.SIGKILL, signal.SIGSTOP})
        except OSError as e:
            ours.close()
            log("warning", f"spawn server: cannot start it ({e.strerror or e}): the master "
                           "forks its processes itself")
            return None
        finally:
            theirs.close()
        ours.settimeout(ANSWER_WITHIN)
        return cls(pid, ours, log)

    def fork(self, plan: Plan, out_w: int | None, err_w: int | None,
             errpipe_w: int) -> tuple[int, bool] | None:
        """The child's pid, and whether a warm process took the plan; None if the server
        is gone (then the caller forks). A clone the kernel refused raises OSError, as
        os.fork() would."""
        if self.sock.fileno() < 0:
            return None
        caught = out_w is not None and err_w is not None
        fds = [errpipe_w, plan.listen_fd, *((out_w, err_w) if caught else ()),
               *plan.pass_fds]
        message = pickle.dumps((dataclasses.replace(plan, listen_fd=-1, pass_fds=()), caught,
                                privileges.inherited_nofile()))
        if len(message) > MAX_PLAN:  # a plan this large (its [env]) is forked here
            return None
        try:
            socket.send_fds(self.sock, [message], fds)  # type: ignore[list-item]
            reply = self.sock.recv(REPLY.size)
            if len(reply) != REPLY.size:
                raise OSError("the spawn server closed its channel")
        except OSError as e:
            self._drop(f"spawn server: {e.strerror or e}: the master forks its processes "
                       "itself from now on")
            return None
        pid, warm_taken = REPLY.unpack(reply)
        if pid < 0:
            raise OSError(-pid, os.strerror(-pid))
        return pid, bool(warm_taken)

    def _drop(self, why: str) -> None:
        self.log("warning", why)
        self.close()

    def close(self) -> None:
        """The server ends when its channel closes, and with the master in any case; one
        that stopped answering is killed."""
        if self.sock.fileno() < 0:
            return
        self.sock.close()
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
        os.close(self.pidfd)


if __name__ == "__main__":
    serve(SERVER_FD, "--warm-php" in sys.argv[1:])
