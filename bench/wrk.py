"""wrk as the load generator, its report parsed into numbers."""

from __future__ import annotations

import re
import statistics
import subprocess
from dataclasses import dataclass

UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60000.0}


@dataclass
class WrkResult:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int  # socket errors + non-2xx/3xx answers


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not m:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(m.group(1)) * UNITS[m.group(2)]


def parse(out: str) -> WrkResult:
    def grab(pattern: str, default: str | None = None) -> str:
        m = re.search(pattern, out, re.M)
        if m:
            return m.group(1)
        if default is None:
            raise ValueError(f"wrk output without {pattern!r}:\n{out}")
        return default

    socket_errors = sum(int(x) for x in re.findall(
        r"(?:connect|read|write|timeout) (\d+)", grab(r"^\s*Socket errors: (.*)$", "")))
    return WrkResult(
        rps=float(grab(r"^Requests/sec:\s+([\d.]+)")),
        p50_ms=_ms(grab(r"^\s+50%\s+(\S+)")),
        p99_ms=_ms(grab(r"^\s+99%\s+(\S+)")),
        requests=int(grab(r"^\s+(\d+) requests in")),
        errors=socket_errors + int(grab(r"^\s*Non-2xx or 3xx responses: (\d+)", "0")),
    )


def run(url: str, seconds: float, connections: int, threads: int = 1) -> WrkResult:
    out = subprocess.run(["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s",
                          "--latency", "--timeout", "10s", url],
                         capture_output=True, text=True, check=True).stdout
    return parse(out)


def summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def summarize(runs: list[WrkResult]) -> dict:
    """One side's rounds as the report shows them: req/s and latencies, errors summed."""
    return {"rps": summary([x.rps for x in runs]),
            "p50_ms": summary([x.p50_ms for x in runs]),
            "p99_ms": summary([x.p99_ms for x in runs]),
            "errors": sum(x.errors for x in runs)}
