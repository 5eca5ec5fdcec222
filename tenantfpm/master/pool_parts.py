"""What the parts of a pool share, declared once for the type checker.

A pool's process control (process_ctl.py), children (children.py) and sampling
(sampling.py) are parts of one Pool (pool.py), which holds the state below in its slots
and defines the methods; each part inherits these declarations so that what it reaches
for is typed and checked (mypy in `make lint`), not assumed.
"""

from __future__ import annotations

import asyncio
import socket
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tenantfpm import cgroups, pm, verdicts
    from tenantfpm.config.tenant import Tenant
    from tenantfpm.listenq import Queue
    from tenantfpm.logs import TenantLog
    from tenantfpm.master.pool import Host
    from tenantfpm.master.stdio import Output
    from tenantfpm.master.worker import Worker
    from tenantfpm.master.zygote import Forker
    from tenantfpm.sandbox.spawn import Sandbox
    from tenantfpm.sandbox.tenant import TenantSandbox


class PoolParts:
    # slots, not a __dict__: 40 attributes make a 1.6 kB dict each, 16 MB for 10,000 tenants
    __slots__ = ("_changed", "_tenant", "_tick_handle", "accepted_gone", "box", "cgroup",
                 "closed", "crashes", "error", "forker", "generation", "host", "isolated",
                 "listen_queue", "listen_queue_len", "log", "max_active",
                 "max_children_reached", "max_listen_queue", "next_retry", "next_tick",
                 "ondemand_armed", "ondemand_handle", "oom", "oom_base", "output", "pm_state",
                 "queue_seen", "retry_delay", "sampled_at", "slow_requests", "sock",
                 "sock_inode", "sock_key",
                 "start_failures", "start_time", "state", "terminated_requests",
                 "worker_restarts", "workers")


    if TYPE_CHECKING:
        host: Host
        log: TenantLog
        output: Output
        state: str
        error: str | None
        sock: socket.socket | None
        sock_key: int | None
        sock_inode: int | None
        workers: dict[int, Worker]
        generation: int
        pm_state: pm.PoolState
        start_time: float
        next_tick: float
        closed: bool
        start_failures: int
        retry_delay: float
        next_retry: float | None
        crashes: list[float]
        forker: Forker
        box: TenantSandbox
        isolated: bool
        cgroup: cgroups.TenantCgroup | None
        oom_base: int
        oom: verdicts.OomWatch
        ondemand_armed: bool
        ondemand_handle: asyncio.TimerHandle | None
        max_children_reached: int
        slow_requests: int
        terminated_requests: int
        worker_restarts: int
        max_active: int
        sampled_at: float
        listen_queue: int | None
        max_listen_queue: int | None
        listen_queue_len: int | None
        queue_seen: tuple[float, Queue | None]
        accepted_gone: int

        @property
        def tenant(self) -> Tenant: ...
        @tenant.setter
        def tenant(self, tenant: Tenant) -> None: ...
        @property
        def pm(self) -> Any: ...
        @property
        def name(self) -> str: ...
        @property
        def sandbox(self) -> Sandbox | None: ...
        @property
        def changed(self) -> asyncio.Event: ...
        @staticmethod
        def _open_log(tenant: Tenant) -> TenantLog: ...
        def _set_state(self, state: str, error: str | None = None) -> None: ...
        def _wake_waiters(self) -> None: ...
        def schedule(self, at: float) -> None: ...
        def wake(self) -> None: ...
        def tick_by(self, at: float) -> None: ...
        def _arm_ondemand(self) -> None: ...
        def _disarm_ondemand(self) -> None: ...
        def sample(self, fresh: bool = False) -> None: ...
        def spawn(self, n: int, look: bool = True) -> None: ...
        def retire(self, w: Worker, reason: str) -> None: ...
        def forget(self, w: Worker) -> str: ...
        def start(self, probe: bool = False) -> None: ...
        def _fail(self, message: str) -> None: ...
        def _watch_oom(self, now: float) -> None: ...
        async def reload(self, tenant: Tenant) -> bool: ...
