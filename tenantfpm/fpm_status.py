"""A pool's status in PHP-FPM's status page formats (fpm_status.c): plain, json, openmetrics.

So that monitoring written for PHP-FPM (php-fpm_exporter, Zabbix and Datadog
templates) reads tenantfpm unchanged. Field names, order, units (request
duration in microseconds) and text layout follow PHP 8.2's fpm_status.c. What
tenantfpm cannot know stays unknown: `null` in json, `-` in plain text, absent
from openmetrics; never a made-up 0.
"""

from __future__ import annotations

import json
import time
from typing import Any

from tenantfpm.logs import escape
from tenantfpm.status_fields import FPM_PAGE

PLAIN_LABEL = {"request uri": "request URI"}  # fpm_status.c spells it so in plain text only


def _process(p: dict[str, Any]) -> dict[str, Any]:
    ms = p.get("request_duration_ms")
    return {
        "pid": p["pid"], "state": p["state"], "start time": p["start_time"],
        "start since": p["start_since"], "requests": p.get("requests"),
        "request duration": ms * 1000 if ms is not None else None,
        "request method": p.get("request_method"), "request uri": p.get("request_uri"),
        "content length": p.get("content_length"), "user": p.get("user"),
        "script": p.get("script"), "last request cpu": p.get("last_request_cpu"),
        "last request memory": p.get("last_request_memory"),
    }


def fields(doc: dict[str, Any], full: bool) -> dict[str, Any]:
    out: dict[str, Any] = {f.fpm or f.key: doc.get(f.key) for f in FPM_PAGE}
    if full:
        out["processes"] = [_process(p) for p in doc.get("processes", [])]
    return out


def _text(v: Any, key: str = "") -> str:
    """One value of the plain page, on its line: control characters (a newline that would
    start a forged process block, terminal escapes) as \\xNN, as in every log."""
    if v is None:
        return "-"
    if key == "start time" and isinstance(v, int):
        return time.strftime("%d/%b/%Y:%H:%M:%S %z", time.localtime(v))
    if isinstance(v, float):
        return f"{v:.2f}"
    return escape(str(v))


def plain(doc: dict[str, Any], full: bool) -> str:
    f = fields(doc, full)
    lines = [f"{k + ':':<22}{_text(v, k)}" for k, v in f.items() if k != "processes"]
    for p in f.get("processes", []):
        lines += ["", "************************"]
        lines += [f"{PLAIN_LABEL.get(k, k) + ':':<22}{_text(v, k)}" for k, v in p.items()]
    return "\n".join(lines) + "\n"


def render(doc: dict[str, Any], query: str) -> tuple[str, bytes]:
    """(content type, body) for the query string FPM understands: json, openmetrics, full."""
    flags = {part.split("=", 1)[0] for part in query.split("&") if part}
    full = "full" in flags
    if "json" in flags:
        return "application/json", json.dumps(fields(doc, full)).encode()
    if "openmetrics" in flags:
        from prometheus_client.openmetrics.exposition import CONTENT_TYPE_LATEST, generate_latest

        from tenantfpm import metrics

        return CONTENT_TYPE_LATEST, generate_latest(metrics.registry(lambda: [doc]))
    return "text/plain", plain(doc, full).encode()
