"""What the spawn server tells a warm PHP (tenantfpm/sandbox/warm.py): the extensions it
loads ahead, and the order that carries a tenant's plan out (read back here as
sapi/warm.c reads it)."""

from __future__ import annotations

import os
import struct
from pathlib import Path

from tenantfpm.sandbox import linux, rootfs, seccomp, warm
from tenantfpm.sandbox.spawn import Plan, Sandbox
from tenantfpm.wire.fds import HOST_PID_ENV


def records(message: bytes) -> list[tuple[str, bytes]]:
    out, at = [], 0
    while at < len(message):
        (length,) = struct.unpack_from("<I", message, at + 1)
        out.append((chr(message[at]), message[at + 5:at + 5 + length]))
        at += 5 + length
    assert at == len(message)
    return out


def test_extensions_in_phps_order(tmp_path: Path):
    (tmp_path / "20-gd.ini").write_text("; priority=20\nextension=gd.so\n")
    (tmp_path / "10-opcache.ini").write_text("zend_extension=opcache.so\nopcache.jit=off\n")
    (tmp_path / "15-xml.ini").write_text('extension = "xml.so"\n;extension=not.so\n')
    (tmp_path / "05-pdo.ini").write_text("extension=pdo\n")
    (tmp_path / "README").write_text("extension=ignored.so\n")
    # every zend_extension first, then the extensions, files sorted by name
    assert warm.extensions(str(tmp_path)) == ["opcache.so", "pdo", "xml.so", "gd.so"]
    assert warm.extensions(str(tmp_path / "missing")) == []
    assert warm.extensions(None) == []


def _plan(**kw) -> Plan:
    spec = rootfs.RootSpec(new_root="/run/t/a/root", tenant_root="/srv/a", user="a",
                           uid=1001, gid=1002, group="a", tmp_source="/run/t/a/tmp",
                           ini_source="/run/t/a/php.ini",
                           binds=[("/srv/shared", "/srv/a/shared", True)])
    probe = type("P", (), {"kind": staticmethod(lambda p: "dir" if p != "/etc/hosts" else "file")})
    box = Sandbox(hostname="a.example", root=spec, steps=rootfs.plan(spec, probe()),
                  netns="/run/t/a/netns")
    base = dict(argv=["/usr/bin/php-cgi8.2", "-c", "/etc/tenantfpm/php.ini"],
                env={"HOME": "/srv/a", "USER": "a"}, cwd="/srv/a", uid=1001, gid=1002,
                listen_fd=0, cgroup_procs=["/sys/fs/cgroup/memory/t/a/cgroup.procs"],
                scheduling_policy="batch", pass_fds=(7, 8), sandbox=box)
    return Plan(**{**base, **kw})


def test_the_order_is_the_plan_from_the_cgroups_on():
    plan = _plan()
    got = records(warm.order(plan, caught=True, host_pid=4242, nofile=(1024, 4096)))
    single = {tag: value.decode() for tag, value in got
              if tag in "chRugkPmprnB" and tag != "B"}
    assert [v.decode() for t, v in got if t == "a"] == plan.argv
    assert sorted(v.decode() for t, v in got if t == "e") == [
        "HOME=/srv/a", f"{HOST_PID_ENV}=4242", "USER=a"]
    assert single == {"c": "/srv/a", "h": "a.example", "R": "/run/t/a/root", "u": "1001",
                      "g": "1002", "k": "0", "P": str(os.SCHED_BATCH), "m": "1", "p": "2",
                      "r": "1024 4096", "n": "/run/t/a/netns"}
    assert [v.decode() for t, v in got if t == "G"] == plan.cgroup_procs
    (filt,) = [v for t, v in got if t == "B"]
    assert filt == b"".join(struct.pack("=HBBI", *i) for i in seccomp.program())
    ops = [v.decode() for t, v in got if t == "S"]
    assert ops == [s.op for s in plan.sandbox.steps]
    assert ops[-2:] == ["pivot", "seal"]


def _step_fields(got: list[tuple[str, bytes]]) -> list[dict[str, str]]:
    steps: list[dict[str, str]] = []
    for tag, value in got:
        if tag == "S":
            steps.append({"op": value.decode()})
        elif steps and tag in "tsydCfNK":
            steps[-1][tag] = value.decode()
    return steps


def test_binds_carry_the_flags_rootfs_remounts_them_with():
    plan = _plan()
    steps = _step_fields(records(warm.order(plan, True, 1, None)))
    by_target = {s["t"]: s for s in steps if s["op"] == "bind"}
    # the tenant's root: read-write, no link followed, a directory
    assert by_target["/srv/a"] == {"op": "bind", "t": "/srv/a", "s": "/srv/a", "N": "1",
                                   "K": "dir", "f": str(linux.MS_NOSUID | linux.MS_NODEV)}
    assert int(by_target["/srv/a/shared"]["f"]) & linux.MS_RDONLY
    assert int(by_target["/dev/null"]["f"]) == linux.MS_NOSUID  # device nodes keep dev
    assert int(steps[-1]["f"]) == rootfs.RO  # the seal
    passwd = next(s for s in steps if s.get("t") == "/etc/passwd")
    assert passwd["C"] == rootfs.passwd(plan.sandbox.root)


def test_open_files_override_the_inherited_limit_and_no_limit_is_kept():
    got = dict(records(warm.order(_plan(open_files=300), True, 1, (1024, 4096))))
    assert got["r"] == b"300 300"
    assert "r" not in dict(records(warm.order(_plan(), True, 1, None)))


def test_a_plan_beyond_the_warm_process_bounds_gets_no_order():
    plan = _plan()
    many = plan.sandbox.steps + [rootfs.Step("mkdir", f"/x{i}") for i in range(warm.MAX["STEPS"])]
    big = Plan(**{**plan.__dict__, "sandbox": Sandbox(
        hostname="a", root=plan.sandbox.root, steps=many)})
    assert warm.order(big, True, 1, None) is None
    huge_env = _plan(env={"X": "y" * warm.MAX["SIZE"]})
    assert warm.order(huge_env, True, 1, None) is None
