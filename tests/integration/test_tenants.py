"""Registering tenants through the CLI: atomic add, remove, bad input, status, logs."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import threading
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import BIN, body_ok, free_port, running_env


def serve_loop(env, name):
    stop, results, errors = threading.Event(), [], []

    def loop():
        while not stop.is_set():
            try:
                results.append(env.request(name, "/"))
            except OSError as e:
                errors.append(e)

    t = threading.Thread(target=loop)
    t.start()
    return stop, t, results, errors


def test_add_remove_one_tenant_while_another_serves(env, users):
    env.cli("add", str(env.site("a", users[0], '[pm]\nmode = "static"\nmax_children = 2\n')))
    stop, t, results, errors = serve_loop(env, "a")
    try:
        env.cli("add", str(env.site("b", users[1])))
        assert "hello pid=" in env.cli("request", "b", "/").stdout
        env.cli("remove", "b")
        env.cli("add", str(env.site("c", users[2], "[pm]\nmax_children = 0\n")), check=False)
    finally:
        stop.set()
        t.join()
    assert not errors and len(results) > 5 and all(body_ok(r) for r in results)
    assert not (env.base / "tenants.d" / "b.toml").exists()
    assert not (env.base / "run" / "b.sock").exists()
    assert (env.base / "log" / "b" / "error.log").exists()  # logs are kept
    names = [t["name"] for t in json.loads(env.cli("list", "--json").stdout)]
    assert names == ["a"]


def test_invalid_site_is_rejected_and_nothing_registered(env, users):
    bad = env.site("bad", users[0], "[pm]\nmax_children = 5\nmin_spare_servers = 4\n"
                                    "max_spare_servers = 8\n")
    r = env.cli("add", str(bad), check=False)
    assert r.returncode == 1
    assert "pm.min_spare_servers(4) and pm.max_spare_servers(8) cannot be greater than " \
           "pm.max_children(5)" in r.stderr
    assert f"{bad}:7: pm.max_spare_servers:" in r.stderr and "Traceback" not in r.stderr
    assert not list((env.base / "tenants.d").glob("*.toml"))
    assert env.cli("check", str(bad), check=False).returncode == 1


def test_duplicate_user_is_rejected(env, users):
    env.cli("add", str(env.site("one", users[0])))
    r = env.cli("add", str(env.site("two", users[0])), check=False)
    assert r.returncode == 1 and "already runs tenant 'one'" in r.stderr
    assert not (env.base / "tenants.d" / "two.toml").exists()


def test_a_registration_that_cannot_be_written_leaves_nothing_running(env, users):
    """A new tenant is registered while its PHP starts: if the file cannot be written, the
    tenant that was starting is stopped and forgotten, and the others serve on."""
    import time

    env.cli("add", str(env.site("ok", users[0], '[pm]\nmode = "static"\nmax_children = 1\n')))
    (env.base / "tenants.d" / ".w.toml.tmp").mkdir()  # where its file would be written first
    r = env.cli("add", str(env.site("w", users[1])), check=False)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "cannot register tenant w" in r.stderr and "nothing was registered" in r.stderr
    assert not (env.base / "tenants.d" / "w.toml").exists()
    assert [t["name"] for t in json.loads(env.cli("list", "--json").stdout)] == ["ok"]
    assert not (env.base / "run" / "w.sock").exists()
    deadline = time.time() + 10
    while subprocess.run(["pgrep", "-u", users[1]], capture_output=True).returncode == 0:
        assert time.time() < deadline, "the tenant that could not be registered still runs"
        time.sleep(0.1)
    assert body_ok(env.request("ok", "/"))


def test_runtime_that_never_serves_is_undone(env, users):
    env.cli("add", str(env.site("ok", users[0], '[pm]\nmode = "static"\nmax_children = 1\n')))
    site = env.site("broken", users[1], '[runtime]\ntype = "fastcgi"\ncommand = ["/bin/false"]\n')
    r = env.cli("add", str(site), check=False)
    assert r.returncode == 1
    assert "failed to start" in r.stderr and "exited with code 1" in r.stderr
    assert "nothing was registered" in r.stderr
    assert not (env.base / "tenants.d" / "broken.toml").exists()
    assert body_ok(env.request("ok", "/"))


def test_registered_tenant_that_fails_at_boot_shows_failed(env, users):
    env.stop_master()
    site = env.site("later", users[1], '[runtime]\ntype = "fastcgi"\ncommand = ["/bin/false"]\n')
    env.cli("add", str(site))  # master down: registered only
    env.start_master()
    st = env.wait_for("failed", lambda: (s := env.status("later"))["state"] == "failed" and s)
    assert "exited with code 1" in st["error"]
    assert "retrying in" in env.log("later")


def test_missing_script_is_a_404_not_a_crash(env, users):
    env.cli("add", str(env.site("m", users[0])))
    r = env.request("m", "/missing.php")
    assert r.complete and r.status == 404
    assert body_ok(env.request("m", "/"))


def test_status_json_shape(env, users):
    env.cli("add", str(env.site("s", users[0], '[pm]\nmode = "static"\nmax_children = 2\n'
                                '[limits]\nmemory = "96M"\n')))
    st = env.wait_for("ready", lambda: (s := env.status("s"))["idle_processes"] == 2 and s)
    ints = ("start_time", "start_since", "idle_processes", "active_processes",
            "total_processes", "max_active_processes", "max_children_reached",
            "worker_restarts", "listen_queue", "max_listen_queue", "listen_queue_len",
            "oom_kills", "memory_current", "memory_limit", "slow_requests",
            "terminated_requests")
    for k in ints:
        assert isinstance(st[k], int), k
    # the zygote's workers count what they accept (php-cgi's count was null)
    assert st["accepted_conn"] == 0
    env.request("s", "/")
    assert env.status("s")["accepted_conn"] == 1
    assert st["memory_limit"] == 96 << 20 and st["oom_kills"] == 0
    # the cgroup's own figure (pages charged to the tenant), not made up and within the cap
    assert 1 << 20 < st["memory_current"] <= st["memory_limit"]
    assert st["name"] == "s" and st["state"] == "running" and st["pm"] == "static"
    assert st["listen_queue_len"] == 511
    p = st["processes"][0]
    assert p["state"] == "Idle" and isinstance(p["rss"], int) and p["rss"] > 1 << 20
    assert isinstance(p["cpu_seconds"], float) and p["request_duration_ms"] is None
    one = json.loads(env.cli("status", "s", "--full", "--json").stdout)
    assert one.keys() == st.keys() and one["processes"][0].keys() == p.keys()
    many = json.loads(env.cli("status", "--json").stdout)
    assert [d["name"] for d in many] == ["s"]


def test_cli_exit_codes(env, users):
    assert env.cli("status", "nope", check=False).returncode == 1
    assert env.cli("frobnicate", check=False).returncode == 2
    env.stop_master()
    r = env.cli("list", check=False)
    assert r.returncode == 3 and "not running" in r.stderr


def test_logs_command_filters(env, users):
    env.cli("add", str(env.site("lg", users[0], '[pm]\nmode = "static"\nmax_children = 2\n')))
    env.wait_for("ready", lambda: env.status("lg")["idle_processes"] == 2)
    lines = env.cli("logs", "lg", "-n", "1").stdout.splitlines()
    assert len(lines) == 1
    started = env.cli("logs", "lg", "--grep", "child \\d+ started").stdout.splitlines()
    assert len(started) == 2
    data = json.loads(env.cli("logs", "lg", "--json", "--since", "10m").stdout)
    assert data and {"time", "level", "message"} <= set(data[0])
    assert env.cli("logs", "lg", "--since", "bogus", check=False).returncode == 2


def test_sigusr1_reopens_logs_and_sigquit_stops_gracefully(env, users):
    env.cli("add", str(env.site("sig", users[0], '[pm]\nmode = "static"\nmax_children = 1\n')))
    log = env.base / "log" / "sig" / "error.log"
    log.rename(log.with_suffix(".old"))
    env.master.send_signal(signal.SIGUSR1)
    env.wait_for("new error.log", log.exists)
    results = []
    t = threading.Thread(target=lambda: results.append(env.request("sig", "/sleep.php?ms=1500")))
    t.start()
    env.wait_for("busy", lambda: env.status("sig")["active_processes"] == 1)
    env.master.send_signal(signal.SIGQUIT)
    t.join()
    assert env.master.wait(15) == 0
    assert body_ok(results[0])  # the running request finished
    assert not (env.base / "run" / "sig.sock").exists()


def test_metrics_endpoint_has_php_fpm_exporters_names(users):
    """php-fpm_exporter's dashboards query `phpfpm_accepted_connections` (no `_total`):
    the names must be exactly its, whatever format the scraper prefers."""
    port = free_port()
    with running_env(extra_master=f'metrics_listen = "127.0.0.1:{port}"') as env:
        env.add(env.site("m", users[0], '[pm]\nmode = "static"\nmax_children = 2\n'
                                        '[limits]\nmemory = "128M"\n'))
        env.wait_for("idle", lambda: env.status("m")["idle_processes"] == 2)
        env.request("m", "/")
        req = urllib.request.Request(f"http://127.0.0.1:{port}/metrics",
                                     headers={"Accept": "application/openmetrics-text"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            text = resp.read().decode()
        families = {f.name: f for f in text_string_to_metric_families(text)}
        sample = {f.name: {s.name: s.value for s in f.samples if s.labels.get("pool") == "m"}
                  for f in families.values()}
        assert sample["phpfpm_up"]["phpfpm_up"] == 1
        assert sample["phpfpm_idle_processes"]["phpfpm_idle_processes"] == 2
        assert sample["phpfpm_total_processes"]["phpfpm_total_processes"] == 2
        assert sample["phpfpm_max_children_reached"]["phpfpm_max_children_reached"] == 0
        assert sample["phpfpm_slow_requests"]["phpfpm_slow_requests"] == 0
        assert sample["tenantfpm_memory_limit_bytes"]["tenantfpm_memory_limit_bytes"] == 128 << 20
        assert sample["tenantfpm_oom_kills"]["tenantfpm_oom_kills_total"] == 0
        assert sample["tenantfpm_memory_bytes"]["tenantfpm_memory_bytes"] > 0
        # measured by the zygote's workers: the request above
        assert sample["phpfpm_accepted_connections"]["phpfpm_accepted_connections"] == 1
        assert not [n for n in re.findall(r"^phpfpm_\w+", text, re.M) if n.endswith("_total")]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/status?name=m", timeout=10) as r:
            assert json.loads(r.read())["name"] == "m"


def test_max_active_processes_counts_requests_between_looks(env, users):
    """Two requests at once, both over before anyone asks: the high-water mark still says 2
    (the workers' scoreboards keep each request's times)."""
    env.add(env.site("busy", users[0], '[pm]\nmode = "static"\nmax_children = 2\n'))
    env.wait_for("idle", lambda: env.status("busy")["idle_processes"] == 2)
    assert env.status("busy")["max_active_processes"] == 0
    assert all(body_ok(r) for r in env.load("busy", "/sleep.php?ms=400", 2, 2))
    assert env.status("busy")["max_active_processes"] == 2


def test_access_log_for_php_in_fpms_format(env, users):
    env.add(env.site("acc", users[0], '[pm]\nmode = "static"\nmax_children = 1\n'
                                      '[log]\naccess = true\n'
                                      'access_format = "%R %m %r%Q%q %s %{mili}d %n %p %f"\n'))
    assert body_ok(env.request("acc", "/?a=1"))
    pid = env.status("acc")["processes"][0]["pid"]
    # the worker writes the line after the response, as FPM's children do
    log = env.base / "log" / "acc" / "access.log"
    line = env.wait_for("the access.log line", lambda: log.exists() and log.read_text())
    line = line.splitlines()[-1]
    root = env.base / "srv" / "acc"
    assert re.fullmatch(rf"127\.0\.0\.1 GET /\?a=1 200 \d+\.\d{{3}} acc {pid} {root}/index\.php",
                        line), line
    assert "no access.log is written" not in env.log("acc")


def test_top_shows_every_tenant_with_its_limits(env, users):
    env.add(env.site("t1", users[0], '[pm]\nmode = "static"\nmax_children = 1\n'
                                     '[limits]\nmemory = "128M"\n'))
    env.wait_for("idle", lambda: env.status("t1")["idle_processes"] == 1)
    r = env.cli("top", "--once")
    header = next(line for line in r.stdout.splitlines() if "TENANT" in line)
    for col in ("STATE", "ACT", "IDLE", "PROCS", "QUEUE", "MAXED", "SLOW", "KILL", "OOM",
                "MEMORY"):
        assert col in header, col
    row = next(line for line in r.stdout.splitlines() if "t1" in line)
    assert "running" in row and "/128M" in row


def test_edit_applies_a_good_change_and_refuses_a_bad_one(env, users, tmp_path):
    """`tenantfpm edit NAME`, as crontab -e: $EDITOR on the registered copy, checked, then
    reloaded; a file that does not pass is refused and the running tenant keeps its own."""
    env.add(env.site("ed", users[0], '[pm]\nmode = "static"\nmax_children = 2\n'))
    registered = env.base / "tenants.d" / "ed.toml"
    assert registered.exists()

    def edit(script: str) -> subprocess.CompletedProcess[str]:
        editor = tmp_path / "editor.sh"
        editor.write_text(f"#!/bin/sh\n{script}\n")
        editor.chmod(0o755)
        return subprocess.run([BIN, "edit", "ed"], env={**env.env, "EDITOR": str(editor)},
                              capture_output=True, text=True, stdin=subprocess.DEVNULL,
                              timeout=60)

    r = edit("sed -i 's/max_children = 2/max_children = 3/' \"$1\"")
    assert r.returncode == 0, r.stderr
    assert "updated, the tenant reloaded" in r.stdout
    assert "max_children = 3" in registered.read_text()
    env.wait_for("3 workers", lambda: env.status("ed")["idle_processes"] == 3)

    before = registered.read_text()
    r = edit("echo 'max_childern = 9' >> \"$1\"")  # a typo: an unknown key
    assert r.returncode == 1
    assert "max_childern" in r.stderr and "nothing changed" in r.stderr
    assert registered.read_text() == before
    assert env.status("ed")["max_children"] == 3 and body_ok(env.request("ed", "/"))

    r = edit("sed -i 's/name = \"ed\"/name = \"other\"/' \"$1\"")
    assert r.returncode == 1 and "cannot rename" in r.stderr
    assert registered.read_text() == before

    r = env.cli("reload", "ed")
    assert str(registered) in r.stderr  # which file a reload reads, said
