"""A pool's status, field by field: one table that the status document, PHP-FPM's status
page, the metrics and the CLI's tables all render from.

Each field names its key in the status document (status.py builds it from what the
master measured; a field it cannot know is None), its label on PHP-FPM's status page
(fpm_status.py; None: FPM has no such line), its metric (metrics.py; None: no metric),
the kind and unit of its value, where the master gets it, and its column in `tenantfpm
top`. PHP-FPM's fields come first, in the order fpm_status.c prints them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Source = Literal["master", "kernel", "scoreboard", "cgroup", "procfs", "config"]


@dataclass(frozen=True)
class Field:
    key: str
    fpm: str | None
    metric: str | None
    kind: Literal["counter", "gauge", "text"]
    unit: str
    source: Source
    help: str
    column: str | None = None  # its header in `tenantfpm top`


POOL: tuple[Field, ...] = (
    Field("name", "pool", None, "text", "", "config", "The pool's (tenant's) name."),
    Field("pm", "process manager", None, "text", "", "config", "static, dynamic or ondemand."),
    Field("start_time", "start time", None, "gauge", "seconds", "master",
          "When the pool started (Unix time)."),
    Field("start_since", "start since", "phpfpm_start_since", "counter", "seconds", "master",
          "The number of seconds since FPM has started."),
    Field("accepted_conn", "accepted conn", "phpfpm_accepted_connections", "counter",
          "connections", "scoreboard", "The number of requests accepted by the pool."),
    Field("listen_queue", "listen queue", "phpfpm_listen_queue", "gauge", "connections",
          "kernel", "The number of requests in the queue of pending connections.", "QUEUE"),
    Field("max_listen_queue", "max listen queue", "phpfpm_max_listen_queue", "gauge",
          "connections", "kernel", "The maximum number of requests in the queue of pending "
          "connections since FPM has started."),
    Field("listen_queue_len", "listen queue len", "phpfpm_listen_queue_length", "gauge",
          "connections", "kernel", "The size of the socket queue of pending connections."),
    Field("idle_processes", "idle processes", "phpfpm_idle_processes", "gauge", "processes",
          "procfs", "The number of idle processes.", "IDLE"),
    Field("active_processes", "active processes", "phpfpm_active_processes", "gauge",
          "processes", "procfs", "The number of active processes.", "ACT"),
    Field("total_processes", "total processes", "phpfpm_total_processes", "gauge",
          "processes", "master", "The number of idle + active processes."),
    Field("max_active_processes", "max active processes", "phpfpm_max_active_processes",
          "gauge", "processes", "procfs",
          "The maximum number of active processes since FPM has started."),
    Field("max_children_reached", "max children reached", "phpfpm_max_children_reached",
          "counter", "times", "master", "The number of times, the process limit has been "
          "reached.", "MAXED"),
    Field("slow_requests", "slow requests", "phpfpm_slow_requests", "counter", "requests",
          "master", "The number of requests that exceeded your 'request_slowlog_timeout' "
          "value.", "SLOW"),
    Field("terminated_requests", None, "tenantfpm_terminated_requests", "counter", "requests",
          "master", "Requests killed at request_terminate_timeout.", "KILL"),
    Field("worker_restarts", None, "tenantfpm_worker_restarts", "counter", "processes",
          "master", "Workers replaced after an unexpected exit or a recycling.", "RESTART"),
    Field("oom_kills", None, "tenantfpm_oom_kills", "counter", "processes", "cgroup",
          "Processes of the tenant killed by the OOM killer.", "OOM"),
    Field("memory_current", None, "tenantfpm_memory_bytes", "gauge", "bytes", "cgroup",
          "Memory charged to the tenant's cgroup."),
    Field("memory_limit", None, "tenantfpm_memory_limit_bytes", "gauge", "bytes", "cgroup",
          "The tenant's cgroup memory limit."),
    Field("cgroup_cpu_seconds", None, "tenantfpm_cpu_seconds", "counter", "seconds", "cgroup",
          "CPU time used by the tenant's cgroup."),
    Field("pids_current", None, None, "gauge", "processes", "cgroup",
          "Processes in the tenant's cgroup."),
    Field("workers_rss", None, "tenantfpm_workers_rss_bytes", "gauge", "bytes", "procfs",
          "Resident memory of the tenant's workers, summed."),
    Field("max_children", None, None, "gauge", "processes", "config", "pm.max_children."),
)
BY_KEY = {f.key: f for f in POOL}
FPM_PAGE = tuple(f for f in POOL if f.fpm is not None)
METRICS = tuple(f for f in POOL if f.metric is not None)
# `tenantfpm top`'s columns after TENANT and STATE ("PROCS": total/max_children, after IDLE)
TOP = tuple(BY_KEY[k] for k in ("active_processes", "idle_processes", "listen_queue",
                                "max_children_reached", "slow_requests",
                                "terminated_requests", "worker_restarts", "oom_kills"))
