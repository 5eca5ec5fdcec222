"""What each php-cgi worker is given (environment, rlimits, socket) and how it is retired
(max_worker_memory), plus the CLI paths a provider uses while watching: logs -f, shutdown --now.
"""

from __future__ import annotations

import grp
import os
import pwd
import resource
import signal
import stat
import subprocess
import time
from pathlib import Path

from tests.integration.conftest import BIN, SLOW, body_ok
from tests.procs import children_of, parent_of

# 400k strings of ~100 bytes: php-cgi's allocator keeps the chunks after the request,
# so the worker's RSS stays about 30M higher while it waits for the next one
GROW = ('<?php $a = []; for ($i = 0; $i < 400000; $i++) { $a[] = str_repeat("x", 100) . $i; }'
        ' echo getenv("TENANTFPM_WORKER_PID");')

ENV_AND_LIMITS = """
    $env = getenv();
    ksort($env);
    foreach ($env as $k => $v) { echo "$k=$v\\n"; }
    foreach (file("/proc/self/limits") as $line) {
        if (preg_match('/^Max (open files|core file size)\\s+(\\S+)\\s+(\\S+)/', $line, $m)) {
            echo "limit $m[1]=$m[2]/$m[3]\\n";
        }
    }
"""


def parse(body: bytes) -> tuple[dict[str, str], dict[str, str]]:
    env, limits = {}, {}
    for line in body.decode().splitlines():
        if line.startswith("limit "):
            k, v = line[6:].split("=", 1)
            limits[k] = v
        elif "=" in line:
            k, v = line.split("=", 1)
            env[k] = v
    return env, limits


def test_environment_is_cleared_except_env_user_and_home(env, users):
    env.env["TENANTFPM_TEST_MARKER"] = "the master's environment"
    env.stop_master()
    env.start_master()
    env.add(env.site("e", users[0], """
        [pm]
        mode = "static"
        max_children = 2
        max_requests = 100
        max_requests_jitter = 50
        [env]
        APP_ENV = "production"
        GREETING = "hi there"
    """))
    seen = []
    for _ in range(2):
        r = env.php("e", ENV_AND_LIMITS)
        assert body_ok(r), r.body
        seen.append(parse(r.body)[0])
    for worker_env in seen:
        assert worker_env["APP_ENV"] == "production" and worker_env["GREETING"] == "hi there"
        assert "PHP_FCGI_CHILDREN" not in worker_env
        # nothing of the master's environment: not its marker, PATH or config; USER and
        # HOME as FPM sets them (the pool's user, its home: the tenant's root)
        assert not {"TENANTFPM_TEST_MARKER", "TENANTFPM_CONFIG", "PATH"} & set(worker_env)
        assert set(worker_env) == {"APP_ENV", "GREETING", "TENANTFPM_WORKER_PID", "USER",
                                   "HOME", "PHP_INI_SCAN_DIR"}
        assert worker_env["USER"] == users[0] and worker_env["HOME"] == str(env.base / "srv/e")
    # max_requests with its jitter, per worker
    for p in env.status("e")["processes"]:
        assert 100 <= p["max_requests"] <= 150


def test_open_files_and_core_dumps_are_the_workers_rlimits(env, users):
    env.add(env.site("lim", users[0], """
        [pm]
        mode = "static"
        max_children = 1
        [limits]
        open_files = 321
    """))
    limits = parse(env.php("lim", ENV_AND_LIMITS).body)[1]
    assert limits == {"open files": "321/321", "core file size": "0/0"}
    site = env.site("lim", users[0], """
        [pm]
        mode = "static"
        max_children = 1
        [limits]
        core_dumps = true
    """)
    env.cli("add", "--replace", str(site))
    limits = parse(env.php("lim", ENV_AND_LIMITS).body)[1]
    assert limits["core file size"] == "unlimited/unlimited"
    # open_files = 0 inherits the master's limit
    assert limits["open files"] == "/".join(
        str(n) if n >= 0 else "unlimited" for n in resource.getrlimit(resource.RLIMIT_NOFILE))


def test_unix_socket_gets_the_configured_owner_group_and_mode(env, users):
    env.add(env.site("sock", users[0], f"""
        [pm]
        mode = "static"
        max_children = 1
        [listen]
        owner = "{users[1]}"
        group = "{users[2]}"
        mode = "0640"
    """))
    st = os.stat(env.socket("sock"))
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o640
    assert st.st_uid == pwd.getpwnam(users[1]).pw_uid
    assert st.st_gid == grp.getgrnam(users[2]).gr_gid
    assert body_ok(env.request("sock", "/"))


def test_max_worker_memory_recycles_a_worker_once_it_is_idle(env, users):
    site = env.site("mem", users[0], """
        [pm]
        mode = "static"
        max_children = 1
        max_worker_memory = "40M"
    """)
    (site.parent / "srv" / "mem" / "grow.php").write_text(GROW)
    env.add(site)
    first = env.wait_for("one idle worker",
                         lambda: (s := env.status("mem"))["idle_processes"] == 1 and s)
    before = first["processes"][0]
    assert before["rss"] < 40 << 20, before
    r = env.request("mem", "/grow.php")
    assert body_ok(r) and int(r.body) == before["pid"]  # the request itself is not cut short
    env.wait_for("recycling logged", lambda: "over pm.max_worker_memory: recycling it"
                 in env.log("mem"))
    after = env.wait_for(
        "a new idle worker",
        lambda: (s := env.status("mem"))["idle_processes"] == 1
        and s["processes"][0]["pid"] != before["pid"] and s)
    assert after["processes"][0]["rss"] < 40 << 20
    assert f"child {before['pid']} uses" in env.log("mem")
    assert int(env.request("mem", "/grow.php").body) == after["processes"][0]["pid"]


def test_logs_follow_prints_new_lines_as_they_are_written(env, users):
    env.add(env.site("fol", users[0], '[pm]\nmode = "static"\nmax_children = 1\n'))
    follow = subprocess.Popen([BIN, "logs", "fol", "-f", "-n", "0"], env=env.env,
                              stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(1 * SLOW)  # let it reach the end of the file before the line is written
        assert body_ok(env.request("fol", "/stderr.php"))
        line = follow.stdout.readline()
        assert 'said into stderr: "note from php"' in line, line
    finally:
        follow.kill()
        follow.wait()


def test_shutdown_now_stops_the_master_and_every_worker_at_once(env, users):
    env.add(env.site("now", users[0], '[pm]\nmode = "static"\nmax_children = 2\n'))
    ready = env.wait_for("2 idle",
                         lambda: (s := env.status("now"))["idle_processes"] == 2 and s)
    pids = [p["pid"] for p in ready["processes"]]
    env.cli("shutdown", "--now")
    assert env.master.wait(10 * SLOW) == 0
    for pid in pids:
        assert not os.path.exists(f"/proc/{pid}"), f"worker {pid} outlived the master"
    assert not (env.base / "run" / "now.sock").exists()
    assert env.cli("list", check=False).returncode == 3


def _policies(env, name: str) -> set[int]:
    """The scheduling policy of the worker that served a request, and of the zygote if
    the runtime has one (host pids: the master's view)."""
    r = env.php(name, 'echo getenv("TENANTFPM_WORKER_PID");')
    assert body_ok(r), r.stderr
    pids = [int(r.body)]
    zygote = env.status(name).get("zygote_pid")
    if zygote is not None:
        pids.append(zygote)
    return {os.sched_getscheduler(pid) for pid in pids}


def test_a_tenants_processes_run_with_its_scheduling_policy(env, users):
    """[pm] scheduling_policy is set on each process the master starts, whatever the
    master itself runs with: batch by default (zygote and forked workers), other when the
    site asks (php-cgi workers here). Each value is checked under a master running with
    the other one, so that only setting it can pass."""
    env.add(env.site("sb", users[0], '[pm]\nmode = "static"\nmax_children = 2\n'))
    env.add(env.site("so", users[1], '[runtime]\ntype = "php-cgi"\n[pm]\nmode = "static"\n'
                                     'max_children = 2\nscheduling_policy = "other"\n'))
    assert os.sched_getscheduler(env.master.pid) == os.SCHED_OTHER
    assert _policies(env, "sb") == {os.SCHED_BATCH}
    env.stop_master()
    os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    try:
        env.start_master()  # inherits SCHED_BATCH
    finally:
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    assert os.sched_getscheduler(env.master.pid) == os.SCHED_BATCH
    assert _policies(env, "so") == {os.SCHED_OTHER}
    assert _policies(env, "sb") == {os.SCHED_BATCH}


def _spawn_servers(master: int) -> list[int]:
    return [p for p in children_of(master)
            if b"tenantfpm.sandbox.spawner" in Path(f"/proc/{p}/cmdline").read_bytes()]


def test_the_spawn_server_starts_the_masters_children_and_losing_it_changes_nothing(
        env, users):
    """The master's processes are forked by its spawn server, as the master's children;
    with the server killed the master forks them itself."""
    master = env.master.pid
    servers = _spawn_servers(master)
    assert len(servers) == 1
    env.add(env.site("sa", users[0], '[pm]\nmode = "static"\nmax_children = 1\n'))
    env.add(env.site("sc", users[1], '[runtime]\ntype = "php-cgi"\n[pm]\nmode = "static"\n'
                                     'max_children = 1\n'))
    zygote = env.status("sa")["zygote_pid"]
    cgi = env.status("sc")["processes"][0]["pid"]
    assert parent_of(zygote) == master and parent_of(cgi) == master
    assert body_ok(env.request("sa", "/")) and body_ok(env.request("sc", "/"))
    os.kill(servers[0], signal.SIGKILL)
    env.cli("restart", "sa")
    env.cli("restart", "sc")
    assert body_ok(env.request("sa", "/")) and body_ok(env.request("sc", "/"))
    assert parent_of(env.status("sa")["zygote_pid"]) == master
    assert parent_of(env.status("sc")["processes"][0]["pid"]) == master
    log = (env.base / "log" / "master.log").read_text()
    assert log.count("the master forks its processes itself from now on") == 1, log
