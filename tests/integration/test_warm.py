"""The warm PHP (sandbox/spawner.py, sapi/warm.c): a zygote exec'd before its tenant is
known, handed the tenant's plan when one starts. It must leave the tenant exactly where a
cold start does: same identity, namespaces, cgroups, limits, filter, view and environment.
The plan has two executors (Python's sandbox/spawn.py for a cold start, C's warm.c for a
warm one); the first test here holds them to the same result, as the kernel reports it.

The first sandboxed PHP start of a master is always cold (the spawn server learns the kind
of warm process to keep from it); a later one is warm once the warm process is ready.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from pathlib import Path

import pytest

from tenantfpm.errors import TenantFPMError
from tenantfpm.runtimes import php
from tenantfpm.sandbox import warm
from tests.integration.conftest import SLOW, Env, body_ok, running_env

STATIC1 = '[pm]\nmode = "static"\nmax_children = 1\n'
# the extension a warm process loads last (then it says "ready")
_EXTENSIONS = warm.extensions(php.scan_dir())
LAST_EXTENSION = os.path.basename(_EXTENSIONS[-1]) if _EXTENSIONS else ""


def warm_processes(master_pid: int) -> list[int]:
    """The master's children that are warm PHP processes, root's, waiting (`... -W ...`: a
    zygote made of one shows its own argv)."""
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            argv = (d / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == master_pid and argv[1:2] == [b"-W"] and d.stat().st_uid == 0:
            found.append(int(d.name))
    return found


def wait_warm_ready(env: Env) -> int:
    """The warm process's pid once it has loaded the last extension and waits."""
    assert env.master is not None

    def ready() -> int | None:
        for pid in warm_processes(env.master.pid):
            try:
                maps = Path(f"/proc/{pid}/maps").read_text()
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if (not LAST_EXTENSION or LAST_EXTENSION in maps) and state == "S":
                return pid
        return None

    pid = env.wait_for("a warm PHP, ready", ready, timeout=20)
    time.sleep(0.2 * SLOW)  # from its last dlopen to its "ready": microseconds
    return pid


def started(env: Env, name: str) -> str:
    """The tenant's log line of a zygote's start: its first (a failed start may be tried
    again, cold: the warm process went to the first try)."""
    lines = [ln for ln in env.log(name).splitlines() if " started (generation " in ln]
    assert lines, env.log(name)
    return lines[0]


def confinement(pid: int) -> dict:
    """What the kernel says of a process's confinement, pid-independent."""
    status = dict(line.split(":\t", 1) for line in
                  Path(f"/proc/{pid}/status").read_text().splitlines() if ":\t" in line)
    keys = ("Uid", "Gid", "Groups", "NoNewPrivs", "Seccomp", "Seccomp_filters", "CapInh",
            "CapPrm", "CapEff", "CapBnd", "CapAmb")
    limits = [ln for ln in Path(f"/proc/{pid}/limits").read_text().splitlines()
              if ln.startswith(("Max open files", "Max core file size"))]
    mounts = []
    for ln in Path(f"/proc/{pid}/mountinfo").read_text().splitlines():
        fields, fs = ln.split(" - ", 1)
        fstype, _source, options = fs.split()
        # where, its mount flags, the filesystem and its own options (a tmpfs's size)
        mounts.append(" ".join([*fields.split()[4:6], fstype, options]))
    mounts.sort()
    return {"status": {k: status[k].strip() for k in keys}, "limits": limits,
            "policy": os.sched_getscheduler(pid), "owner": os.stat(f"/proc/{pid}").st_uid,
            "mounts": mounts}


def namespaces_apart(pid: int) -> list[str]:
    """The namespaces in which `pid` differs from this test (the host's)."""
    return sorted(ns for ns in ("mnt", "pid", "uts", "ipc", "cgroup", "net")
                  if os.readlink(f"/proc/{pid}/ns/{ns}") != os.readlink(f"/proc/self/ns/{ns}"))


def in_cgroup(pid: int, env: Env, name: str) -> bool:
    """In the tenant's cgroups: memory, pids and cpu on v1, its one cgroup on v2."""
    lines = [ln.split(":", 2) for ln in Path(f"/proc/{pid}/cgroup").read_text().splitlines()]
    wanted = [path for _n, ctl, path in lines
              if set(ctl.split(",")) & {"memory", "pids", "cpu"}] or [lines[-1][2]]
    return all(path.endswith(f"/{env.cgroup_parent}/{name}") for path in wanted)


SEEN_BY_PHP = """
    $env = getenv();
    ksort($env);
    $procs = array_map("basename", glob("/proc/[0-9]*"));
    echo json_encode([posix_getuid(), posix_getgid(), gethostname(), array_keys($env),
                      count($procs) == 1, is_readable("/proc/self/status"),
                      file_exists("/etc/tenantfpm/php.ini"), ini_get("opcache.enable"),
                      getmypid() > 1, run(["/bin/sh", "-c", "env | grep -c LD_PRELOAD"])]);
"""


@pytest.fixture(scope="module")
def env(users):
    with running_env() as e:
        yield e


def test_a_warm_start_confines_the_zygote_as_a_cold_one(env, users):
    env.add(env.site("cold", users[0], STATIC1))
    assert "warm" not in started(env, "cold")  # the master's first: nothing warm yet
    warm_pid = wait_warm_ready(env)
    env.add(env.site("warm", users[1], STATIC1))
    assert "from a warm PHP" in started(env, "warm")
    zygotes = {name: env.status(name)["zygote_pid"] for name in ("cold", "warm")}
    assert zygotes["warm"] == warm_pid
    cmdline = Path(f"/proc/{warm_pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
    assert cmdline[1:3] == [b"-c", b"/etc/tenantfpm/php.ini"]  # the zygote's own argv
    seen = {name: confinement(pid) for name, pid in zygotes.items()}
    for name, pid in zygotes.items():
        assert namespaces_apart(pid) == ["cgroup", "ipc", "mnt", "pid", "uts"], name
        assert in_cgroup(pid, env, name), Path(f"/proc/{pid}/cgroup").read_text()
    uid = {name: seen[name]["status"]["Uid"].split()[0] for name in seen}
    assert uid["cold"] != uid["warm"]  # each its tenant's own user
    for name in seen:  # the rest is the same, owner and ids aside
        assert seen[name]["owner"] == int(uid[name])
        for k in ("Uid", "Gid", "Groups"):
            seen[name]["status"].pop(k)
        seen[name].pop("owner")
        seen[name]["mounts"] = [m.replace(f"/srv/{name}", "/srv/X") for m in seen[name]["mounts"]]
    assert seen["warm"] == seen["cold"]
    assert seen["warm"]["status"]["Seccomp"] == "2" and seen["warm"]["status"]["NoNewPrivs"] == "1"
    assert int(seen["warm"]["status"]["CapBnd"], 16) == 0
    php = {name: json.loads(env.php(name, SEEN_BY_PHP).body) for name in ("cold", "warm")}
    # its user, its hostname; itself alone in /proc (its zygote and siblings are not
    # dumpable, so hidden), no LD_PRELOAD
    for name in php:
        assert php[name][:3] == [int(uid[name]), php[name][1], name]
        assert php[name][4:] == [True, True, True, "1", True, "rc=1 0"], name
    assert php["warm"][3] == php["cold"][3]  # the same environment's names
    assert "TENANTFPM_WORKER_PID" in php["warm"][3] and "HOME" in php["warm"][3]


def test_a_failed_step_of_a_warm_start_is_named_and_nothing_is_registered(env, users):
    missing = env.base / "srv" / "wcd" / "missing"
    site = env.site("wcd", users[2], f'chdir = "{missing}"\n' + STATIC1)
    wait_warm_ready(env)
    r = env.cli("add", str(site), check=False)
    assert r.returncode == 1
    assert f"failed to start: chdir: No such file or directory: {missing}" in r.stderr
    assert "from a warm PHP" in started(env, "wcd")
    listed = [t["name"] for t in env.api("GET", "/v1/tenants")]
    assert "wcd" not in listed


def test_a_warm_php_killed_before_its_tenant_comes_is_replaced(env, users):
    pid = wait_warm_ready(env)
    os.kill(pid, signal.SIGKILL)
    # the tenant is served whatever the master knew when it came: started cold, or by the
    # replacement, or handed to the dying one (killed, not yet gone: its start fails and
    # is made again). Which of them depends on the scheduler: not asserted.
    env.add(env.site("after", users[3], STATIC1))
    assert body_ok(env.php("after", "echo 1;"))
    assert wait_warm_ready(env) != pid  # and a next one was started
    env.add(env.site("again", users[4], STATIC1))
    assert "from a warm PHP" in started(env, "again")
    assert body_ok(env.php("again", "echo 1;"))


def test_warm_php_off_starts_none_and_the_warm_one_ends_with_its_master(users):
    with running_env("warm_php = false") as e:
        e.add(e.site("a", users[0], STATIC1))
        e.add(e.site("b", users[1], STATIC1))
        assert e.master is not None
        time.sleep(0.5 * SLOW)
        assert warm_processes(e.master.pid) == []
        assert "warm" not in started(e, "b")
    with running_env() as e:
        e.add(e.site("a", users[0], STATIC1))
        pid = wait_warm_ready(e)
        e.stop_master()
    deadline = time.time() + 10 * SLOW
    while Path(f"/proc/{pid}").exists():
        assert time.time() < deadline, "a warm PHP outlived its master"
        time.sleep(0.05)


def test_a_warm_start_follows_no_link_to_another_root(env, users):
    """The root's bind in C (sapi/warm.c) resolves as rootfs.py's: a root swapped for a
    link to another tenant's fails the start, and nothing serves from the other root."""
    env.add(env.site("swap", users[2], STATIC1))  # wcd never took it
    root, other = env.base / "srv" / "swap", env.base / "srv" / "cold"
    root.rename(root.with_name("swap.real"))
    root.symlink_to(other)
    try:
        wait_warm_ready(env)
        warm_before = env.log("swap").count("from a warm PHP")
        with contextlib.suppress(TenantFPMError):  # restart says it failed, or the pool does
            env.api("POST", "/v1/tenants/swap/restart")
        env.wait_for("swap failed", lambda: env.status("swap")["state"] == "failed")
        assert "filesystem: " + str(root) + ": a symlink on the way" in env.log("swap")
        assert env.log("swap").count("from a warm PHP") > warm_before
    finally:
        root.unlink()
        root.with_name("swap.real").rename(root)
    env.api("POST", "/v1/tenants/swap/restart")
    assert body_ok(env.php("swap", "echo 1;"))


def test_the_libphp_engine_gets_warm_processes_of_its_own(env, users):
    """A plan of another kind finds no warm process of its kind: it is cloned, and the next
    warm process is of its kind (the newest plan's)."""
    for name in ("after", "again"):  # their users, for two more tenants
        env.api("DELETE", f"/v1/tenants/{name}")
    libphp = STATIC1 + '[runtime]\nengine = "libphp"\n'
    env.add(env.site("lib1", users[3], libphp))
    assert "warm" not in started(env, "lib1")
    pid = wait_warm_ready(env)
    assert Path(f"/proc/{pid}/exe").resolve().name == "tenantfpm-php"
    env.add(env.site("lib2", users[4], libphp))
    assert "from a warm PHP" in started(env, "lib2")
    for name in ("lib1", "lib2"):
        got = env.php(name, 'echo PHP_SAPI, " ", getmypid() > 1 ? "ns" : "host";').body
        assert got == b"fpm-fcgi ns", name
