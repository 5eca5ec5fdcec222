"""One tenant's pool: its socket, its workers, and the effects of the pm's decisions.

The decisions themselves come from tenantfpm.pm (pure); this module forks,
signals, reaps, samples /proc and logs. Everything runs on the master's event
loop: no threads, no locks.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
import os
import random
import signal
import socket
import time
from typing import Any, Protocol

from tenantfpm import cgroups, inspect, pm, procfs, runtimes, verdicts
from tenantfpm.config.tenant import Tenant
from tenantfpm.listen import close_listener, open_listener, path_inode
from tenantfpm.listenq import Queue, key_of
from tenantfpm.logs import TenantLog
from tenantfpm.master import requests
from tenantfpm.master.stdio import Output
from tenantfpm.master.worker import Worker, describe_exit
from tenantfpm.master.zygote import Forker
from tenantfpm.pyworker import scoreboard
from tenantfpm.sandbox.spawn import Plan, Sandbox, spawn
from tenantfpm.sandbox.tenant import TenantSandbox

QUEUE_FRESH = 0.01  # seconds a listen-queue reading may be old for an arriving connection
QUEUE_TICK = 1.0  # ... and for the periodic tick (the dump costs O(all sockets))
STOP_MARGIN = 5.0  # seconds past process_control_timeout that stop() waits for reaping
CRASH_SIGNALS = (signal.SIGSEGV, signal.SIGBUS)


class Host(Protocol):
    """What a pool needs from the master."""

    loop: asyncio.AbstractEventLoop
    process_control_timeout: float
    emergency_restart_threshold: int
    emergency_restart_interval: float

    cgroups: cgroups.Driver | None
    isolated_subnet: str

    def capacity(self) -> int | None: ...
    def workers_weight(self) -> int: ...
    def link_index(self, pool: Pool) -> int: ...
    def listen_queue(self, pool: Pool, max_age: float) -> Queue | None: ...
    def log(self, level: str, message: str) -> None: ...
    def protect(self, extra: list[Tenant] | None = None) -> str | None: ...


class Pool:
    def __init__(self, host: Host, tenant: Tenant) -> None:
        self.host = host
        self.tenant = tenant
        self.log = self._open_log(tenant)
        self.output = Output(host.loop, lambda: self.log, tenant.site.log.rate_limit)
        self.state = "stopped"
        self.error: str | None = None
        self.sock: socket.socket | None = None
        self.sock_key: int | None = None
        self.sock_inode: int | None = None
        self.workers: dict[int, Worker] = {}
        self.generation = 0
        self.pm_state = pm.PoolState()
        self.start_time = time.time()
        self.next_tick = math.inf  # when tick() runs next (loop.call_at); inf: not scheduled
        self._tick_handle: asyncio.TimerHandle | None = None
        self.closed = False
        self.start_failures = 0
        self.retry_delay = verdicts.RETRY_FIRST
        self.next_retry: float | None = None
        self.crashes: collections.deque[float] = collections.deque()
        self.forker = Forker(self)  # the zygotes, for runtimes that fork from one
        self.box = TenantSandbox(tenant)
        self.sandbox: Sandbox | None = None  # the planned sequence; None: isolation disabled
        self.cgroup: cgroups.TenantCgroup | None = None
        self.oom_base = 0  # the cgroup's oom_kill count when this master took it over
        self.oom = verdicts.OomWatch()
        self.changed = asyncio.Event()  # set on any state change, for waiters
        self.ondemand_armed = False
        self.ondemand_handle: asyncio.TimerHandle | None = None
        # counters (status)
        self.max_children_reached = 0
        self.slow_requests = 0
        self.terminated_requests = 0
        self.worker_restarts = 0
        self.max_active = 0
        self.listen_queue: int | None = None
        self.max_listen_queue: int | None = None
        self.listen_queue_len: int | None = None
        self.queue_seen: tuple[float, Queue | None] = (0.0, None)  # the last sock_diag answer
        self.accepted_gone = 0  # connections accepted by python workers that have exited

    # --- lifecycle -------------------------------------------------------

    @staticmethod
    def _open_log(tenant: Tenant) -> TenantLog:
        return TenantLog(tenant.name, tenant.log_dir, tenant.site.log.max_size)

    @property
    def pm(self) -> Any:
        return self.tenant.site.pm

    @property
    def name(self) -> str:
        return self.tenant.name

    def _set_state(self, state: str, error: str | None = None) -> None:
        self.state = state
        self.error = error
        self._wake_waiters()

    def _wake_waiters(self) -> None:
        """Wake everyone awaiting a change; later waiters get a fresh event."""
        self.changed.set()
        self.changed = asyncio.Event()

    def start(self, probe: bool = False) -> None:
        """Open the socket, write runtime files, spawn the first workers.

        `probe`: an ondemand pool spawns one worker anyway, so that an explicit
        add/start proves the runtime serves; at master boot it does not, so a
        host with a thousand ondemand tenants does not start a thousand workers.
        """
        self._set_state("starting")
        self.start_time = time.time()
        self.start_failures = 0
        self.pm_state = pm.PoolState()
        self.output.paused = False
        site = self.tenant.site
        if self.log.problem:
            self.log.reopen()  # the directory may have been fixed since
        if self.log.problem:
            self._fail(f"cannot start: {self.log.problem}")
            return
        unguarded = self.host.protect()
        if unguarded and not self.tenant.listen.is_unix:
            self._fail(f"cannot start: the TCP listener cannot be protected from other "
                       f"tenants ({unguarded})")
            return
        try:
            if self.sock is None:
                self._open_socket()
            runtimes.prepare(self.tenant)
            self._isolate(self.tenant)
        except OSError as e:
            self._fail(f"cannot start: {e}")
            return
        if site.log.access and not runtimes.of(self.tenant).reports_requests:
            self.log.event("warning", f"log.access: {site.runtime.type} workers report no "
                                      "per-request data to the master, so no access.log is "
                                      "written for this tenant; use the web server's log")
        self.log.event("notice", f"starting: pm {site.pm.mode}, max_children "
                                 f"{site.pm.max_children}, listening on {self.tenant.listen}")
        self.generation += 1
        n = pm.initial_workers(site.pm)
        if site.pm.mode == "ondemand":
            self._arm_ondemand()
            if probe:
                n = 1
        self.spawn(n)
        if n == 0:
            self._set_state("running")
        self.wake()

    def _isolate(self, tenant: Tenant) -> None:
        """The tenant's cgroup with its limits, and its sandbox's shared pieces and plan."""
        site = tenant.site
        driver = self.host.cgroups
        if driver is None:
            if site.limits.memory or site.limits.cpu or site.limits.pids:
                raise OSError("[limits] are set but no cgroup hierarchy is usable")
        else:
            if self.cgroup is None:
                cg = driver.tenant(tenant.name)
                cg.create()
                self.cgroup = cg
                self.oom_base = cg.oom_kills() or 0
                self.oom = verdicts.OomWatch(seen=self.oom_base)
            self.cgroup.apply(cgroups.Limits(memory=site.limits.memory or None,
                                             cpu=site.limits.cpu or None,
                                             pids=site.limits.pids or None,
                                             weight=site.pm.max_children))
            driver.set_parent_weight(self.host.workers_weight())
        limits = (f"memory {site.limits.memory >> 20}M" if site.limits.memory else "memory -",
                  f"cpu {site.limits.cpu:g}" if site.limits.cpu else "cpu -",
                  f"pids {site.limits.pids}" if site.limits.pids else "pids -")
        where = f"cgroup v{driver.version} {self.cgroup.describe()}" if (
            driver and self.cgroup) else "no cgroup"
        if not site.isolation.enabled:
            self.sandbox = None
            self.log.event("warning", "isolation.enabled = false: workers run with the "
                                      "tenant's uid/gid only, no namespaces, no private "
                                      f"filesystem view; {where}: {', '.join(limits)}")
            return
        self.sandbox = self.box.prepare(tenant, self.host.link_index(self),
                                        self.host.isolated_subnet)
        iso = site.isolation
        net = {"host": "host network", "none": "own network: loopback only",
               "isolated": "own network: loopback and eth0 "
                           f"{self.box.link.tenant_address if self.box.link else '?'}"}
        self.log.event("notice", "sandbox: namespaces mount, ipc, uts, cgroup"
                                 f"{', pid' if iso.hide_processes else ''}; "
                                 f"{net[iso.network]}; pivot_root into a tmpfs root; "
                                 f"uid {tenant.uid} gid {tenant.gid}, no capabilities, "
                                 f"no_new_privs, seccomp; {where}: {', '.join(limits)}")

    def _open_socket(self) -> None:
        lst = self.tenant.site.listen
        self.sock = open_listener(self.tenant.listen, owner=lst.owner, group=lst.group,
                                  mode=lst.mode, backlog=lst.backlog,
                                  allowed_clients=lst.allowed_clients)
        self.sock_key = key_of(self.sock)
        self.sock_inode = path_inode(self.tenant.listen)

    def _close_socket(self) -> None:
        self._disarm_ondemand()
        if self.sock is not None:
            close_listener(self.sock, self.tenant.listen, self.sock_inode)
            self.sock = None
            self.sock_key = None

    def _fail(self, reason: str) -> None:
        """Back off instead of respawning in a hot loop; retried with a growing delay."""
        self.wake()
        self.log.event("error", f"failed: {reason}; retrying in {self.retry_delay:g}s")
        self.host.log("error", f"[pool {self.name}] failed: {reason}")
        self._set_state("failed", reason)
        self.next_retry = time.monotonic() + self.retry_delay
        self.retry_delay = verdicts.next_retry_delay(self.retry_delay)
        self.forker.finish_all()
        for w in list(self.workers.values()):
            self.retire(w, "failed")

    async def wait_settled(self, timeout: float) -> bool:
        """Until the pool serves (running) or gave up (failed); False on timeout."""
        deadline = time.monotonic() + timeout
        while self.state not in ("running", "failed", "stopped"):
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            try:
                await asyncio.wait_for(self.changed.wait(), left)
            except TimeoutError:
                return False
        return True

    async def reload(self, tenant: Tenant) -> bool:
        """New generation first, then the old one retires; the socket never closes.

        True when the new configuration serves; False when it could not start
        (the old generation keeps serving, or the pool failed).
        """
        old = self.tenant
        self.tenant = tenant
        if tenant.listen != old.listen or tenant.site.listen != old.site.listen:
            self.log.event("notice", "listen settings changed: restarting the pool")
            self.tenant = old
            await self.stop(graceful=True)
            self.tenant = tenant
            self.log = self._open_log(tenant)
            self.start(probe=True)
            return await self.wait_settled(30.0) and self.state == "running"
        if tenant.log_dir != old.log_dir or tenant.site.log != old.site.log:
            self.log.close()
            self.log = self._open_log(tenant)
            self.output.set_rate(tenant.site.log.rate_limit)
        if self.log.problem:
            self._fail(f"cannot reload: {self.log.problem}")
            return False
        self.log.event("notice", "reloading: starting a new generation of workers")
        self._set_state("reloading")
        unguarded = self.host.protect()  # a changed user is firewalled before it runs
        if unguarded and not tenant.listen.is_unix:
            self._fail(f"cannot reload: the TCP listener cannot be protected ({unguarded})")
            return False
        try:
            runtimes.prepare(tenant)
            self._isolate(tenant)
        except OSError as e:
            self._fail(f"cannot reload: {e}")
            return False
        old_gen = self.generation
        self.generation += 1
        self.forker.new_generation()
        self.pm_state = pm.PoolState()
        n = pm.initial_workers(tenant.site.pm)
        if tenant.site.pm.mode == "ondemand":
            self._arm_ondemand()
        else:
            self._disarm_ondemand()
        self.spawn(n)
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline and any(
            w.generation == self.generation and w.starting for w in self.workers.values()
        ):
            await asyncio.sleep(0.02)
            self.sample()
        if self.state != "reloading":
            self.forker.reloaded(False)
            return False  # failed while starting: _fail() already took over
        if n and not any(w.generation == self.generation and w.seen_idle
                         for w in self.workers.values()):
            self.log.event("error", "the new generation did not start serving; "
                                    "keeping the old one")
            for w in list(self.workers.values()):
                if w.generation == self.generation:
                    self.retire(w, "reload")
            self.forker.reloaded(False)
            self.tenant = old
            self._set_state("running")
            return False
        for w in list(self.workers.values()):
            if w.generation <= old_gen:
                self.retire(w, "reload")
        self.forker.reloaded(True)
        if self.state == "reloading":
            self._set_state("running")
            self.log.event("notice", f"reloaded: generation {self.generation}")
        return True

    async def stop(self, graceful: bool = True) -> None:
        self._set_state("stopping")
        self.log.event("notice", "stopping" + ("" if graceful else " (fast)"))
        self._disarm_ondemand()
        self.forker.finish_all()
        for w in list(self.workers.values()):
            if graceful:
                self.retire(w, "stop")
            else:
                w.retiring = "stop"
                w.signal(signal.SIGTERM)  # a php-cgi that is PID 1 ignores SIGQUIT
                w.kill_at = time.monotonic() + 1.0
        # SIGKILL comes at process_control_timeout (tick); past that and a margin,
        # a worker still listed is stuck in the kernel or was lost: say so, move on
        deadline = time.monotonic() + self.host.process_control_timeout + STOP_MARGIN
        while self.workers or self.forker.zygotes:
            left = deadline - time.monotonic()
            if left <= 0:
                self.forker.kill_all()
                for w in list(self.workers.values()):
                    self.log.event("error", f"child {w.pid} still not reaped "
                                            f"{self.host.process_control_timeout + STOP_MARGIN:g}s "
                                            "after stop; no longer tracked")
                    self.forget(w)
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), left)
        self._close_socket()
        self._set_state("stopped")
        self.log.event("notice", "stopped")

    def close(self) -> None:
        """The pool is gone for good (removed, or the master exits): release everything."""
        self.closed = True
        self.schedule(math.inf)
        self.forker.kill_all()
        self._close_socket()
        self.box.release()
        if self.cgroup is not None:
            try:
                self.cgroup.remove()
            except OSError as e:
                self.log.event("error", f"{e}")
            self.cgroup = None
        self.log.close()

    # --- workers ---------------------------------------------------------

    def spawn(self, n: int) -> None:
        if self.sock is None:
            return
        if n:
            self.wake()
        for _ in range(n):
            site = self.tenant.site
            limit = site.pm.max_requests
            if limit and site.pm.max_requests_jitter:
                limit += random.randint(0, site.pm.max_requests_jitter)
            runtime = runtimes.of(self.tenant)
            if runtime.zygote:
                w = self.forker.fork(limit)
                if w is None:
                    return
                self.workers[w.pid] = w
                self.output.watch(w)
                continue
            argv, env = runtime.command(self.tenant, limit)
            try:
                ch = runtime.channels(self.tenant, self.log)
            except OSError as e:
                self.log.event("error", f"cannot start a worker: {e.strerror or e}")
                return
            try:
                plan = Plan(argv=argv, env=env, cwd=self.tenant.cwd, uid=self.tenant.uid,
                            gid=self.tenant.gid, listen_fd=self.sock.fileno(),
                            open_files=site.limits.open_files,
                            core_dumps=site.limits.core_dumps,
                            catch_output=site.log.catch_workers_output,
                            cgroup_procs=self.cgroup.join_files() if self.cgroup else [],
                            sandbox=self.sandbox, pass_fds=ch.pass_fds)
                child = spawn(plan)
            except OSError as e:
                self.log.event("error", f"cannot start a worker: {e.strerror or e}")
                ch.close()
                return
            ch.close_worker_ends()  # the worker has its copies
            now = time.monotonic()
            w = Worker(pid=child.pid, generation=self.generation, started=now,
                       max_requests=limit, stdout=child.stdout, stderr=child.stderr,
                       errpipe=child.errpipe, last_activity=now, wall_started=time.time(),
                       exe=argv[0], board=ch.board, trace=ch.trace)
            self.workers[w.pid] = w
            self.output.watch(w)
            self.log.event("notice", f"child {w.pid} started")

    def retire(self, w: Worker, reason: str) -> None:
        """Graceful: php-cgi finishes its request on SIGTERM; escalate after the timeout."""
        if w.retiring is not None:
            return
        w.retiring = reason
        w.kill_at = time.monotonic() + self.host.process_control_timeout
        w.signal(signal.SIGTERM)

    def forget(self, w: Worker) -> str:
        """Stop tracking a worker: its output is drained, its pipes closed."""
        self.workers.pop(w.pid, None)
        self.output.drain(w)
        exec_error = w.exec_error()
        if w.errpipe is not None:
            os.close(w.errpipe)
            w.errpipe = None
        w.close_pidfd()
        if w.board is not None:
            w.slot = w.board.read() or w.slot
            slot = w.slot
            if slot is not None and not slot.fatal and (
                    slot.accepted or slot.requests
                    or slot.state in (scoreboard.IDLE, scoreboard.READING, scoreboard.RUNNING)):
                w.seen_idle = True  # it served (between two looks, if it lived that briefly)
            self.accepted_gone += w.slot.accepted if w.slot else 0
            w.board.close()
            w.board = None
        if w.trace is not None:
            os.close(w.trace)
            w.trace = None
        self._wake_waiters()
        return exec_error

    def on_exit(self, pid: int, status: int) -> None:
        """A worker was reaped: log it, account for it, replace it if the pm wants."""
        self.wake()
        if self.forker.owns(pid):
            self.forker.on_exit(pid, status)
            self._wake_waiters()  # a stop waits for the zygotes too
            return
        w = self.workers.get(pid)
        if w is None:
            return
        exec_error = self.forget(w)
        now = time.monotonic()
        lived = now - w.started
        text, code, sig = describe_exit(status)
        if sig == signal.SIGKILL and self._oom_killed(pid):
            text = "killed by the OOM killer"
        expected = w.retiring is not None
        if expected and sig in (None, signal.SIGTERM, signal.SIGQUIT):
            # asked to go and gone: how a runtime ends on SIGTERM (php-cgi's 255, say) is
            # not news; a SIGKILL after process_control_timeout or a crash still is
            text = f"retired ({w.retiring})"
        level = "notice" if expected or code == 0 else "warning"
        self.log.event(level, f"child {pid} {text} after {lived:.6f} seconds from start")
        if expected:
            # no spawn here: the tick that retired it (memory, timeout) no longer counted
            # it, and spawned the replacement the pm wanted in the same pass
            if w.retiring in ("memory", "timeout"):
                self.worker_restarts += 1
            return
        # unexpected exit
        fatal = w.slot.fatal if w.slot else ""  # a python app that could not be loaded
        if verdicts.failed_start(w.seen_idle, lived, fatal):
            reason = (exec_error
                      or (f"app {self.tenant.site.runtime.app}: {fatal}" if fatal else "")
                      or (f"worker {text}: {w.last_output}" if w.last_output
                          else f"worker {text} before accepting connections"))
            self.log.event("error", f"child {pid} failed to start: {reason}")
            if self.start_failed(reason, exec_error, fatal):
                return
        if sig in CRASH_SIGNALS and self._crash_storm(now):
            return
        if pm.respawn_on_exit(self.pm) and self._serving():
            self.worker_restarts += 1
            self.spawn(1)

    def start_failed(self, reason: str, exec_error: str = "", fatal: str = "") -> bool:
        """A worker or zygote died before serving; True when the pool gives up (failed)."""
        self.start_failures += 1
        if verdicts.gives_up(self.start_failures, exec_error, fatal):
            self._fail(reason)
            return True
        return False

    def _oom_limit(self) -> str:
        limit = self.tenant.site.limits.memory
        return f"{limit >> 20}M" if limit else "(none: the host's)"

    def _oom_killed(self, pid: int) -> bool:
        """The oom_kill count moved since the last look: the OOM killer sent that SIGKILL."""
        if self.cgroup is None or not self.oom.worker_killed(self.cgroup.oom_kills()):
            return False
        self.log.event("error", f"worker {pid} killed by the OOM killer: tenant memory limit "
                                f"{self._oom_limit()} reached")
        return True

    def _watch_oom(self, now: float) -> None:
        """OOM kills of processes that are not workers (what PHP started), once their
        worker had its chance to be reaped first."""
        if self.cgroup is None or (not self.workers and self.oom.pending_since is None):
            return  # nothing runs in the cgroup: nothing to kill
        n = self.oom.others_killed(self.cgroup.oom_kills(), now)
        if n:
            self.log.event("error", f"the OOM killer killed {n} process(es) started by the "
                                    f"tenant's workers: tenant memory limit {self._oom_limit()} "
                                    "reached")

    def _crash_storm(self, now: float) -> bool:
        """emergency_restart_threshold SIGSEGV/SIGBUS within the interval: restart this pool."""
        host = self.host
        if not verdicts.crash_storm(self.crashes, now, host.emergency_restart_threshold,
                                    host.emergency_restart_interval):
            return False
        msg = (f"{host.emergency_restart_threshold} children have received SIGSEGV or SIGBUS "
               f"within {host.emergency_restart_interval:g} seconds, restarting the pool")
        self.log.event("alert", msg)
        host.log("alert", f"[pool {self.name}] {msg}")
        host.loop.create_task(self.reload(self.tenant))
        return True

    def _serving(self) -> bool:
        return self.state in ("starting", "running", "reloading")

    # --- observation and the pm tick --------------------------------------

    def sample(self, fresh: bool = False) -> None:
        """Look at every worker through /proc: idle in accept() or busy, RSS, CPU."""
        now = time.monotonic()
        for w in self.workers.values():
            if w.board is not None:
                u = procfs.usage(w.pid)
                if u is not None:
                    w.rss, w.cpu_seconds = u.rss, u.cpu_seconds
                    self._observe_board(w, now)
                continue
            s = procfs.sample(w.pid)
            if s is None:
                continue
            w.rss, w.cpu_seconds = s.rss, s.cpu_seconds
            if not w.seen_idle and (s.idle or procfs.serving_connection(w.pid, w.exe)):
                self._started(w)
            if s.idle:
                if not w.idle or (w.activity >= 0 and s.activity != w.activity):
                    w.last_activity = now  # it did something since the last look
                w.idle = True
                w.busy_since = None
            elif w.seen_idle:
                conn = procfs.connection(w.pid)
                if w.idle or w.busy_since is None or (conn is not None and conn != w.conn):
                    w.busy_since = now  # a new request (or the first look at this one)
                    w.slow_logged = False
                w.conn = conn
                w.idle = False
                w.last_activity = now
            w.activity = s.activity
        active = sum(1 for w in self.workers.values() if w.seen_idle and not w.idle)
        self.max_active = max(self.max_active, active, self._board_peak(now))
        # one sock_diag dump covers every pool; a connection that just arrived (ondemand)
        # needs a fresh one, the once-a-second tick does not
        q = self.host.listen_queue(self, QUEUE_FRESH if fresh else QUEUE_TICK)
        if q is not None:
            self.listen_queue = q.pending
            self.listen_queue_len = q.backlog
            self.max_listen_queue = max(self.max_listen_queue or 0, q.pending)

    def _observe_board(self, w: Worker, now: float) -> None:
        """A python worker says what it does: no guessing from /proc."""
        assert w.board is not None
        slot = w.board.read()
        if slot is None:
            return
        w.slot = slot
        if not w.seen_idle and slot.state in (scoreboard.IDLE, scoreboard.READING,
                                              scoreboard.RUNNING):
            self._started(w)
        if slot.state == scoreboard.IDLE:
            if not w.idle or slot.requests != w.activity:
                w.last_activity = now
            w.idle, w.busy_since = True, None
        elif slot.state in (scoreboard.READING, scoreboard.RUNNING):
            if slot.state == scoreboard.RUNNING and w.busy_since != slot.request_start:
                w.slow_logged = False  # another request than at the last look
                w.busy_since = slot.request_start
            w.idle, w.last_activity = False, now
        w.activity = slot.requests

    def _board_peak(self, now: float) -> int:
        """Workers busy at once, from their scoreboards' request times (current or last)."""
        spans = []
        for w in self.workers.values():
            slot = w.slot if w.board is not None else None
            if slot is None or slot.request_start <= 0:
                continue
            if slot.state in (scoreboard.READING, scoreboard.RUNNING):
                spans.append((slot.request_start, now))
            elif slot.last_duration >= 0:
                spans.append((slot.request_start, slot.request_start + slot.last_duration))
        return verdicts.peak_concurrency(spans)

    def _started(self, w: Worker) -> None:
        """The worker's runtime is up and taking connections."""
        w.seen_idle = True
        self.start_failures = 0
        self.retry_delay = verdicts.RETRY_FIRST
        if self.state == "starting":
            self._set_state("running")
            self.log.event("notice", "ready: serving")

    # --- the pool's own timer: no pool is looked at unless it has something to do ----------

    def schedule(self, at: float) -> None:
        """Run tick() at `at` (the loop's monotonic clock); math.inf: not until woken."""
        if self._tick_handle is not None:
            self._tick_handle.cancel()
            self._tick_handle = None
        self.next_tick = at
        if at != math.inf and not self.closed:
            self._tick_handle = self.host.loop.call_at(at, self._run_tick)

    def wake(self) -> None:
        """Something happened (a start, a spawn, an exit, a connection): tick soon."""
        now = time.monotonic()
        if self._tick_handle is None or self.next_tick > now + 0.02:
            self.schedule(now)

    def _dormant(self) -> bool:
        """An ondemand pool with nothing running waits for its socket, not for a timer:
        10,000 idle tenants cost the master nothing between their requests."""
        return (self.pm.mode == "ondemand" and self.state == "running" and not self.workers
                and not self.forker.zygotes and self.ondemand_armed)

    def _run_tick(self) -> None:
        self._tick_handle = None
        now = time.monotonic()
        try:
            self.tick()
        except Exception as e:  # a bug in one pool must not stop the others
            self.host.log("error", f"[pool {self.name}] tick failed: {e!r}")
            self.next_tick = now + 1.0
        at = self.next_tick if self.next_tick > now else now + 1.0
        self.schedule(math.inf if self._dormant() else at)

    def tick(self) -> None:
        now = time.monotonic()
        if self.state == "failed":
            if (self.next_retry is not None and now >= self.next_retry and not self.workers
                    and not self.forker.zygotes):
                self.next_retry = None
                self.log.event("notice", "retrying start")
                self.start(probe=True)
            return
        self.sample()
        self.forker.tick(now)
        self._watch_oom(now)
        for w in list(self.workers.values()):
            if w.kill_at is not None and now >= w.kill_at:
                self.log.event("warning", f"child {w.pid} did not exit after "
                                          f"process_control_timeout, killing it")
                w.signal(signal.SIGKILL)
                w.kill_at = None
            requests.check(self, w, now)
            limit = self.pm.max_worker_memory
            if (limit and w.retiring is None and w.idle and w.rss is not None
                    and w.rss > limit):
                self.log.event("notice", f"child {w.pid} uses {w.rss >> 20}M, over "
                                         f"pm.max_worker_memory: recycling it")
                self.retire(w, "memory")
        if self.state not in ("running", "starting", "reloading"):
            return
        self._apply(pm.tick(self.pm, self._views(), self.pm_state, now,
                            pending=self.listen_queue or 0, capacity=self.host.capacity()))
        self.next_tick = now + pm.tick_interval(self.pm, self.pm_state)
        if self.state == "starting":
            self.next_tick = now + 0.02
        deadline = requests.next_deadline(self, now)
        if deadline is not None:
            self.next_tick = min(self.next_tick, deadline)

    def inspect(self, w: Worker, depth: int = 0) -> inspect.PhpState:
        """The worker's current request (and `depth` stack frames), read from outside it."""
        return runtimes.of(self.tenant).inspect(w.pid, w.exe, depth)

    def _views(self) -> list[pm.WorkerView]:
        return [pm.WorkerView(w.pid, w.idle, w.starting, w.last_activity)
                for w in self.workers.values() if w.retiring is None]

    def _apply(self, d: pm.Decision) -> None:
        if d.max_children_reached:
            self.max_children_reached += 1
        if d.message:
            self.log.event("warning", d.message)
        for pid in d.retire:
            w = self.workers.get(pid)
            if w is not None:
                self.retire(w, "idle")
        if d.spawn:
            self.spawn(d.spawn)

    # --- ondemand: the socket becoming readable means a connection waits --

    def _arm_ondemand(self) -> None:
        if self.sock is not None and not self.ondemand_armed:
            self.host.loop.add_reader(self.sock.fileno(), self._on_pending)
            self.ondemand_armed = True

    def _disarm_ondemand(self) -> None:
        if self.ondemand_armed and self.sock is not None:
            self.host.loop.remove_reader(self.sock.fileno())
        self.ondemand_armed = False
        if self.ondemand_handle is not None:
            self.ondemand_handle.cancel()
            self.ondemand_handle = None

    def _on_pending(self) -> None:
        # level-triggered: look, act, then stay deaf briefly so a queued
        # connection that a starting worker will take does not spin the loop
        self._disarm_ondemand()
        if self._serving():
            if self.workers:  # a burst: how many wait decides how many to start
                self.sample(fresh=True)
                pending = self.listen_queue if self.listen_queue else 1
            else:  # from zero: one worker now, without a dump of every socket on the way
                pending = 1
            self._apply(pm.on_connection(self.pm, self._views(), self.pm_state, pending,
                                         self.host.capacity()))
            self.ondemand_handle = self.host.loop.call_later(0.01, self._arm_ondemand)

    # --- status ----------------------------------------------------------

    def status(self, full: bool = False) -> dict[str, Any]:
        from tenantfpm.status import pool_status

        return pool_status(self, full)

