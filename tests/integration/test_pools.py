"""The pm modes with real php-cgi workers, observed through the CLI."""

from __future__ import annotations

import os
import signal
import threading
import time

from tests.integration.conftest import body_ok


def workers(status: dict, state: str | None = None) -> list[dict]:
    return [p for p in status["processes"] if state is None or p["state"] == state]


def test_static_pool_serves_as_tenant_user(env, users):
    env.cli("add", str(env.site("st", users[0], '[pm]\nmode = "static"\nmax_children = 3\n')))
    st = env.wait_for("3 idle", lambda: (s := env.status("st"))["idle_processes"] == 3 and s)
    assert st["state"] == "running" and st["total_processes"] == 3
    out = env.cli("request", "st", "/").stdout
    uid = int(out.split("uid=")[1])
    assert uid == __import__("pwd").getpwnam(users[0]).pw_uid
    assert "child" in env.log("st") and "started" in env.log("st")


def test_dynamic_scales_up_under_load_and_back_down(env, users):
    env.cli("add", str(env.site("dyn", users[0], """
        [pm]
        mode = "dynamic"
        max_children = 5
        start_servers = 1
        min_spare_servers = 1
        max_spare_servers = 2
    """)))
    env.wait_for("1 idle", lambda: env.status("dyn")["idle_processes"] == 1)
    results: list = []
    t = threading.Thread(target=lambda: results.extend(
        env.load("dyn", "/sleep.php?ms=2500", 4, 4)))
    t.start()
    peak = env.wait_for("4 busy workers",
                        lambda: (s := env.status("dyn"))["active_processes"] >= 4 and s,
                        timeout=10)
    assert peak["total_processes"] <= 5
    t.join()
    assert all(body_ok(r) for r in results) and len(results) == 4
    # surplus idle workers retire one per second down to max_spare_servers
    env.wait_for("idle <= max_spare", lambda: env.status("dyn")["total_processes"] <= 2,
                 timeout=10)
    assert env.status("dyn")["max_active_processes"] >= 4


def test_max_children_reached_is_logged_and_counted(env, users):
    env.cli("add", str(env.site("cap", users[0], """
        [pm]
        mode = "dynamic"
        max_children = 2
        start_servers = 1
        min_spare_servers = 1
        max_spare_servers = 1
    """)))
    results = env.load("cap", "/sleep.php?ms=1500", 4, 4)
    assert all(body_ok(r) for r in results)
    assert env.status("cap")["max_children_reached"] >= 1
    assert "server reached pm.max_children setting (2)" in env.log("cap")


def test_ondemand_from_zero_and_back_to_zero(env, users):
    env.cli("add", str(env.site("od", users[0], """
        [pm]
        mode = "ondemand"
        max_children = 4
        process_idle_timeout = "1s"
    """)))
    env.wait_for("no workers", lambda: env.status("od")["total_processes"] == 0, timeout=10)
    results = env.load("od", "/sleep.php?ms=800", 3, 3)
    assert all(body_ok(r) for r in results)
    pids = {r.body for r in results}
    assert len(pids) >= 2  # more than one worker was spawned for the burst
    env.wait_for("back to zero", lambda: env.status("od")["total_processes"] == 0, timeout=10)
    assert body_ok(env.request("od", "/"))


def test_max_requests_recycles_workers(env, users):
    env.cli("add", str(env.site("mr", users[0], """
        [pm]
        mode = "static"
        max_children = 1
        max_requests = 3
    """)))
    env.wait_for("ready", lambda: env.status("mr")["idle_processes"] == 1)
    pids = []
    for _ in range(7):
        r = env.request("mr", "/")
        assert body_ok(r)
        pids.append(r.body.split(b"pid=")[1].split()[0])
        env.wait_for("a worker accepting", lambda: env.status("mr")["idle_processes"] == 1)
    assert len(set(pids)) == 3  # 3 + 3 + 1
    st = env.status("mr")
    assert st["worker_restarts"] >= 2
    assert st["processes"][0]["max_requests"] == 3


def test_killed_worker_is_replaced(env, users):
    env.cli("add", str(env.site("k", users[0], '[pm]\nmode = "static"\nmax_children = 2\n')))
    st = env.wait_for("2 idle", lambda: (s := env.status("k"))["idle_processes"] == 2 and s)
    victim = st["processes"][0]["pid"]
    os.kill(victim, signal.SIGKILL)
    st = env.wait_for("replacement", lambda: (s := env.status("k"))["idle_processes"] == 2
                      and victim not in [p["pid"] for p in s["processes"]] and s)
    assert st["worker_restarts"] == 1
    assert f"child {victim} exited on signal 9 (SIGKILL)" in env.log("k")


def test_reload_under_load_drops_nothing(env, users):
    site = env.site("rl", users[0], '[pm]\nmode = "static"\nmax_children = 3\n')
    env.cli("add", str(site))
    env.wait_for("ready", lambda: env.status("rl")["idle_processes"] == 3)
    before = {p["pid"] for p in env.status("rl")["processes"]}
    stop = threading.Event()
    results: list = []
    errors: list = []

    def loop():
        while not stop.is_set():
            try:
                results.append(env.request("rl", "/sleep.php?ms=50"))
            except OSError as e:
                errors.append(e)

    threads = [threading.Thread(target=loop) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        for _ in range(3):
            env.cli("reload", "rl")
            time.sleep(0.3)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors
    assert len(results) > 20 and all(body_ok(r) for r in results)
    after = {p["pid"] for p in env.status("rl")["processes"] if p["state"] != "Finishing"}
    assert not (before & after)
    assert "reloaded: generation" in env.log("rl")


def test_a_retired_php_cgi_worker_is_logged_as_retired(env, users):
    """php-cgi ends with code 255 on SIGTERM: a reload that retires it is no failure."""
    site = env.site("cgi", users[0], '[runtime]\ntype = "php-cgi"\n'
                                     '[pm]\nmode = "static"\nmax_children = 1\n')
    env.cli("add", str(site))
    env.wait_for("ready", lambda: env.status("cgi")["idle_processes"] == 1)
    first = env.status("cgi")["processes"][0]["pid"]
    env.cli("reload", "cgi")
    env.wait_for("the old worker's exit", lambda: any(
        f"child {first} {how}" in env.log("cgi") for how in ("retired", "exited")))
    assert f"child {first} retired (reload) after" in env.log("cgi")
    assert "code 255" not in env.log("cgi")


def test_worker_output_goes_to_error_log(env, users):
    env.cli("add", str(env.site("out", users[0], '[pm]\nmode = "static"\nmax_children = 1\n'
                                 '[ini]\nlog_errors = true\nerror_log = "/dev/stderr"\n')))
    r = env.request("out", "/stderr.php")
    assert r.body == b"ok"
    env.wait_for("worker output in error.log",
                 lambda: 'said into stderr: "note from php"' in env.log("out"))


def test_crash_storm_restarts_only_that_pool(env, users):
    env.cli("add", str(env.site("crash", users[0], '[pm]\nmode = "static"\nmax_children = 3\n'
                                   '[ini]\nmemory_limit = "-1"\n')))
    env.cli("add", str(env.site("calm", users[1], '[pm]\nmode = "static"\nmax_children = 1\n')))
    env.wait_for("ready", lambda: env.status("crash")["idle_processes"] == 3)
    calm_pids = {p["pid"] for p in env.status("calm")["processes"]}
    for _ in range(3):
        # a real crash from PHP code: serialize() recurses in C until the stack runs out
        # (a SIGSEGV sent from outside would not do: a PID 1 without a handler ignores it)
        r = env.request("crash", "/crash.php")
        assert not r.complete
    env.wait_for("3 crashes logged",
                 lambda: env.log("crash").count("exited on signal 11 (SIGSEGV)") >= 3)
    env.wait_for("emergency restart",
                 lambda: "received SIGSEGV or SIGBUS within 20 seconds" in env.log("crash"))
    env.wait_for("crash pool serving", lambda: env.status("crash")["idle_processes"] == 3)
    assert {p["pid"] for p in env.status("calm")["processes"]} == calm_pids
