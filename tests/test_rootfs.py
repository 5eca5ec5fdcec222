"""The planned filesystem view, against a made-up host."""

from __future__ import annotations

import pytest

from tenantfpm.sandbox import linux, rootfs
from tenantfpm.sandbox.rootfs import RootSpec, Step

HOST = {
    "/usr": "dir", "/bin": "link:usr/bin", "/sbin": "link:usr/sbin", "/lib": "link:usr/lib",
    "/lib64": "link:usr/lib64", "/etc/php": "dir", "/etc/ssl": "dir",
    "/etc/localtime": "link:/usr/share/zoneinfo/Etc/UTC",
    "/etc/resolv.conf": "link:../run/systemd/resolve/stub-resolv.conf",
    "/run/systemd/resolve/stub-resolv.conf": "file", "/etc/hosts": "file",
    "/run/mysqld": "dir",
}


class FakeProbe:
    def kind(self, path: str) -> str | None:
        return HOST.get(path)

    def text(self, path: str) -> str | None:
        return "nameserver 192.0.2.53\noptions edns0" if path == "/etc/resolv.conf" else None


def spec(**kw) -> RootSpec:
    base = dict(new_root="/run/t/shop/root", tenant_root="/tmp/srv/shop", user="shop",
                uid=1001, gid=1001, group="shop", tmp_source="/run/t/shop/tmp",
                ini_source="/run/t/shop/php.ini")
    return RootSpec(**{**base, **kw})


def index(steps: list[Step], op: str, target: str) -> int:
    return next(i for i, s in enumerate(steps) if s.op == op and s.target == target)


def test_order_root_first_pivot_and_seal_last():
    steps = rootfs.plan(spec(), FakeProbe())
    assert steps[0].op == "mount" and steps[0].fstype == "tmpfs" and steps[0].target == "/"
    assert [s.op for s in steps[-2:]] == ["pivot", "seal"]


def test_system_dirs_are_read_only_and_merged_usr_links_are_links():
    steps = rootfs.plan(spec(), FakeProbe())
    usr = steps[index(steps, "bind", "/usr")]
    assert usr.readonly and usr.source == "/usr"
    assert steps[index(steps, "symlink", "/lib")].source == "usr/lib"
    assert not any(s.target == "/lib32" for s in steps)  # absent on the host: absent inside


def test_etc_pieces_and_a_link_out_of_etc_is_bound_by_its_target():
    steps = rootfs.plan(spec(), FakeProbe())
    assert steps[index(steps, "bind", "/etc/php")].readonly
    assert steps[index(steps, "symlink", "/etc/localtime")].source.startswith("/usr/share")
    resolv = steps[index(steps, "bind", "/etc/resolv.conf")]
    assert resolv.source == "/run/systemd/resolve/stub-resolv.conf" and resolv.readonly
    ini = steps[index(steps, "bind", rootfs.INI_TARGET)]
    assert ini.source == "/run/t/shop/php.ini" and ini.readonly


def test_a_tenant_that_cannot_sendmmsg_asks_its_resolver_one_query_at_a_time():
    """seccomp.passing_rules refuses sendmmsg behind a unix socket: the host's resolv.conf,
    with the one option that makes glibc send A and AAAA with send(), not bound."""
    steps = rootfs.plan(spec(queries_one_at_a_time=True), FakeProbe())
    assert not [s for s in steps if s.target == "/etc/resolv.conf" and s.op != "write"]
    resolv = steps[index(steps, "write", "/etc/resolv.conf")]
    assert resolv.content == "nameserver 192.0.2.53\noptions edns0\noptions single-request\n"
    assert index(steps, "mkdir", "/etc") < index(steps, "write", "/etc/resolv.conf")
    assert index(steps, "write", "/etc/resolv.conf") < index(steps, "seal", "/")


def test_passwd_and_group_name_only_root_and_the_tenant():
    steps = rootfs.plan(spec(), FakeProbe())
    passwd = steps[index(steps, "write", "/etc/passwd")].content.splitlines()
    assert [line.split(":")[0] for line in passwd] == ["root", "shop"]
    assert passwd[1].split(":")[2:4] == ["1001", "1001"]
    group = steps[index(steps, "write", "/etc/group")].content.splitlines()
    assert group == ["root:x:0:", "shop:x:1001:"]


def test_tenant_root_is_writable_and_mounted_after_tmp():
    steps = rootfs.plan(spec(), FakeProbe())
    root = index(steps, "bind", "/tmp/srv/shop")
    assert not steps[root].readonly and steps[root].nofollow
    assert index(steps, "bind", "/tmp") < root  # else the /tmp mount would hide a root in /tmp


def test_proc_dev_and_private_tmp():
    steps = rootfs.plan(spec(tmp_source=None, tmp_size=32 << 20), FakeProbe())
    tmp = steps[index(steps, "mount", "/tmp")]
    assert tmp.fstype == "tmpfs" and f"size={32 << 20}" in (tmp.data or "")
    proc = steps[index(steps, "mount", "/proc")]
    assert proc.data == "hidepid=2" and proc.flags & linux.MS_NOSUID
    nodes = {s.target for s in steps if s.op == "bind" and s.target.startswith("/dev/")}
    assert nodes == {f"/dev/{n}" for n in rootfs.DEV_NODES}
    assert rootfs.plan(spec(hide_processes=False), FakeProbe())[
        index(steps, "mount", "/proc")].data is None


def test_extra_binds_default_read_only_and_a_missing_source_is_an_error():
    steps = rootfs.plan(spec(binds=[("/run/mysqld", "/run/mysqld", True)]), FakeProbe())
    b = steps[index(steps, "bind", "/run/mysqld")]
    assert b.readonly and b.nofollow and b.kind == "dir"
    with pytest.raises(FileNotFoundError, match="/nope does not exist"):
        rootfs.plan(spec(binds=[("/nope", "/nope", True)]), FakeProbe())
