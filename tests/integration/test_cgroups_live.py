"""Tenant limits read back from the kernel's own cgroup files, on whichever hierarchy runs.

On this machine that is cgroup v1; `make vm-test` runs the same tests on a
cgroup v2 kernel. The expectations name the files of each version, so a driver
that wrote the wrong file, or a limit the kernel did not take, fails here.
Control calls go through the API in-process to stay quick under emulation.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from tenantfpm import cgroups
from tenantfpm.cgroups import favor
from tenantfpm.cpu_share import FLOOR_PER_CPU
from tests.integration.conftest import body_ok, running_env

SITE = """
[pm]
mode = "static"
max_children = 1
[limits]
memory = "64M"
cpu = 0.5
pids = 20
[ini]
memory_limit = "-1"
max_execution_time = 0
"""


@pytest.fixture(scope="module")
def live(users):
    with running_env() as env:
        env.add(env.site("lim", users[0], SITE))
        yield env


def driver(env) -> cgroups.Driver:
    return cgroups.detect(env.cgroup_parent)


def files(env) -> dict[str, Path]:
    """Where each figure lives for tenant "lim" on this kernel."""
    d = driver(env)
    if isinstance(d, cgroups.V2Driver):
        t = Path(d.parent_path, "lim")
        return {"memory": t / "memory.max", "pids": t / "pids.max", "cpu": t / "cpu.max",
                "weight": t / "cpu.weight",
                "procs": t / "cgroup.procs", "oom": t / "memory.events",
                "cpu.stat": t / "cpu.stat", "pids.events": t / "pids.events"}
    m = {c: Path(p, d.parent, "lim") for c, p in d.mounts.items()}
    return {"memory": m["memory"] / "memory.limit_in_bytes", "pids": m["pids"] / "pids.max",
            "cpu": m["cpu"] / "cpu.cfs_quota_us", "procs": m["memory"] / "cgroup.procs",
            "weight": m["cpu"] / "cpu.shares",
            "oom": m["memory"] / "memory.oom_control", "cpu.stat": m["cpu"] / "cpu.stat",
            "pids.events": m["pids"] / "pids.events"}


def keyed(path: Path) -> dict[str, int]:
    return {k: int(v) for k, v in (line.split() for line in path.read_text().splitlines())}


def test_limits_are_in_the_kernel(live):
    f = files(live)
    assert int(f["memory"].read_text()) == 64 << 20
    assert f["pids"].read_text().strip() == "20"
    cpu = f["cpu"].read_text().split()
    assert cpu[0] == "50000"  # v2 "50000 100000"; v1 quota 50000 of the 100000 us period
    # the weight of max_children (1) processes: v2's cpu.weight 100, v1's cpu.shares 1024
    assert f["weight"].read_text().strip() == ("100" if f["weight"].name == "cpu.weight"
                                                else "1024")
    st = live.status("lim")
    assert st["memory_limit"] == 64 << 20 and isinstance(st["memory_current"], int)
    procs = {int(p) for p in f["procs"].read_text().split()}
    assert {p["pid"] for p in st["processes"]} <= procs  # the workers run in the tenant's cgroup


def test_cpu_quota_throttles(live):
    before = keyed(files(live)["cpu.stat"]).get("nr_throttled", 0)
    r = live.php("lim", '$t = microtime(true); while (microtime(true) - $t < 1.5) {} echo "spun";',
                 timeout=60)
    assert body_ok(r)
    assert keyed(files(live)["cpu.stat"])["nr_throttled"] > before


def test_pids_limit_refuses_forks(live):
    r = live.php("lim", """
        $p = proc_open(["/bin/sh", "-c", "for i in $(seq 40); do sleep 3 & done; wait"],
                       [2 => ["pipe", "w"]], $pipes);
        echo stream_get_contents($pipes[2]);
        proc_close($p);
    """, timeout=120)
    assert body_ok(r) and b"fork" in r.body.lower()  # sh: "Cannot fork"
    assert keyed(files(live)["pids.events"])["max"] > 0


def test_oom_kill_is_counted_from_the_kernel(live):
    f = files(live)
    before = keyed(f["oom"]).get("oom_kill", 0)
    r = live.php("lim", '$s = str_repeat("x", 200 << 20); echo strlen($s);', timeout=120)
    assert not r.complete
    assert keyed(f["oom"])["oom_kill"] == before + 1
    live.wait_for("the OOM kill logged and counted", lambda: (
        "killed by the OOM killer: tenant memory limit 64M reached" in live.log("lim")
        and live.status("lim")["oom_kills"] == before + 1), timeout=30)
    live.wait_for("a replacement worker", lambda: body_ok(live.request("lim", "/")), timeout=60)


def test_cgroup_removed_with_the_tenant(live):
    f = files(live)
    assert f["procs"].exists()
    live.api("DELETE", "/v1/tenants/lim")
    deadline = time.time() + 10
    while f["procs"].exists() and time.time() < deadline:
        time.sleep(0.1)
    assert not f["procs"].parent.exists()


def test_favordynmods_is_set_when_asked_and_nothing_else_changes(users):
    before = favor.current()
    if before is None:
        pytest.skip("no cgroup2 mount on this host")
    try:
        with running_env(extra_master="cgroup_favordynmods = true") as env:
            env.add(env.site("fav", users[0], '[pm]\nmode = "static"\nmax_children = 1\n'))
            assert body_ok(env.request("fav", "/"))
            after = favor.current()
            assert after is not None and after.favored
            assert set(after.root_options) - {favor.FLAG} == set(before.root_options) - {
                favor.FLAG}
            assert after.mount_options == before.mount_options
            log = (env.base / "log" / "master.log").read_text()
            assert f"favordynmods {'already ' if before.favored else ''}set on " \
                   f"{before.target}" in log
    finally:
        favor.restore(before)  # leave the host's mount as it was


def parent_weight_file(env) -> Path:
    d = driver(env)
    if isinstance(d, cgroups.V2Driver):
        return Path(d.parent_path, "cpu.weight")
    return Path(d.mounts["cpu"], d.parent, "cpu.shares")


def test_the_tenants_weigh_what_their_busy_workers_weigh(users):
    """Against the host's processes (the database, the web server) all tenants together
    weigh their busy workers, one process each, as FPM's do: not every worker they may
    have (cpu_share.py). Idle: two processes per CPU."""
    cpus = len(os.sched_getaffinity(0))
    idle, workers = FLOOR_PER_CPU * cpus, 10
    if idle >= workers:
        pytest.skip(f"{cpus} CPUs: the idle weight would be the busy one")
    with running_env() as env:
        env.add(env.site("w", users[0], f'[pm]\nmode = "static"\nmax_children = {workers}\n'))
        f = parent_weight_file(env)
        unit = 100 if f.name == "cpu.weight" else 1024
        env.wait_for("the idle weight", lambda: f.read_text().strip() == str(idle * unit))
        got: list = []
        runs = [threading.Thread(target=lambda: got.append(env.request("w", "/sleep.php?ms=3000")))
                for _ in range(workers)]
        for t in runs:
            t.start()
        try:
            env.wait_for("the busy weight", lambda: f.read_text().strip() == str(workers * unit),
                         timeout=3)
        finally:
            for t in runs:
                t.join()
        assert len(got) == workers and all(body_ok(r) for r in got)
        env.wait_for("the idle weight again", lambda: f.read_text().strip() == str(idle * unit),
                     timeout=8)
