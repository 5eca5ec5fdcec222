"""One tenant's pool: its state, its timer, the pm's decisions applied, ondemand's
wake-up on the socket, and its status.

Split along PHP-FPM's seams: process control (start, reload, stop) in process_ctl.py,
the children (spawn, retire, reap, crash and OOM verdicts) in children.py, what the
master sees of them in sampling.py, their output in stdio.py, a running request's
verdicts in requests.py, the zygote protocol in zygote.py. The decisions themselves
come from tenantfpm.pm and tenantfpm.verdicts (pure). Everything runs on the master's
event loop: no threads, no locks.
"""

from __future__ import annotations

import asyncio
import math
import signal
import socket
import time
from typing import Any, Protocol

from tenantfpm import cgroups, inspect, pm, runtimes, verdicts
from tenantfpm.config.tenant import Tenant
from tenantfpm.listenq import Queue
from tenantfpm.logs import TenantLog
from tenantfpm.master import requests
from tenantfpm.master.children import Children
from tenantfpm.master.process_ctl import ProcessControl
from tenantfpm.master.sampling import Sampling
from tenantfpm.master.stdio import Output
from tenantfpm.master.worker import Worker
from tenantfpm.master.zygote import HELLO_LOOK, Forker
from tenantfpm.pm import Decision, WorkerView
from tenantfpm.sandbox.spawn import Sandbox
from tenantfpm.sandbox.tenant import TenantSandbox

# How often a starting pool looks for its first worker to serve: an add answers after it.
# A zygote's worker says hello just before it does, and the pool then looks within
# HELLO_LOOK, for a short while. Not faster for everyone: a master booting a thousand
# static tenants has them all starting at once.
STARTING_TICK = 0.02
HELLO_WINDOW = 0.5  # seconds from a fork order during which its worker's hello brings them


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
    def note_busy(self, pool: Pool, busy: int) -> None: ...
    def link_index(self, pool: Pool) -> int: ...
    def own_child(self, pid: int, pool: Pool) -> None: ...
    def listen_queue(self, pool: Pool, max_age: float) -> Queue | None: ...
    def log(self, level: str, message: str) -> None: ...
    def protect(self, extra: list[Tenant] | None = None) -> str | None: ...
    def retenant(self, pool: Pool, old: Tenant | None, new: Tenant | None) -> None: ...


class Pool(ProcessControl, Children, Sampling):
    """One tenant: its socket, its workers and zygotes, its timer. Process control,
    the children and the sampling of them are in their own modules (mixins)."""

    __slots__ = ()  # PoolParts holds them

    def __init__(self, host: Host, tenant: Tenant) -> None:
        self.host = host
        self._tenant = tenant
        self.log = self._open_log(tenant)
        self.output = Output(host.loop, lambda: self.log, tenant.site.log.rate_limit,
                             tenant.site.log.access_rate_limit)
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
        self.crashes: list[float] = []  # SIGSEGV/SIGBUS deaths within the window
        self.forker = Forker(self)  # the zygotes, for runtimes that fork from one
        self.box = TenantSandbox(tenant)
        self.isolated = False  # set by start: workers run in the sandbox (box.plan())
        self.cgroup: cgroups.TenantCgroup | None = None
        self.oom_base = 0  # the cgroup's oom_kill count when this master took it over
        self.oom = verdicts.OomWatch()
        self._changed: asyncio.Event | None = None  # made for a waiter (most pools have none)
        self.ondemand_armed = False
        self.ondemand_handle: asyncio.TimerHandle | None = None
        # counters (status)
        self.max_children_reached = 0
        self.slow_requests = 0
        self.terminated_requests = 0
        self.worker_restarts = 0
        self.max_active = 0
        self.sampled_at = 0.0  # monotonic time of the last sample (busy since then)
        self.listen_queue: int | None = None
        self.max_listen_queue: int | None = None
        self.listen_queue_len: int | None = None
        self.queue_seen: tuple[float, Queue | None] = (0.0, None)  # the kernel's last answer
        self.accepted_gone = 0  # connections accepted by python workers that have exited

    # --- lifecycle -------------------------------------------------------

    @staticmethod
    def _open_log(tenant: Tenant) -> TenantLog:
        return TenantLog(tenant.name, tenant.log_dir, tenant.site.log.max_size)

    @property
    def tenant(self) -> Tenant:
        return self._tenant

    @tenant.setter
    def tenant(self, tenant: Tenant) -> None:
        """A reload's new configuration (or the old one back): the master's index of what
        each tenant holds follows."""
        old, self._tenant = self._tenant, tenant
        if old is not tenant:
            self.host.retenant(self, old, tenant)

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

    @property
    def sandbox(self) -> Sandbox | None:
        """The sequence a zygote or worker starts with; None: isolation disabled."""
        return self.box.plan() if self.isolated else None

    @property
    def changed(self) -> asyncio.Event:
        """Set on the next state change (a start, an exit, a stop), for waiters."""
        if self._changed is None:
            self._changed = asyncio.Event()
        return self._changed

    def _wake_waiters(self) -> None:
        """Wake everyone awaiting a change; later waiters get a fresh event."""
        if self._changed is not None:
            self._changed.set()
            self._changed = None

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

    def tick_by(self, at: float) -> None:
        """Tick no later than `at`: a worker said it is up, and an add waits on it."""
        if self._tick_handle is None or self.next_tick > at:
            self.schedule(at)

    def _dormant(self) -> bool:
        """An ondemand pool with nothing running waits for its socket, not for a timer:
        10,000 idle tenants cost the master nothing between their requests."""
        return pm.dormant(self.pm, self.state == "running",
                          bool(self.workers or self.forker.zygotes), self.ondemand_armed)

    def _run_tick(self) -> None:
        self._tick_handle = None
        now = time.monotonic()
        try:
            self.tick()
        except Exception as e:  # a bug in one pool must not stop the others
            self.host.log("error", f"[pool {self.name}] tick failed: {e!r}")
            self.next_tick = now + 1.0
        at = self.next_tick if self.next_tick > now else now + 1.0
        if self._dormant():  # nothing runs: no descriptor, mount or timer kept for it
            self.log.rest()
            self.box.rest()
            at = math.inf
        self.schedule(at)

    def tick(self) -> None:
        now = time.monotonic()
        if self.state == "failed":
            self.host.note_busy(self, 0)  # its workers are gone: it weighs nothing (cpu_share)
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
            if verdicts.overdue(w.kill_at, now):
                self.log.event("warning", f"child {w.pid} did not exit after "
                                          f"process_control_timeout, killing it")
                w.signal(signal.SIGKILL)
                w.kill_at = None
            requests.check(self, w, now)
            if verdicts.over_memory(self.pm.max_worker_memory, w.rss, w.idle,
                                    w.retiring is not None):
                self.log.event("notice", f"child {w.pid} uses {(w.rss or 0) >> 20}M, over "
                                         f"pm.max_worker_memory: recycling it")
                self.retire(w, "memory")
        if self.state not in ("running", "starting", "reloading"):
            return
        self._apply(pm.tick(self.pm, self._views(), self.pm_state, now,
                            pending=self.listen_queue or 0, capacity=self.host.capacity()))
        self.next_tick = now + pm.tick_interval(self.pm, self.pm_state)
        if self.state in ("starting", "reloading"):  # an add or a reload waits on its looks
            about_to_serve = any(w.ns_pid is not None and not w.seen_idle
                                 and now - w.started < HELLO_WINDOW
                                 for w in self.workers.values())
            self.next_tick = now + (HELLO_LOOK if about_to_serve else STARTING_TICK)
        deadline = requests.next_deadline(self, now)
        if deadline is not None:
            self.next_tick = min(self.next_tick, deadline)

    def inspect(self, w: Worker, depth: int = 0) -> inspect.PhpState:
        """The worker's current request (and `depth` stack frames), read from outside it."""
        return runtimes.of(self.tenant).inspect(w.pid, w.exe, depth)

    def _views(self) -> list[WorkerView]:
        return [WorkerView(w.pid, w.idle, w.starting, w.last_activity)
                for w in self.workers.values() if w.retiring is None]

    def _apply(self, d: Decision) -> None:
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

