"""/metrics: every pool's status with php-fpm_exporter's names, so its dashboards and
alerts work unchanged.

Built from the same status documents the CLI shows, through prometheus_client's
collector interface and exposition (never hand-formatted). A figure that is
null in status (not measured) is left out, not reported as 0.

php-fpm_exporter serves Prometheus' text format, in which its counters' samples carry
no `_total` (`phpfpm_accepted_connections`); `exporter_names` reproduces those names
exactly for the phpfpm_* families (typed `untyped`: rate() and the dashboards' queries
work the same), which is why /metrics answers in that format only. The tenant's own
families (tenantfpm_*) follow Prometheus' conventions (`_total`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

Status = dict[str, Any]

# status key -> (metric name, kind, help); names follow hipages/php-fpm_exporter
PHPFPM: list[tuple[str, str, str, str]] = [
    ("accepted_conn", "phpfpm_accepted_connections", "counter",
     "The number of requests accepted by the pool."),
    ("listen_queue", "phpfpm_listen_queue", "gauge",
     "The number of requests in the queue of pending connections."),
    ("max_listen_queue", "phpfpm_max_listen_queue", "gauge",
     "The maximum number of requests in the queue of pending connections since FPM has started."),
    ("listen_queue_len", "phpfpm_listen_queue_length", "gauge",
     "The size of the socket queue of pending connections."),
    ("idle_processes", "phpfpm_idle_processes", "gauge", "The number of idle processes."),
    ("active_processes", "phpfpm_active_processes", "gauge", "The number of active processes."),
    ("total_processes", "phpfpm_total_processes", "gauge",
     "The number of idle + active processes."),
    ("max_active_processes", "phpfpm_max_active_processes", "gauge",
     "The maximum number of active processes since FPM has started."),
    ("max_children_reached", "phpfpm_max_children_reached", "counter",
     "The number of times, the process limit has been reached."),
    ("slow_requests", "phpfpm_slow_requests", "counter",
     "The number of requests that exceeded your 'request_slowlog_timeout' value."),
    ("start_since", "phpfpm_start_since", "counter",
     "The number of seconds since FPM has started."),
]
TENANT: list[tuple[str, str, str, str]] = [
    ("memory_current", "tenantfpm_memory_bytes", "gauge",
     "Memory charged to the tenant's cgroup."),
    ("memory_limit", "tenantfpm_memory_limit_bytes", "gauge",
     "The tenant's cgroup memory limit."),
    ("oom_kills", "tenantfpm_oom_kills", "counter",
     "Processes of the tenant killed by the OOM killer."),
    ("cgroup_cpu_seconds", "tenantfpm_cpu_seconds", "counter",
     "CPU time used by the tenant's cgroup."),
    ("worker_restarts", "tenantfpm_worker_restarts", "counter",
     "Workers replaced after an unexpected exit or a recycling."),
    ("terminated_requests", "tenantfpm_terminated_requests", "counter",
     "Requests killed at request_terminate_timeout."),
    ("workers_rss", "tenantfpm_workers_rss_bytes", "gauge",
     "Resident memory of the tenant's workers, summed."),
]


class PoolCollector(Collector):
    def __init__(self, statuses: Callable[[], list[Status]], exporter_names: bool) -> None:
        self.statuses = statuses
        self.exporter_names = exporter_names

    def collect(self) -> Iterable[Metric]:
        docs = self.statuses()
        up = GaugeMetricFamily("phpfpm_up", "Whether the pool serves (state running).",
                               labels=["pool"])
        for d in docs:
            up.add_metric([d["name"]], 1.0 if d.get("state") == "running" else 0.0)
        yield up
        for key, name, kind, text in PHPFPM + TENANT:
            exact = self.exporter_names and kind == "counter" and name.startswith("phpfpm_")
            if exact:  # named as the exporter's; prometheus_client's text format gives a
                # counter's TYPE line `_total` whatever its samples say, so: untyped
                family: Metric = Metric(name, text, "unknown")
            elif kind == "counter":
                family = CounterMetricFamily(name, text, labels=["pool"])
            else:
                family = GaugeMetricFamily(name, text, labels=["pool"])
            for d in docs:
                value = d.get(key)
                if not isinstance(value, (int, float)) or isinstance(value, bool):
                    continue
                if exact:
                    family.add_sample(name, {"pool": d["name"]}, float(value))
                else:
                    family.add_metric([d["name"]], float(value))  # type: ignore[attr-defined]
            yield family


def registry(statuses: Callable[[], list[Status]],
             exporter_names: bool = False) -> CollectorRegistry:
    """exporter_names: php-fpm_exporter's exact sample names (Prometheus text format only;
    OpenMetrics wants `_total` on every counter sample)."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(PoolCollector(statuses, exporter_names))
    return reg
