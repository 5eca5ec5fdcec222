"""Process control of one tenant's pool (PHP-FPM's fpm_process_ctl.c): start, reload,
stop, fail with back-off, close; the tenant's socket, cgroup and sandbox set up for a
start or a reload.

A mixin of master/pool.py's Pool: `self` is the pool, whose state it changes and whose
workers it starts and retires through master/children.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import signal
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

from tenantfpm import cgroups, pm, runtimes, verdicts
from tenantfpm.config.tenant import Tenant
from tenantfpm.listen import close_listener, open_listener, path_inode
from tenantfpm.listenq import key_of
from tenantfpm.master.pool_parts import PoolParts

if TYPE_CHECKING:
    from tenantfpm.master.pool import Pool

STOP_MARGIN = 5.0  # seconds past process_control_timeout that stop() waits for reaping


class ProcessControl(PoolParts):
    __slots__ = ()  # a mixin of Pool, which has the slots

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
        if pm.wakes_on_connection(site.pm):
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
            self.isolated = False
            self.log.event("warning", "isolation.enabled = false: workers run with the "
                                      "tenant's uid/gid only, no namespaces, no private "
                                      f"filesystem view; {where}: {', '.join(limits)}")
            return
        # a link's /30 is looked for only by a tenant that has one (an O(N) look)
        isolated = site.isolation.network == "isolated"
        link = self.host.link_index(cast("Pool", self)) if isolated else -1
        self.box.prepare(tenant, link, self.host.isolated_subnet)
        self.isolated = True
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

    async def until(self, done: Callable[[], bool], timeout: float) -> bool:
        """Wait for the pool's events (a state change, an exit, a worker that started
        serving or went idle or busy: its own looks, fast while it starts or reloads) until
        `done()`; False on timeout."""
        deadline = time.monotonic() + timeout
        while not done():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            try:
                await asyncio.wait_for(self.changed.wait(), left)
            except TimeoutError:
                return done()
        return True

    async def wait_settled(self, timeout: float) -> bool:
        """Until the pool serves (running) or gave up (failed); False on timeout."""
        return await self.until(lambda: self.state in ("running", "failed", "stopped"),
                                timeout)

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
            self.output.set_rate(tenant.site.log.rate_limit, tenant.site.log.access_rate_limit)
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
        if pm.wakes_on_connection(tenant.site.pm):
            self._arm_ondemand()
        else:
            self._disarm_ondemand()
        self.spawn(n)
        self.wake()
        gen = self.generation
        await self.until(lambda: self.state != "reloading" or not any(
            w.generation == gen and w.starting for w in self.workers.values()), 10.0)
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
        # an idle old worker leaves at its signal, but until it has run it can still take
        # a connection from the shared socket (accept() prefers a queued connection to a
        # pending signal): return once those are gone, so that the next request after the
        # reload meets the new configuration (a busy one finishes its request, then goes)
        await self.until(lambda: not any(w.generation <= old_gen and w.idle
                                         for w in self.workers.values()), 2.0)
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
