"""request_slowlog_timeout and request_terminate_timeout on real PHP workers (the zygote's)."""

from __future__ import annotations

import re
import threading
import time

import pytest

from tests.integration.conftest import body_ok

SITE = """
[pm]
mode = "static"
max_children = 1
[limits]
request_slowlog_timeout = "1s"
request_terminate_timeout = "3s"
"""


def slow_log(env, name: str) -> str:
    p = env.base / "log" / name / "slow.log"
    return p.read_text() if p.exists() else ""


NESTED = """<?php
class Report {
    function build($ms) {
        return wait_for_it($ms);
    }
}
function wait_for_it($ms) {
    usleep($ms * 1000);
    return "built";
}
function handle() {
    return (new Report())->build((int)$_GET["ms"]);
}
echo handle();
"""


@pytest.mark.parametrize("engine", ["php-cgi", "libphp"])
def test_slow_request_gets_the_php_backtrace_once(env, users, engine):
    """Read from the worker's memory: the engine's globals in the php-cgi binary, or in
    the libphp8.2.so it maps."""
    env.add(env.site("s", users[0], SITE + f'[runtime]\nengine = "{engine}"\n'))
    root = env.base / "srv" / "s"
    (root / "report.php").write_text(NESTED)
    pid = env.status("s")["processes"][0]["pid"]
    r = env.request("s", "/report.php?ms=2200")
    assert body_ok(r) and r.body == b"built"
    env.wait_for("the slow.log entry", lambda: f"[pool s] pid {pid}" in slow_log(env, "s"))
    entry = slow_log(env, "s")
    assert re.search(r"^\[\d\d-\w{3}-\d{4} \d\d:\d\d:\d\d\]  \[pool s\] pid \d+$", entry, re.M)
    assert f"script_filename = {root}/report.php" in entry
    frames = re.findall(r"^\[0x[0-9a-f]{16}\] (\S+)\(\) (\S+):(\d+)$", entry, re.M)
    script = str(root / "report.php")
    # as PHP-FPM 8.2 writes it: each function at the line that called it, no class
    assert frames == [("usleep", script, "8"), ("wait_for_it", script, "4"),
                      ("build", script, "12"), ("handle", script, "14")]
    assert entry.count("[pool s]") == 1  # once per request, however long it runs
    assert env.cli("logs", "s", "--slow").stdout.strip() == entry.strip()
    assert (f"child {pid}, script '{script}' (request: \"GET /report.php?ms=2200\") "
            "executing too slow") in env.log("s")
    st = env.status("s")
    assert st["slow_requests"] == 1 and st["terminated_requests"] == 0


def test_status_shows_the_running_request(env, users):
    env.add(env.site("r", users[0], SITE.replace('"3s"', '"30s"').replace('"1s"', '"20s"')))
    result = []
    t = threading.Thread(target=lambda: result.append(env.request("r", "/sleep.php?ms=2500")))
    t.start()
    try:
        p = env.wait_for("the request running", lambda: next(
            (p for p in env.status("r")["processes"]
             if p["state"] == "Running" and (p["request_duration_ms"] or 0) >= 1000), None))
    finally:
        t.join()
    assert p["request_method"] == "GET" and p["request_uri"] == "/sleep.php?ms=2500"
    assert p["script"] == str(env.base / "srv" / "r" / "sleep.php")
    assert body_ok(result[0])
    idle = env.status("r")["processes"][0]
    # idle: the last request, as PHP-FPM's status shows it (the worker's own scoreboard)
    assert idle["state"] == "Idle" and idle["request_uri"] == "/sleep.php?ms=2500"
    assert idle["request_duration_ms"] >= 2500 and idle["last_request_memory"] > 0


def test_request_over_the_terminate_timeout_is_killed_and_replaced(env, users):
    env.add(env.site("t", users[0], SITE))
    pid = env.status("t")["processes"][0]["pid"]
    started = time.time()
    r = env.request("t", "/sleep.php?ms=20000")
    took = time.time() - started
    assert not r.complete and 3 <= took < 10
    assert re.search(rf"child {pid}, script '\S+/sleep.php' \(request: \"GET "
                     rf"/sleep.php\?ms=20000\"\) execution timed out \(\d+\.\d+ sec\), "
                     "terminating", env.log("t"))
    env.wait_for("a replacement", lambda: body_ok(env.request("t", "/")))
    time.sleep(1.5)  # a tick later: one replacement, not one from each of two places
    st = env.status("t")
    assert st["terminated_requests"] == 1 and st["processes"][0]["pid"] != pid
    assert len(st["processes"]) == 1


def test_a_worker_busy_with_many_short_requests_is_not_terminated(env, users):
    env.add(env.site("busy", users[0], SITE.replace('"3s"', '"2s"')))
    stop, results = threading.Event(), []

    def hammer():
        while not stop.is_set():
            results.append(body_ok(env.request("busy", "/sleep.php?ms=100")))

    threads = [threading.Thread(target=hammer) for _ in range(3)]  # the one worker never idles
    for t in threads:
        t.start()
    time.sleep(5)
    stop.set()
    for t in threads:
        t.join()
    assert len(results) > 20 and all(results)
    assert env.status("busy")["terminated_requests"] == 0
    assert "timed out" not in env.log("busy")
