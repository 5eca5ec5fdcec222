"""The sandbox's features as a hosting provider uses them (the attacks are in test_escapes)."""

from __future__ import annotations

import glob
import json

import pytest

from tests.integration.conftest import body_ok, running_env

STATIC1 = '[pm]\nmode = "static"\nmax_children = 1\n'


@pytest.fixture(scope="module")
def env(users):
    """One master for the module: each test has its own tenant, and a master's start
    costs about 25 s in the emulated VM of `make vm-test`."""
    with running_env() as e:
        yield e


def test_extra_binds_read_only_by_default(env, users):
    shared = env.base / "mysqld"
    shared.mkdir()
    shared.chmod(0o777)
    (shared / "hello").write_text("from the host\n")
    (shared / "hello").chmod(0o666)
    env.add(env.site("b", users[0], STATIC1 + f"""
[[isolation.binds]]
source = "{shared}"
target = "/run/mysqld"
"""))
    got = json.loads(env.php("b", """
        echo json_encode([file_get_contents("/run/mysqld/hello"),
                          @file_put_contents("/run/mysqld/hello", "changed")]);
    """).body)
    assert got == ["from the host\n", False]
    env.add(env.site("b", users[0], STATIC1 + f"""
[[isolation.binds]]
source = "{shared}"
target = "/run/mysqld"
readonly = false
"""), replace=True)
    assert env.php("b", 'echo file_put_contents("/run/mysqld/hello", "changed");').body == b"7"
    assert (shared / "hello").read_text() == "changed"


def test_disabled_isolation_says_so(env, users):
    env.add(env.site("open", users[1], STATIC1 + '[isolation]\nenabled = false\n'))
    assert env.status("open")["sandbox"] == "disabled"
    assert "isolation.enabled = false" in env.log("open")
    uid_and_passwd = env.php("open", 'echo getmypid() > 1 ? "host" : "ns", " ", '
                                     'count(file("/etc/passwd")) > 2 ? "full" : "short";').body
    assert uid_and_passwd == b"host full"


def test_limits_follow_reload_and_the_cgroup_goes_with_the_tenant(env, users):
    env.add(env.site("lim", users[2], STATIC1 + '[limits]\nmemory = "128M"\n'))
    assert env.status("lim")["memory_limit"] == 128 << 20
    env.php("lim", 'session_start(); $_SESSION["n"] = 42; file_put_contents("/tmp/kept", "x");')
    env.add(env.site("lim", users[2], STATIC1 + """
[limits]
memory = "96M"
pids = 20
"""), replace=True)
    st = env.status("lim")
    assert st["memory_limit"] == 96 << 20
    # /tmp survived the reload, and the session its own directory
    assert env.php("lim", 'echo file_exists("/tmp/kept") ? 1 : 0, '
                          'count(glob("/var/lib/php/sessions/sess_*"));').body == b"11"
    cgroup_dirs = (glob.glob(f"/sys/fs/cgroup/*/{env.cgroup_parent}/lim")  # v1
                   + glob.glob(f"/sys/fs/cgroup/{env.cgroup_parent}/lim"))  # v2
    assert cgroup_dirs
    env.api("DELETE", "/v1/tenants/lim")
    assert not [d for d in cgroup_dirs if glob.glob(d)]


def test_missing_bind_source_is_a_config_error(env, users):
    gone = env.base / "vanishing"
    site = env.site("badbind", users[3], STATIC1 + f'[[isolation.binds]]\nsource = "{gone}"\n')
    r = env.cli("add", str(site), check=False)
    assert r.returncode == 1 and f"isolation.binds[0].source: {gone} does not exist" in r.stderr
    gone.mkdir()
    env.add(site)
    assert body_ok(env.request("badbind", "/"))


def test_a_failing_sandbox_step_is_named(env, users):
    # a working directory outside the tenant's root: check refuses it
    outside = env.base / "elsewhere"
    outside.mkdir()
    site = env.site("cd", users[4])
    text = site.read_text()
    site.write_text(text + f'chdir = "{outside}"\n' + STATIC1)
    r = env.cli("add", str(site), check=False)
    assert r.returncode == 1 and "chdir: " in r.stderr and "outside the tenant's root" in r.stderr
    # one in the root that is not there when the worker starts: the step is named
    missing = env.base / "srv" / "cd" / "missing"
    site.write_text(text + f'chdir = "{missing}"\n' + STATIC1)
    r = env.cli("add", str(site), check=False)
    assert r.returncode == 1
    assert f"failed to start: chdir: No such file or directory: {missing}" in r.stderr
