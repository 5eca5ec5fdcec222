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

from tenantfpm.status_fields import METRICS

Status = dict[str, Any]

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
        for f in METRICS:
            key, name, kind, text = f.key, f.metric or "", f.kind, f.help
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
