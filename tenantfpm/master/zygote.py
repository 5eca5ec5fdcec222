"""A tenant's zygote, as the master drives it: fork orders out, hellos and exits in.

The zygote (sapi/zygote.c for PHP) runs in the tenant's sandbox as the tenant's
user; it started the runtime once and forks workers when told to. The master
keeps every decision (pm.py, verdicts.py); this module carries them out:

- `fork` orders go out on a SOCK_SEQPACKET channel with the worker's own
  channel (a socket pair per worker), its stdout and stderr pipes (write ends;
  the master keeps the read ends, so no tenant process ever holds a file
  description the master reads with O_NONBLOCK) and its scoreboard page (a
  sealed memfd) as SCM_RIGHTS;
- a new worker says `hello` on its own channel, so the kernel attaches its
  credentials and translates its pid into the master's namespace (SO_PASSCRED):
  the host pid comes from the kernel, never from the tenant's text. The master
  answers with that pid (for the worker's logs), then holds a pidfd for it, so
  a signal can never reach a recycled pid. A channel that ends without a hello
  is a fork that failed;
- the zygote reports `exit <pid> <status>` for the workers it reaps.

Everything that arrives is the tenant's: parsed strictly (parse()), bounded per
wakeup. The master's ends refuse descriptors (fdguard: SO_PASSRIGHTS = 0; where the
kernel cannot, whatever came along and the channels themselves are closed off the loop),
since a passed descriptor's close can block its closer for as long as the sender likes.
A lying zygote can confuse only its own tenant's accounting: it cannot name a process
outside its namespace.
"""

from __future__ import annotations

import array
import contextlib
import itertools
import os
import select
import signal
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tenantfpm import fdguard, pm, runtimes
from tenantfpm.master.worker import Worker, describe_exit
from tenantfpm.sandbox.spawn import Plan, spawn
from tenantfpm.wire import zygote as wire
from tenantfpm.wire.zygote import Message, parse

if TYPE_CHECKING:
    from tenantfpm.master.pool import Pool

HELLO_TIMEOUT = 10.0  # seconds a fork order may go unanswered
HELLO_LOOK = 0.001  # after its hello a worker marks its scoreboard idle within about this
READY_TIMEOUT = 30.0  # seconds a zygote may take to start PHP
MAX_MESSAGES = 64  # read per wakeup: a chatty zygote cannot hold the master's loop
_CREDS = struct.Struct("iII")


@dataclass
class Zygote:
    """One zygote process (one per pool generation) and its channel."""

    proc: Worker  # the zygote itself: its pid, output pipes, exec error pipe
    ctl: socket.socket
    generation: int
    ready: bool = False
    closed: bool = False  # the channel ended (the zygote exited or closed it)
    finishing: bool = False  # told to fork no more: it exits after its last worker
    ns_inode: int | None = None
    idle_since: float | None = None  # when its last worker went (ondemand retirement)
    pending: dict[int, Worker] = field(default_factory=dict)  # by placeholder pid: no hello yet
    by_ns: dict[int, Worker] = field(default_factory=dict)  # live workers by namespace pid

    @property
    def pid(self) -> int:
        return self.proc.pid

    def order(self, max_requests: int, fds: list[int]) -> None:
        """Ask for one worker; OSError when the zygote does not take orders."""
        self.ctl.sendmsg([(wire.FORK % max_requests).encode()],
                         [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])

    def receive(self) -> list[Message]:
        msgs, self.closed = receive(self.ctl)
        return msgs

    def finish(self) -> None:
        """No more forks: the zygote sees the end of its channel, exits after its workers.
        The master keeps reading (exit reports)."""
        if not self.finishing:
            self.finishing = True
            with contextlib.suppress(OSError):
                self.ctl.shutdown(socket.SHUT_WR)


def receive(sock: socket.socket, limit: int = MAX_MESSAGES) -> tuple[list[Message], bool]:
    """What arrived, at most `limit` messages, and whether the channel ended."""
    out: list[Message] = []
    closed = False
    for _ in range(limit):
        try:
            data, anc, _flags, _ = sock.recvmsg(wire.MAX_MESSAGE, fdguard.CONTROL_SPACE,
                                                socket.MSG_DONTWAIT | socket.MSG_CMSG_CLOEXEC)
        except (BlockingIOError, InterruptedError):
            break
        except OSError:
            closed = True
            break
        fdguard.dispose_rights(anc)  # nothing of ours (only without SO_PASSRIGHTS)
        sender = None
        for level, kind, payload in anc:
            if (level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS
                    and len(payload) >= _CREDS.size):
                sender = _CREDS.unpack_from(payload)[0]
        if not data:
            closed = True
            break
        out.append(parse(data, sender) or Message("junk", sender=sender))
    return out, closed


def channel() -> tuple[socket.socket, socket.socket]:
    """(master's end, zygote's end); the master's end gets senders' credentials and no
    descriptors (fdguard)."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ours = fdguard.guard(ours)
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    ours.setblocking(False)
    return ours, theirs


def ns_inode(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/pid").st_ino
    except OSError:
        return None


def gone(w: Worker) -> bool:
    """The kernel's word: a pidfd polls readable once its process has exited. (poll, not
    select: with a few hundred tenants the master's descriptors pass FD_SETSIZE, and
    select() refused them, which lost every exit report from then on.)"""
    if w.pidfd is None:
        return True
    p = select.poll()
    p.register(w.pidfd, select.POLLIN)
    return bool(p.poll(0))


def adopt(z: Zygote, w: Worker, msg: Message) -> bool:
    """A hello: the pending worker becomes a tracked process with its host pid and pidfd,
    if the kernel's word on the sender matches (a process in that zygote's namespace)."""
    host = msg.sender
    if host is None or host <= 0 or msg.pid in z.by_ns:
        return False
    if any(known.pid == host for known in z.by_ns.values()):  # a worker took an order
        return False  # meant for the zygote (they share fd 3) and says hello twice
    try:
        pidfd = os.pidfd_open(host)
    except OSError:
        return False
    # after pidfd_open the pid cannot be recycled under us: check it is the zygote's
    if z.ns_inode is None or ns_inode(host) != z.ns_inode:
        os.close(pidfd)
        return False
    del z.pending[w.pid]
    w.pid, w.ns_pid, w.pidfd = host, msg.pid, pidfd
    z.by_ns[msg.pid] = w
    return True


placeholders: Callable[[], int] = itertools.count(1).__next__


class Forker:
    """A pool's zygotes (one per generation while the old one drains) and their workers.

    The pool calls fork() where it used to spawn; the workers land in pool.workers
    like any other, keyed by a negative placeholder until their hello gives the
    host pid, and their ends go through pool.on_exit() as before.
    """

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.zygotes: dict[int, Zygote] = {}
        self.current: Zygote | None = None
        self.previous: Zygote | None = None  # during a reload, until it succeeds

    def owns(self, pid: int) -> bool:
        return pid in self.zygotes

    # --- starting ----------------------------------------------------------

    def _start(self) -> Zygote | None:
        pool, tenant = self.pool, self.pool.tenant
        site = tenant.site
        assert pool.sock is not None
        runtime = runtimes.of(tenant)
        argv, env = runtime.zygote_command(tenant)
        ours, theirs = channel()
        try:
            child = spawn(Plan(argv=argv, env=env, cwd=tenant.cwd, uid=tenant.uid,
                               gid=tenant.gid, listen_fd=pool.sock.fileno(),
                               open_files=site.limits.open_files,
                               core_dumps=site.limits.core_dumps, catch_output=True,
                               cgroup_procs=pool.cgroup.join_files() if pool.cgroup else [],
                               scheduling_policy=site.pm.scheduling_policy,
                               sandbox=pool.sandbox, pass_fds=(theirs.fileno(),),
                               warm=runtime.warm_start(tenant)))
        except OSError as e:
            ours.close()
            pool.log.event("error", f"cannot start the zygote: {e.strerror or e}")
            return None
        finally:
            theirs.close()
        now = time.monotonic()
        proc = Worker(pid=child.pid, generation=pool.generation, started=now, max_requests=0,
                      stdout=child.stdout, stderr=child.stderr, errpipe=child.errpipe,
                      last_activity=now, wall_started=time.time(), exe=argv[0])
        z = Zygote(proc, ours, pool.generation, ns_inode=ns_inode(child.pid))
        self.zygotes[child.pid] = z
        pool.host.own_child(child.pid, pool)
        self.current = z
        pool.output.watch(proc)
        pool.host.loop.add_reader(ours.fileno(), self._on_messages, z)
        pool.log.event("notice", f"zygote {child.pid} started (generation {pool.generation}"
                                 + (", from a warm PHP)" if child.warm else ")"))
        return z

    def fork(self, max_requests: int) -> Worker | None:
        """Order one worker from the current zygote (started first if need be)."""
        pool = self.pool
        z = self.current
        if z is None or z.closed or z.finishing:
            z = self._start()
            if z is None:
                return None
        try:
            ch = runtimes.of(pool.tenant).channels(pool.tenant)
        except OSError as e:
            pool.log.event("error", f"cannot start a worker: {e.strerror or e}")
            return None
        made: list[int] = []
        try:
            out_r, out_w = os.pipe()
            made += (out_r, out_w)
            err_r, err_w = os.pipe()
            made += (err_r, err_w)
            chan, chan_w = channel()
        except OSError as e:  # out of descriptors: nothing of this fork stays open
            for fd in made:
                os.close(fd)
            ch.close()
            pool.log.event("error", f"cannot start a worker: {e.strerror or e}")
            return None
        try:
            z.order(max_requests, [chan_w.fileno(), out_w, err_w, *ch.pass_fds])
        except OSError as e:
            for fd in (out_r, err_r):
                os.close(fd)
            chan.close()
            ch.close()
            pool.log.event("error", f"cannot start a worker: the zygote takes no orders "
                                    f"({e.strerror or e})")
            return None
        finally:
            os.close(out_w)
            os.close(err_w)
            chan_w.close()
            ch.close_worker_ends()
        os.set_blocking(out_r, False)
        os.set_blocking(err_r, False)
        now = time.monotonic()
        w = Worker(pid=-placeholders(), generation=z.generation, started=now,
                   max_requests=max_requests, stdout=out_r, stderr=err_r, errpipe=None,
                   last_activity=now, wall_started=time.time(), exe=z.proc.exe,
                   board=ch.board, trace=ch.trace, access=ch.access)
        w.hello = chan
        z.pending[w.pid] = w
        pool.host.loop.add_reader(chan.fileno(), self._on_hello, z, w)
        return w

    def _on_hello(self, z: Zygote, w: Worker) -> None:
        """The new worker's own channel: its hello, or its end (the fork failed)."""
        pool = self.pool
        chan = w.hello
        assert chan is not None
        msgs, closed = receive(chan, 1)
        if not msgs and not closed:
            return  # woken for nothing
        hello = msgs[0] if msgs and msgs[0].kind == "hello" else None
        pool.host.loop.remove_reader(chan.fileno())
        w.hello = None
        placeholder = w.pid
        if hello is not None and adopt(z, w, hello):
            with contextlib.suppress(OSError):
                chan.send((wire.PID % w.pid).encode())
            chan.close()
            pool.workers.pop(placeholder, None)
            pool.workers[w.pid] = w
            pool.log.event("notice", f"child {w.pid} started")
            if w.retiring is not None:  # retired while its fork was on the way
                w.signal(signal.SIGTERM)
            elif pool.state == "starting":  # an add waits on it: look at its scoreboard soon
                pool.tick_by(time.monotonic() + HELLO_LOOK)
            return
        chan.close()
        z.pending.pop(placeholder, None)
        pool.log.event("error", "a worker did not start: the zygote's fork failed"
                       if hello is None else "a worker's hello did not check out")
        pool.forget(w)

    # --- what the zygotes say ------------------------------------------------

    def _on_messages(self, z: Zygote) -> None:
        pool = self.pool
        for msg in z.receive():
            if msg.kind == "ready" and msg.sender == z.pid and not z.ready:
                z.ready = True
                pool.log.event("notice", f"zygote {z.pid} ready: PHP started in "
                                         f"{time.monotonic() - z.proc.started:.3f}s")
            elif msg.kind == "exit" and msg.sender == z.pid:
                w = z.by_ns.get(msg.pid)
                if w is None:
                    continue
                if not gone(w):  # the zygote reaps before it reports: a live one is a lie
                    pool.log.event("warning", f"zygote {z.pid} reported child {w.pid} "
                                              "exited, but it runs: ignored")
                    continue
                del z.by_ns[msg.pid]
                pool.on_exit(w.pid, msg.status)
        if z.closed:
            with contextlib.suppress(ValueError, OSError):
                pool.host.loop.remove_reader(z.ctl.fileno())

    def on_exit(self, pid: int, status: int) -> None:
        """The zygote `pid` was reaped (the master is its parent): its workers went with
        it (the kernel ends a PID namespace with its init)."""
        pool = self.pool
        z = self.zygotes.pop(pid)
        while not z.closed and z.ctl.fileno() >= 0:  # exit reports still queued first
            before = len(z.by_ns)
            self._on_messages(z)
            if len(z.by_ns) == before:
                break
        with contextlib.suppress(ValueError, OSError):
            pool.host.loop.remove_reader(z.ctl.fileno())
        z.ctl.close()
        pool.output.drain(z.proc)
        exec_error = z.proc.exec_error()
        if z.proc.errpipe is not None:
            os.close(z.proc.errpipe)
            z.proc.errpipe = None
        if self.current is z:
            self.current = None
        if self.previous is z:
            self.previous = None
        text, _code, _sig = describe_exit(status)
        orphans = list(z.by_ns.values())
        for w in list(z.pending.values()):
            self._drop_pending(w)
        z.pending.clear()
        if not z.ready:
            reason = (exec_error or (f"zygote {text}: {z.proc.last_output}"
                                     if z.proc.last_output else f"zygote {text} before "
                                     "PHP started"))
            pool.log.event("error", f"zygote {pid} failed to start: {reason}")
            # what it said last is why (PHP's startup, the app's import): no retry will differ
            pool.start_failed(reason, exec_error, fatal=z.proc.last_output)
            return
        expected = z.finishing and not orphans
        pool.log.event("notice" if expected else "error",
                       f"zygote {pid} {text}" + ("" if not orphans else
                                                 f"; its {len(orphans)} worker(s) with it"))
        for w in orphans:
            pool.on_exit(w.pid, signal.SIGKILL)

    def _drop_pending(self, w: Worker) -> None:
        if w.hello is not None:
            with contextlib.suppress(ValueError, OSError):
                self.pool.host.loop.remove_reader(w.hello.fileno())
            w.hello.close()
            w.hello = None
        self.pool.forget(w)

    # --- generations, stopping -------------------------------------------------

    def new_generation(self) -> None:
        """A reload: the next fork starts a new zygote (new php.ini, fresh opcache); the
        current one keeps serving until the reload succeeds."""
        if self.current is not None:
            self.previous = self.current
        self.current = None

    def reloaded(self, ok: bool) -> None:
        if ok:
            if self.previous is not None:
                self.previous.finish()
        else:  # the old generation keeps serving: its zygote forks again
            if self.current is not None:
                self.current.finish()
            self.current = self.previous
        self.previous = None

    def finish_all(self) -> None:
        for z in self.zygotes.values():
            z.finish()
        self.current = self.previous = None

    def kill_all(self) -> None:
        for z in self.zygotes.values():
            z.proc.signal(signal.SIGKILL)

    def finish_idle(self) -> None:
        """Zygotes of old generations with no workers left are told to go."""
        for z in self.zygotes.values():
            if z is not self.current and z is not self.previous and not z.by_ns \
                    and not z.pending:
                z.finish()

    def tick(self, now: float) -> None:
        pool = self.pool
        idle_timeout = pm.zygote_idle_timeout(pool.pm)
        for z in list(self.zygotes.values()):
            if z.by_ns or z.pending or not z.ready:
                z.idle_since = None
            elif z.idle_since is None:
                z.idle_since = now
            elif idle_timeout and z is self.current and now - z.idle_since >= idle_timeout:
                pool.log.event("notice", f"zygote {z.pid} idle for {idle_timeout:g}s: retired "
                                         "(the next request starts PHP again)")
                z.finish()
                self.current = None
            if not z.ready and now - z.proc.started > READY_TIMEOUT:
                pool.log.event("error", f"zygote {z.pid} did not start PHP within "
                                        f"{READY_TIMEOUT:g}s: killing it")
                z.proc.signal(signal.SIGKILL)
            for key, w in list(z.pending.items()):
                if now - w.started > HELLO_TIMEOUT:
                    del z.pending[key]
                    pool.log.event("error", f"zygote {z.pid} did not fork a worker within "
                                            f"{HELLO_TIMEOUT:g}s")
                    self._drop_pending(w)
        self.finish_idle()
