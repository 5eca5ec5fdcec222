"""The benchmark harness reads wrk's report right (a misread number would be a made-up one)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import wrk

REPORT = """Running 10s test @ http://127.0.0.1:18081/hello.php
  1 threads and 8 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   812.33us  401.12us  12.01ms   91.20%
    Req/Sec     9.87k   512.33    10.90k    70.00%
  Latency Distribution
     50%  745.00us
     75%    0.92ms
     90%    1.10ms
     99%    2.31ms
  98234 requests in 10.00s, 15.12MB read
  Socket errors: connect 0, read 3, write 0, timeout 2
  Non-2xx or 3xx responses: 7
Requests/sec:   9823.40
Transfer/sec:      1.51MB
"""


def test_wrk_report_is_read_with_units():
    r = wrk.parse(REPORT)
    assert r.rps == 9823.40 and r.requests == 98234
    assert r.p50_ms == pytest.approx(0.745) and r.p99_ms == pytest.approx(2.31)
    assert r.errors == 3 + 2 + 7


def test_a_clean_run_has_no_errors_and_seconds_convert():
    clean = REPORT.replace("  Socket errors: connect 0, read 3, write 0, timeout 2\n", "") \
                  .replace("  Non-2xx or 3xx responses: 7\n", "").replace("2.31ms", "1.20s")
    r = wrk.parse(clean)
    assert r.errors == 0 and r.p99_ms == 1200.0


def test_garbage_is_an_error_not_a_zero():
    with pytest.raises(ValueError):
        wrk.parse("wrk: connection refused\n")
