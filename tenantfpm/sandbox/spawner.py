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
  server -> master   the child's pid, or minus the errno of a clone that failed
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import os
import pickle
import signal
import socket
import struct
import sys
from collections.abc import Callable
from pathlib import Path

import prctl

from tenantfpm.sandbox import linux, privileges
from tenantfpm.sandbox.spawn import Plan, _child

REPLY = struct.Struct("q")
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


# --- the server -----------------------------------------------------------------


def _one(sock: socket.socket) -> bool:
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
        flags = linux.CLONE_PARENT | (linux.CLONE_NEWPID if plan.new_pid_namespace else 0)
        try:
            pid = clone(flags)
        except OSError as e:
            pid = -(e.errno or 1)
        if pid == 0:
            _child(plan, out_w, err_w, errpipe_w)  # never returns
        sock.send(REPLY.pack(pid))
    finally:
        for fd in fds:
            os.close(fd)
    return True


def serve(fd: int) -> None:
    """The server's life: orders until the master closes the channel or dies."""
    prctl.set_pdeathsig(signal.SIGKILL)
    if os.getppid() == 1:  # the master died before that
        return
    os.closerange(SERVER_FD + 1, os.sysconf("SC_OPEN_MAX"))
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT,
                signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, signal.SIG_IGN)  # the master's signals: its own to act on
    sock = socket.socket(fileno=fd)
    while _one(sock):
        pass


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
    def start(cls, log: Callable[[str, str], None]) -> Server | None:
        """Exec the server; None (the master forks by itself) if it cannot start. Not a
        subprocess.Popen: the master's waitpid(-1) reaps it, which Popen would race."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        package_home = str(Path(__file__).resolve().parents[2])
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PYTHONPATH": package_home}
        try:
            pid = os.posix_spawn(
                sys.executable, [sys.executable, "-s", "-m", "tenantfpm.sandbox.spawner"], env,
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
             errpipe_w: int) -> int | None:
        """The child's pid; None if the server is gone (then the caller forks). A clone
        the kernel refused raises OSError, as os.fork() would."""
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
        (pid,) = REPLY.unpack(reply)
        if pid < 0:
            raise OSError(-pid, os.strerror(-pid))
        return pid

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
    serve(SERVER_FD)
