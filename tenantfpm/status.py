"""Status documents (SPEC 4) built from what the master measured.

Fields nothing measures are null: php-cgi keeps no request counter the master
can read, so `accepted_conn` and per-process `requests` are null for php pools.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from tenantfpm import inspect

if TYPE_CHECKING:
    from tenantfpm.master.pool import Pool


def process_status(pool: Pool, now: float) -> list[dict[str, Any]]:
    out = []
    for w in sorted(pool.workers.values(), key=lambda w: w.pid):
        if w.starting:
            state = "Starting"
        elif w.retiring:
            state = "Finishing"
        else:
            state = "Idle" if w.idle else "Running"
        duration = (round((now - w.busy_since) * 1000) if w.busy_since is not None
                    and not w.idle else None)
        req = None
        if state == "Running":
            try:
                req = pool.inspect(w)
            except inspect.Unavailable:
                req = None
        out.append({
            "pid": w.pid,
            "state": state,
            "start_time": int(w.wall_started),
            "start_since": int(time.time() - w.wall_started),
            "requests": None,
            "max_requests": w.max_requests or None,
            "request_duration_ms": duration,
            "request_method": req.method if req else None,
            "request_uri": req.uri if req else None,
            "script": req.script if req else None,
            "content_length": req.content_length if req else None,
            "rss": w.rss,
            "cpu_seconds": w.cpu_seconds,
            "generation": w.generation,
        })
    return out


def _sandbox(pool: Pool) -> dict[str, Any] | str:
    iso = pool.tenant.site.isolation
    if not iso.enabled:
        return "disabled"
    return {"namespaces": ["mount", "ipc", "uts", "cgroup"] + (["pid"] if iso.hide_processes
                                                              else []),
            "network": iso.network,
            "address": pool.box.link.tenant_address if pool.box.link else None,
            "uid": pool.tenant.uid, "gid": pool.tenant.gid}


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
        "accepted_conn": None,
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
        "sandbox": _sandbox(pool),
        "cgroup": pool.cgroup.describe() if pool.cgroup else None,
        "log_dir": pool.tenant.log_dir,
    }
    if pool.error:
        doc["error"] = pool.error
    if full:
        doc["processes"] = process_status(pool, now)
    return doc
