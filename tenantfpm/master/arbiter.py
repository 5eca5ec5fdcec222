"""The master process: one asyncio loop that owns every pool.

Like gunicorn's arbiter: signal handlers only note the signal and the loop
acts on it; SIGCHLD reaps every dead child and hands it to its pool; a timer
runs each pool's pm tick when it is due. Nothing here blocks.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import grp
import os
import signal
import socket
import time
import traceback
from typing import Any

import prctl

from tenantfpm import cgroups
from tenantfpm.cgroups import favor
from tenantfpm.claims import Claims
from tenantfpm.config.model import GlobalConfig
from tenantfpm.config.rules import parse_listen
from tenantfpm.config.tenant import Tenant
from tenantfpm.cpu_share import FLOOR_PER_CPU, ParentWeight
from tenantfpm.errors import ConfigError, TenantFPMError
from tenantfpm.listenq import ListenQueues, Queue, tcp_one
from tenantfpm.logs import LogFile
from tenantfpm.master.heap import Heap, release_transport_cycles
from tenantfpm.master.pool import Pool
from tenantfpm.netguard import NetGuard
from tenantfpm.registry import Registry
from tenantfpm.sandbox import linux, namespaces, privileges, spawn, spawner

REAP_SAFETY = 1.0  # seconds between waitpid() sweeps besides SIGCHLD
ADD_TIMEOUT = 30.0


class Master:
    def __init__(self, conf: GlobalConfig) -> None:
        self.conf = conf
        m = conf.master
        self.process_control_timeout = m.process_control_timeout
        self.emergency_restart_threshold = m.emergency_restart_threshold
        self.emergency_restart_interval = m.emergency_restart_interval
        self.isolated_subnet = m.isolated_subnet
        self.cgroups: cgroups.Driver | None = None
        self.registry = Registry(conf)
        self.pools: dict[str, Pool] = {}
        # the master's own children (zygotes, exec'd workers) by pid: a reaped child finds
        # its pool without a look at every pool (zygotes' workers are theirs to reap)
        self.child_pools: dict[int, Pool] = {}
        # what the running tenants hold alone: kept as pools come, go and change, so
        # neither an add nor a start walks every tenant
        self.claims = Claims()
        self.heap: Heap | None = None  # from run(), with the loop
        self.broken: dict[str, str] = {}  # registered but invalid: name -> error
        self.mlog = LogFile(m.log_file, m.log_level)
        self.queues = ListenQueues()
        self.stopping = False
        self.done = asyncio.Event()
        self.loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]
        self.said_out_of_fds = False
        self.busy_names: set[str] = set()  # tenants with an add/remove/reload under way
        # the master's own TCP endpoints, as protected as any tenant's listener, and
        # readable by root and the monitoring group only
        endpoints = [a for a in (m.metrics_listen, m.status_listen) if a and a[0] != "/"]
        self.endpoint_ports = {p for a in endpoints if (p := parse_listen(a).port)}
        # (the group is looked up only where it is used: config checks it then)
        monitor_gid = grp.getgrnam(m.status_listen_group).gr_gid if self.endpoint_ports else 0
        self.guard = NetGuard(m.cgroup_parent, m.control_socket,
                              frozenset(self.endpoint_ports), monitor_gid) \
            if m.tenant_firewall else None
        # every uid that ran a tenant's code under this master stays fenced: an old
        # generation (or what it left running) keeps its uid after a reload changed it
        self.fenced_uids: set[int] = set()
        self.booting = False  # starting the registered tenants, all already firewalled
        # what the tenants together weigh against the host's processes: their busy workers
        self.parent_weight = ParentWeight(floor=FLOOR_PER_CPU * len(os.sched_getaffinity(0)),
                                          ceiling=1)
        self.busy: dict[str, int] = {}  # pool -> busy workers at its last sample, if any
        self.busy_total = 0
        self._weigh_handle: asyncio.TimerHandle | None = None

    # --- Host protocol for pools ------------------------------------------

    def log(self, level: str, message: str) -> None:
        self.mlog.write(level, message)

    def capacity(self) -> int | None:
        limit = self.conf.master.process_max
        if limit <= 0:
            return None
        return max(0, limit - sum(len(p.workers) for p in self.pools.values()))

    def workers_weight(self) -> int:
        """What all tenants' workers weigh together now (cpu_share.py), for
        cgroups.Driver.set_parent_weight: never more than every tenant's max_children."""
        self.parent_weight.ceiling = max(1, self.claims.max_children)
        self.parent_weight.refresh(time.monotonic())
        return self.parent_weight.current

    def note_busy(self, pool: Pool, busy: int) -> None:
        """A pool's sample: how many of its workers are busy (cpu_share.py)."""
        old = self.busy.pop(pool.name, 0)
        if busy:
            self.busy[pool.name] = busy
        self.busy_total += busy - old
        self._weigh(self.parent_weight.observe(self.busy_total, time.monotonic()))

    def _weigh(self, weight: int | None) -> None:
        """Write a new parent weight; look again when a held count expires."""
        if weight is not None and self.cgroups is not None:
            self.cgroups.set_parent_weight(weight)
        at = self.parent_weight.falls_at()
        if at is not None and self._weigh_handle is None and self.loop is not None:
            self._weigh_handle = self.loop.call_later(max(0.0, at - time.monotonic()),
                                                      self._reweigh)

    def _reweigh(self) -> None:
        self._weigh_handle = None
        self._weigh(self.parent_weight.refresh(time.monotonic()))

    def retenant(self, pool: Pool, old: Tenant | None, new: Tenant | None) -> None:
        """`pool`'s configuration changed (None: it came or went). A pool this master no
        longer runs (removed while a reload of it was under way) claims nothing."""
        if old is not None:
            self.claims.discard(old)
        if new is not None and self.pools.get(pool.name) is pool:
            self.claims.add(new)

    def own_child(self, pid: int, pool: Pool) -> None:
        """`pool` started `pid`, a child of the master's: its exit goes to that pool."""
        self.child_pools[pid] = pool

    def link_index(self, pool: Pool) -> int:
        """The lowest /30 of isolated_subnet no other pool holds."""
        if pool.box.link_index is not None:
            return pool.box.link_index
        used = {p.box.link_index for p in self.pools.values() if p is not pool}
        return next(i for i in range(len(used) + 1) if i not in used)

    def protect(self, extra: list[Tenant] | None = None) -> str | None:
        """Firewall every tenant uid off every TCP listener (netguard.py), before a tenant's
        socket opens or its workers start. None when in force; else why not."""
        if self.guard is None or self.booting:
            return None
        tenants = [p.tenant for p in self.pools.values()] + (extra or [])
        ports = {t.listen.port for t in tenants if t.listen.port is not None}
        self.fenced_uids |= {t.uid for t in tenants}
        try:
            self.guard.update(self.fenced_uids, ports | self.endpoint_ports)
        except TenantFPMError as e:
            self.log("alert", f"tenant firewall: {e}: tenants can reach TCP listeners")
            return str(e)
        return None

    def listen_queue(self, pool: Pool, max_age: float) -> Queue | None:
        """A Unix listener is looked up by its inode, a TCP one asked itself (O(1) both:
        the master's cost grows neither with the tenants nor with the host's sockets)."""
        if pool.sock is None or pool.sock_key is None:
            return None
        now = time.monotonic()
        at, q = pool.queue_seen
        if now - at > max_age:
            q = (self.queues.unix_one(pool.sock_key) if pool.sock.family == socket.AF_UNIX
                 else tcp_one(pool.sock))
            pool.queue_seen = (now, q)
        return q

    # --- running ----------------------------------------------------------

    async def run(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.loop.set_exception_handler(self._on_loop_error)
        self.heap = Heap(self.loop.call_later, linux.malloc_trim)
        release_transport_cycles()
        self._write_pid_file()
        prctl.set_child_subreaper(1)
        namespaces.isolate_master_mounts()
        privileges.raise_own_nofile()
        self.cgroups = self._detect_cgroups()
        # while the master is small, and after what its children inherit from it is set
        # (mount namespace, descriptor limit, cgroup): it forks for the master from now on
        spawn.server = spawner.Server.start(self.log, self.conf.master.warm_php)
        for sig in (signal.SIGCHLD, signal.SIGUSR1, signal.SIGUSR2, signal.SIGQUIT,
                    signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            self.loop.add_signal_handler(sig, self._on_signal, sig)
        from tenantfpm.master.control import ControlServer

        control = ControlServer(self)
        await control.start()
        self_service = None
        if self.conf.master.self_service_socket:
            from tenantfpm.master.self_service import SelfService

            self_service = SelfService(self, self.conf.master.self_service_socket)
            await self_service.start()
        exporter = None
        if self.endpoint_ports:  # fenced before they listen, tenants or not
            self.protect()
        if self.conf.master.metrics_listen:
            from tenantfpm.master.metrics_server import MetricsServer

            exporter = MetricsServer(self, self.conf.master.metrics_listen,
                                     self.conf.master.status_listen_group)
            await exporter.start()
            self.log("notice", f"metrics on {exporter.address}: /metrics, /status")
        status_page = None
        if self.conf.master.status_listen:
            from tenantfpm.master.status_server import StatusServer

            status_page = StatusServer(self, self.conf.master.status_listen,
                                       self.conf.master.status_listen_group)
            await status_page.start()
            self.log("notice", f"PHP-FPM status pages on {status_page.address}: /status/NAME")
        self.log("notice", f"tenantfpm master started, pid {os.getpid()}, control socket "
                           f"{self.conf.master.control_socket}")
        if self.guard is None:
            self.log("warning", "tenant_firewall = false: tenants' code can connect to TCP "
                                "listeners of any tenant and to the metrics/status endpoints")
        self._boot_tenants()
        self._changed()
        self._notify("READY=1\nSTATUS=serving " + f"{len(self.pools)} tenants")
        ticker = self.loop.create_task(self._ticker())
        try:
            await self.done.wait()
        finally:
            ticker.cancel()
            if self.heap is not None:
                self.heap.close()
            await control.stop()
            if self_service is not None:
                await self_service.stop()
            if exporter is not None:
                await exporter.stop()
            if status_page is not None:
                await status_page.stop()
            for pool in self.pools.values():
                pool.close()
            if self.guard is not None:
                self.guard.remove()
            if spawn.server is not None:
                spawn.server.close()
                spawn.server = None
            if self.cgroups is not None:
                self.cgroups.cleanup()
            self.queues.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.conf.master.pid_file)
            self.log("notice", "exiting, bye-bye!")
            self.mlog.close()

    def _on_loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """A callback's exception (a bug) goes to the master's log, where an admin looks,
        not to a stderr nobody reads; the loop and the other tenants go on."""
        exc = context.get("exception")
        if isinstance(exc, OSError) and exc.errno in (errno.EMFILE, errno.ENFILE):
            # a flood of connections to a socket any user may reach: asyncio stops
            # accepting on it for a second; said once, not once a second
            if not self.said_out_of_fds:
                self.said_out_of_fds = True
                self.log("error", f"out of descriptors ({exc.strerror}): a listener stops "
                                  "accepting for a second each time (said once)")
            return
        detail = "".join(traceback.format_exception(exc)).strip() if exc else ""
        self.log("error", f"internal error: {context.get('message', '?')}"
                          + (f"\n{detail}" if detail else ""))

    def _detect_cgroups(self) -> cgroups.Driver | None:
        try:
            driver = cgroups.detect(self.conf.master.cgroup_parent,
                                    delegated=self.conf.master.cgroup_delegated)
        except OSError as e:
            self.log("error", f"cgroups: cannot detect the hierarchy: {e}; [limits] unavailable")
            return None
        missing = driver.check()
        for problem in missing:
            self.log("warning", f"cgroups: {problem}")
        self.log("notice", f"cgroups: v{driver.version}, tenants under {driver.parent}/"
                           + (" (the unit's own: Delegate=yes)" if driver.unit else ""))
        if self.conf.master.cgroup_favordynmods:
            try:
                self.log("notice", f"cgroups: {favor.enable()}")
            except OSError as e:
                self.log("warning", f"cgroups: cgroup_favordynmods: {e.strerror or e}; "
                                    "each worker waits for the kernel to join its cgroup")
        return driver

    def _write_pid_file(self) -> None:
        path = self.conf.master.pid_file
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
        try:
            with open(path) as f:
                old = int(f.read().strip() or 0)
        except (FileNotFoundError, ValueError):
            old = 0
        if old and old != os.getpid() and _alive(old):
            raise TenantFPMError(f"another master is running (pid {old}, pid file {path})")
        with open(path, "w") as f:
            f.write(f"{os.getpid()}\n")

    def _boot_tenants(self) -> None:
        tenants, bad = self.registry.load_all()
        for name, err in bad.items():
            self.broken[name] = str(err)
            self.log("error", f"tenant {name} not started: {err}")
        unguarded = self.protect(list(tenants.values()))  # one ruleset for all of them
        self.booting = unguarded is None  # ... so each pool's start need not recompute it
        try:
            for tenant in tenants.values():
                self._start_pool(tenant, probe=False)
        finally:
            self.booting = False

    def _start_pool(self, tenant: Tenant, probe: bool) -> Pool:
        pool = Pool(self, tenant)
        self.pools[tenant.name] = pool
        self.retenant(pool, None, tenant)
        self.broken.pop(tenant.name, None)
        pool.start(probe=probe)
        return pool

    async def _ticker(self) -> None:
        """Each pool runs on its own timer (Pool.schedule); this is the safety net only:
        a SIGCHLD lost to a race must not strand a dead worker."""
        while True:
            self._reap()
            await asyncio.sleep(REAP_SAFETY)

    def _on_signal(self, sig: int) -> None:
        if sig == signal.SIGCHLD:
            self._reap()
        elif sig == signal.SIGUSR1:
            self.reopen_logs()
        elif sig in (signal.SIGUSR2, signal.SIGHUP):
            self.log("notice", "reloading all tenants (signal)")
            self.loop.create_task(self.reload_all())
        elif sig == signal.SIGQUIT:
            self.loop.create_task(self.shutdown(graceful=True))
        else:
            self.loop.create_task(self.shutdown(graceful=False))

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            # each child is registered as it starts (own_child), so a replacement that
            # on_exit() spawns, and that dies at once, is found in the next pass of this loop
            pool = self.child_pools.pop(pid, None)
            if pool is not None and self.pools.get(pool.name) is pool and (
                    pid in pool.workers or pool.forker.owns(pid)):
                pool.on_exit(pid, status)

    def _notify(self, message: str) -> None:
        """systemd Type=notify."""
        addr = os.environ.get("NOTIFY_SOCKET")
        if not addr:
            return
        if addr.startswith("@"):
            addr = "\0" + addr[1:]
        with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX,
                                                          socket.SOCK_DGRAM) as s:
            s.sendto(message.encode(), addr)

    # --- operations (control API and signals) -----------------------------

    def reopen_logs(self) -> None:
        self.mlog.reopen()
        for pool in self.pools.values():
            pool.log.reopen()
        self.log("notice", "log files reopened")

    async def shutdown(self, graceful: bool) -> None:
        if self.stopping:
            if not graceful:  # a second, fast stop overrides a graceful one
                for pool in self.pools.values():
                    for w in pool.workers.values():
                        w.signal(signal.SIGKILL)
            return
        self.stopping = True
        self._notify("STOPPING=1")
        self.log("notice", "shutting down" + (" gracefully" if graceful else " (fast)"))
        await asyncio.gather(*(p.stop(graceful) for p in self.pools.values()))
        self.done.set()

    async def reload_all(self) -> dict[str, str]:
        """Every tenant re-read and reloaded, each on its own: one tenant's bad file or
        failed reload is reported for it and never stops the others."""
        # systemd (Type=notify): a reload in progress, then serving again
        self._notify("RELOADING=1\nSTATUS=reloading every tenant")
        try:
            return await self._reload_all()
        finally:
            self._notify("READY=1\nSTATUS=serving " + f"{len(self.pools)} tenants")

    async def _reload_all(self) -> dict[str, str]:
        tenants, bad = self.registry.load_all(
            claimed={n: p.tenant for n, p in self.pools.items()})
        result: dict[str, str] = {}
        for name, err in bad.items():
            self.log("error", f"tenant {name} not reloaded: {err}")
            result[name] = f"not reloaded: {err}"
            if name not in self.pools:
                self.broken[name] = str(err)
        for name in list(self.pools):
            if name not in tenants and name not in bad:
                await self.remove(name)
                result[name] = "removed"
        replaced = 0
        for name, tenant in tenants.items():
            try:
                if name in self.pools:
                    replaced += 1
                    ok = await self.pools[name].reload(tenant)
                    result[name] = "reloaded" if ok else (
                        f"not reloaded: {self.pools[name].error or 'did not serve'}")
                else:
                    self._start_pool(tenant, probe=False)
                    result[name] = "started"
            except Exception as e:  # a bug in one tenant's reload must not stop the rest
                self.log("error", f"[pool {name}] reload failed: {e!r}")
                result[name] = f"not reloaded: {e}"
        self._changed(gone=replaced)
        return result

    def _changed(self, gone: int = 0) -> None:
        """Tenants came, changed or went (`gone` of them removed or replaced): their
        objects out of the collector's way (heap.py)."""
        if self.heap is not None:
            self.heap.changed(len(self.pools), gone)

    def _forget(self, name: str) -> None:
        pool = self.pools.pop(name, None)
        if pool is not None:
            self.retenant(pool, pool.tenant, None)
            self.busy_total -= self.busy.pop(name, 0)

    async def _undo_start(self, pool: Pool) -> None:
        """A new tenant that will not be kept: stopped at once, and forgotten."""
        await pool.stop(graceful=False)
        pool.close()
        self._forget(pool.name)

    def _register(self, name: str, text: str) -> None:
        try:
            self.registry.write(name, text)
        except OSError as e:
            raise TenantFPMError(f"cannot register tenant {name}: {e}; nothing was "
                                 "registered") from None

    async def add(self, path: str, replace: bool) -> dict[str, object]:
        """Validate, start, register atomically, wait until it serves; undo all on failure.
        A new tenant is registered while its zygote starts PHP; a replaced one before its
        reload, which may fail and put the previous file back."""
        from tenantfpm.registry import validate_for_add

        site, tenant, text = validate_for_add(self.conf, path, self.claims, replace)
        name = site.name
        if name in self.busy_names:
            raise TenantFPMError(f"tenant {name} is being changed by another command")
        self.busy_names.add(name)
        try:
            previous = self.registry.read_text(name)
            old = self.pools.get(name)
            if old is not None:
                self._register(name, text)
                old_tenant = old.tenant
                ok = await old.reload(tenant)
                pool = old
                settled = True
            else:
                pool = self._start_pool(tenant, probe=True)
                try:  # while its zygote starts PHP: the write's fsync costs the add nothing
                    self._register(name, text)
                except TenantFPMError:
                    await self._undo_start(pool)
                    raise
                settled = await pool.wait_settled(ADD_TIMEOUT)
                ok = pool.state == "running"
            if not ok:
                reason = pool.error or ("did not start serving within "
                                        f"{ADD_TIMEOUT:g}s" if not settled else pool.state)
                self.registry.restore(name, previous)
                if old is not None and pool.tenant is not old_tenant:
                    await pool.reload(old_tenant)
                else:
                    await self._undo_start(pool)
                self.log("error", f"add {name}: {reason}; registration undone")
                raise TenantFPMError(f"tenant {name} failed to start: {reason}\n"
                                     "nothing was registered" + (" (the previous "
                                     "configuration is back)" if old is not None else ""))
            self.log("notice", f"tenant {name} {'replaced' if old else 'added'}")
            self._changed(gone=1 if old is not None else 0)
            return {"name": name, "listen": str(tenant.listen), "replaced": old is not None,
                    "root": site.root, "state": pool.state}
        finally:
            self.busy_names.discard(name)

    async def remove(self, name: str) -> None:
        pool = self.pools.get(name)
        if pool is None and name not in self.broken and not self.registry.path(name).exists():
            raise NotFound(f"no tenant named {name!r}")
        if pool is not None:
            await pool.stop(graceful=True)
            pool.close()
            self._forget(name)
        self.broken.pop(name, None)
        self.registry.remove(name)
        self.log("notice", f"tenant {name} removed")
        self._changed(gone=1)

    def pool(self, name: str) -> Pool:
        pool = self.pools.get(name)
        if pool is None:
            if name in self.broken:
                raise TenantFPMError(f"tenant {name} is registered but invalid: "
                                     f"{self.broken[name]}")
            raise NotFound(f"no tenant named {name!r}")
        return pool

    async def reload_one(self, name: str) -> dict[str, object]:
        try:
            tenant = self.registry.load(name)
        except ConfigError as e:
            if name not in self.pools and name not in self.broken:
                raise NotFound(f"no tenant named {name!r}") from None
            raise TenantFPMError(f"not reloaded, the running configuration stays: {e}") from None
        replaced = name in self.pools
        if not replaced:
            pool = self._start_pool(tenant, probe=True)
        else:
            pool = self.pools[name]
            self.registry.conflicts(tenant, self.claims, str(self.registry.path(name)))
            await pool.reload(tenant)
        self._changed(gone=1 if replaced else 0)
        await pool.wait_settled(ADD_TIMEOUT)
        return {"name": name, "state": pool.state, "generation": pool.generation}

    async def start_one(self, name: str) -> dict[str, object]:
        pool = self.pool(name)
        if pool.state not in ("stopped", "failed"):
            return {"name": name, "state": pool.state}
        if pool.state == "failed":
            await pool.stop(graceful=False)
        pool.start(probe=True)
        await pool.wait_settled(ADD_TIMEOUT)
        return {"name": name, "state": pool.state, "error": pool.error}

    async def stop_one(self, name: str) -> dict[str, object]:
        pool = self.pool(name)
        if pool.state != "stopped":
            await pool.stop(graceful=True)
        return {"name": name, "state": pool.state}

    def list(self) -> list[dict[str, object]]:
        out = [p.status() for p in self.pools.values()]
        out += [{"name": n, "state": "failed", "error": e} for n, e in self.broken.items()]
        return sorted(out, key=lambda d: str(d["name"]))


class NotFound(TenantFPMError):
    pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"tenantfpm" in f.read()
    except OSError:
        return False
