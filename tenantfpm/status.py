"""Status documents (SPEC 4) built from what the master measured.

Fields nothing measures are null: php (the project's SAPI) and python workers
publish every figure in their scoreboard; php-cgi and other `fastcgi` programs
keep no request counter the master can read, so `accepted_conn`, per-process
`requests` and the last request's figures are null for them.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from tenantfpm import inspect, runtimes
from tenantfpm.wire.scoreboard import READING, RUNNING, STATE_NAMES, Slot

if TYPE_CHECKING:
    from tenantfpm.master.pool import Pool
    from tenantfpm.master.worker import Worker


def process_status(pool: Pool, now: float) -> list[dict[str, Any]]:
    out = []
    for w in sorted(pool.workers.values(), key=lambda w: w.pid):
        slot = w.board.read() if w.board is not None else None
        if w.starting:
            state = "Starting"
        elif w.retiring:
            state = "Finishing"
        elif slot is not None:
            state = STATE_NAMES[slot.state]
        else:
            state = "Idle" if w.idle else "Running"
        out.append({
            "pid": w.pid,
            "state": state,
            "start_time": int(w.wall_started),
            "start_since": int(time.time() - w.wall_started),
            "requests": slot.requests if slot else None,
            "max_requests": w.max_requests or None,
            **(from_scoreboard(slot, now) if slot else from_memory(pool, w, state, now)),
            "rss": w.rss,
            "cpu_seconds": w.cpu_seconds,
            "generation": w.generation,
        })
    return out


def from_memory(pool: Pool, w: Worker, state: str, now: float) -> dict[str, Any]:
    """What php-cgi's memory says of the running request; nothing of the last one."""
    duration = (round((now - w.busy_since) * 1000) if w.busy_since is not None
                and not w.idle else None)
    req = None
    if state == "Running":
        try:
            req = pool.inspect(w)
        except inspect.Unavailable:
            req = None
    return {"request_duration_ms": duration,
            "request_method": req.method if req else None,
            "request_uri": req.uri if req else None,
            "script": req.script if req else None,
            "content_length": req.content_length if req else None,
            "last_request_cpu": None, "last_request_memory": None}


def from_scoreboard(slot: Slot, now: float) -> dict[str, Any]:
    """The current request while one runs, else the last one, as PHP-FPM shows them."""
    running = slot.state in (READING, RUNNING)
    if running:
        duration: float | None = now - slot.request_start
    else:
        duration = slot.last_duration if slot.last_duration >= 0 else None
    seen = running or slot.requests > 0
    return {"request_duration_ms": round(duration * 1000) if duration is not None else None,
            "request_method": slot.method if seen else None,
            "request_uri": slot.uri if seen else None,
            "script": slot.script if seen else None,
            "content_length": slot.content_length if seen and slot.content_length >= 0
            else None,
            "last_request_cpu": (round(slot.last_cpu_percent, 2)
                                 if slot.last_cpu_percent >= 0 else None),
            "last_request_memory": slot.last_memory if slot.requests else None}


def _sandbox(pool: Pool) -> dict[str, Any] | str:
    iso = pool.tenant.site.isolation
    if not iso.enabled:
        return "disabled"
    return {"namespaces": ["mount", "ipc", "uts", "cgroup"] + (["pid"] if iso.hide_processes
                                                              else []),
            "network": iso.network,
            "address": pool.box.link.tenant_address if pool.box.link else None,
            "uid": pool.tenant.uid, "gid": pool.tenant.gid}


def _accepted(pool: Pool) -> int | None:
    if not runtimes.of(pool.tenant).reports_requests:
        return None  # php-cgi keeps its count to itself
    slots = [w.board.read() for w in pool.workers.values() if w.board is not None]
    if any(s is None for s in slots):
        return None  # a worker's page does not read as one of ours: unknown, not a guess
    return pool.accepted_gone + sum(s.accepted for s in slots if s is not None)


def pool_status(pool: Pool, full: bool = False) -> dict[str, Any]:
    now = time.monotonic()
    site = pool.tenant.site
    live = [w for w in pool.workers.values() if w.retiring is None]
    usage = pool.cgroup.usage() if pool.cgroup else None
    idle = sum(1 for w in live if w.seen_idle and w.idle)
    active = sum(1 for w in live if w.seen_idle and not w.idle)
    doc: dict[str, Any] = {
        "name": pool.name,
        "state": pool.state,
        "pm": site.pm.mode,
        "runtime": site.runtime.type,
        "listen": str(pool.tenant.listen),
        "user": site.user,
        "start_time": int(pool.start_time),
        "start_since": int(time.time() - pool.start_time),
        "accepted_conn": _accepted(pool),
        "listen_queue": pool.listen_queue,
        "max_listen_queue": pool.max_listen_queue,
        "listen_queue_len": pool.listen_queue_len,
        "idle_processes": idle,
        "active_processes": active,
        "total_processes": len(pool.workers),
        "max_active_processes": pool.max_active,
        "max_children": site.pm.max_children,
        "max_children_reached": pool.max_children_reached,
        "slow_requests": pool.slow_requests,
        "terminated_requests": pool.terminated_requests,
        "worker_restarts": pool.worker_restarts,
        # counted from when this master took the cgroup over, as the other counters are
        "oom_kills": (usage.oom_kills - pool.oom_base
                      if usage and usage.oom_kills is not None else None),
        "memory_current": usage.memory_current if usage else None,
        "memory_limit": usage.memory_limit if usage else None,
        "cgroup_cpu_seconds": usage.cpu_seconds if usage else None,
        "pids_current": usage.pids_current if usage else None,
        "workers_rss": sum(w.rss or 0 for w in pool.workers.values()),
        # the php tenant's zygote serving new forks (None: none runs, or another runtime)
        "zygote_pid": pool.forker.current.pid if pool.forker.current else None,
        "sandbox": _sandbox(pool),
        "cgroup": pool.cgroup.describe() if pool.cgroup else None,
        "log_dir": pool.tenant.log_dir,
    }
    if pool.error:
        doc["error"] = pool.error
    if full:
        doc["processes"] = process_status(pool, now)
    return doc
