"""A pool's tick through a fake host: the pm's decisions carried out, the timers it keeps,
and the recycling and kill rules, with no process started. The effects (spawn, retire,
sample, start) are recorded instead; the policy behind them is pm.py's and verdicts.py's,
tested on their own."""

from __future__ import annotations

import asyncio
import math
import signal
import time

import pytest

from tenantfpm.config.model import Site
from tenantfpm.config.rules import parse_listen
from tenantfpm.config.tenant import Tenant
from tenantfpm.master.pool import Pool
from tenantfpm.master.worker import Worker


class FakeHost:
    """What a pool asks of the master, answered by a test."""

    process_control_timeout = 10.0
    emergency_restart_threshold = 0
    emergency_restart_interval = 0.0
    cgroups = None
    isolated_subnet = "10.213.0.0/16"

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.busy: list[int] = []
        self.children: dict[int, Pool] = {}
        self.said: list[tuple[str, str]] = []

    def capacity(self) -> int | None:
        return None

    def workers_weight(self) -> int:
        return 0

    def note_busy(self, pool: Pool, busy: int) -> None:
        self.busy.append(busy)

    def link_index(self, pool: Pool) -> int:
        return 0

    def listen_queue(self, pool: Pool, max_age: float) -> None:
        return None

    def log(self, level: str, message: str) -> None:
        self.said.append((level, message))

    def protect(self, extra: list[Tenant] | None = None) -> str | None:
        return None

    def retenant(self, pool: Pool, old: Tenant | None, new: Tenant | None) -> None:
        pass

    def own_child(self, pid: int, pool: Pool) -> None:
        self.children[pid] = pool


class FakeWorker(Worker):
    signals: list[int]

    def signal(self, sig: int) -> None:  # never a real process
        self.signals.append(sig)


class RecordedPool(Pool):
    """A Pool whose effects are recorded: what the tick decided, not what it did."""

    def __init__(self, host: FakeHost, tenant: Tenant) -> None:
        super().__init__(host, tenant)  # type: ignore[arg-type]
        self.spawned: list[int] = []
        self.retired: list[tuple[int, str]] = []
        self.starts: list[bool] = []
        self.next_pid = 1000

    def spawn(self, n: int, look: bool = True) -> None:
        self.spawned.append(n)

    def retire(self, w: Worker, reason: str) -> None:
        self.retired.append((w.pid, reason))
        w.retiring = reason

    def sample(self, fresh: bool = False) -> None:
        pass  # the test sets what the look would have found

    def _watch_oom(self, now: float) -> None:
        pass

    def start(self, probe: bool = False) -> None:
        self.starts.append(probe)

    def add(self, idle: bool, **kw) -> FakeWorker:
        now = time.monotonic()
        w = FakeWorker(pid=self.next_pid, generation=self.generation, started=now,
                       max_requests=0, stdout=None, stderr=None, errpipe=None,
                       last_activity=kw.pop("last_activity", now), seen_idle=True, idle=idle,
                       **kw)
        w.signals = []
        self.workers[w.pid] = w
        self.next_pid += 1
        return w


def site(tmp_path, **pm) -> Tenant:
    s = Site.model_validate({"name": "shop", "user": "alice", "root": "/srv/shop",
                             "pm": pm, "log": {"access": False}})
    return Tenant(site=s, listen=parse_listen("/run/t/shop.sock"), log_dir=str(tmp_path),
                  run_dir=str(tmp_path / "run"), uid=1001, gid=1001)


@pytest.fixture
def host():
    loop = asyncio.new_event_loop()
    yield FakeHost(loop)
    loop.close()


def running(host: FakeHost, tenant: Tenant) -> RecordedPool:
    pool = RecordedPool(host, tenant)
    pool.state = "running"
    return pool


def test_a_static_pool_short_of_workers_spawns_the_rest(host, tmp_path):
    pool = running(host, site(tmp_path, mode="static", max_children=4))
    pool.add(idle=True)
    pool.add(idle=False)
    pool.tick()
    assert pool.spawned == [2] and pool.retired == []
    assert host.busy == []  # a running pool's weight comes from its sample, not here
    pool.close()


def test_a_dynamic_pool_with_too_many_spares_retires_the_one_idle_longest(host, tmp_path):
    pool = running(host, site(tmp_path, mode="dynamic", max_children=8, start_servers=2,
                              min_spare_servers=1, max_spare_servers=2))
    now = time.monotonic()
    pool.add(idle=True, last_activity=now - 5)
    oldest = pool.add(idle=True, last_activity=now - 50)
    pool.add(idle=True, last_activity=now - 1)
    pool.tick()
    assert pool.retired == [(oldest.pid, "idle")] and pool.spawned == []
    pool.close()


def test_an_idle_worker_over_max_worker_memory_is_recycled(host, tmp_path):
    pool = running(host, site(tmp_path, mode="static", max_children=2,
                              max_worker_memory="64M"))
    fat = pool.add(idle=True, rss=65 << 20)
    pool.add(idle=False, rss=80 << 20)  # in a request: left alone until it is idle
    pool.tick()
    assert pool.retired == [(fat.pid, "memory")]
    pool.close()


def test_a_worker_past_process_control_timeout_is_killed_once(host, tmp_path):
    pool = running(host, site(tmp_path, mode="static", max_children=1))
    w = pool.add(idle=False, kill_at=time.monotonic() - 0.1, retiring="reload")
    pool.tick()
    pool.tick()
    assert w.signals == [signal.SIGKILL] and w.kill_at is None
    pool.close()


def test_an_ondemand_pool_with_nothing_running_rests_on_its_socket(host, tmp_path):
    pool = running(host, site(tmp_path, mode="ondemand", max_children=4))
    pool.ondemand_armed = True  # as start() leaves it: the socket wakes the pool
    pool._run_tick()
    assert pool.next_tick == math.inf and pool._tick_handle is None
    # with a worker it keeps its timer (the idle timeout is the timer's to see)
    pool.add(idle=True)
    pool._run_tick()
    assert pool.next_tick < math.inf
    pool.ondemand_armed = False
    pool.close()


def test_a_failed_pool_retries_when_its_time_comes_and_weighs_nothing(host, tmp_path):
    pool = running(host, site(tmp_path, mode="static", max_children=2))
    pool.state = "failed"
    pool.next_retry = time.monotonic() + 60
    pool.tick()
    assert pool.starts == [] and host.busy == [0]
    pool.next_retry = time.monotonic() - 1
    pool.tick()
    assert pool.starts == [True] and pool.next_retry is None  # a probe start
    pool.close()


def test_a_tick_that_fails_is_logged_and_the_pool_ticks_again(host, tmp_path):
    pool = running(host, site(tmp_path, mode="static", max_children=1))

    def broken() -> None:
        raise RuntimeError("boom")

    pool.tick = broken  # type: ignore[method-assign]
    pool._run_tick()
    assert host.said and "tick failed" in host.said[0][1]
    assert pool.next_tick != math.inf and pool._tick_handle is not None
    pool.close()


def test_the_status_document_holds_every_field_of_the_table(host, tmp_path):
    """status_fields.POOL is what the FPM page, the metrics and `top` render: each of its
    keys is in the document, and every count the document has is in the table."""
    from tenantfpm import fpm_status, metrics
    from tenantfpm.status_fields import POOL

    pool = running(host, site(tmp_path, mode="static", max_children=2))
    pool.add(idle=True)
    pool.add(idle=False)
    doc = pool.status()
    keys = {f.key for f in POOL}
    assert keys <= set(doc)
    counts = {k for k, v in doc.items() if isinstance(v, int) and not isinstance(v, bool)}
    assert counts - keys <= {"zygote_pid"}, counts - keys
    assert (doc["idle_processes"], doc["active_processes"], doc["total_processes"]) == (1, 1, 2)
    page = fpm_status.plain(doc, full=False)
    assert "idle processes:       1\n" in page and "active processes:     1\n" in page
    assert page.splitlines()[0].startswith("pool:") and "slow requests:" in page.splitlines()[-1]
    exposed = {m.name for m in metrics.PoolCollector(lambda: [doc], False).collect()}
    assert {"phpfpm_idle_processes", "phpfpm_active_processes",
            "tenantfpm_worker_restarts"} <= exposed
    pool.close()
