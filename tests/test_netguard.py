"""The firewall's rules, as text: what nft is given (the effect is tested live in
tests/integration/test_attacks.py)."""

import re

import pytest

from tenantfpm.netguard import ruleset, table_name
from tenantfpm.ratelimit import TokenBucket


def test_ruleset_rejects_new_connections_from_tenant_uids_to_protected_ports():
    text = ruleset("tenantfpm_x", {1002, 1001}, {9253, 19001})
    assert "elements = { 1001, 1002 }" in text and "elements = { 9253, 19001 }" in text
    assert ('oifname "lo" tcp flags & (syn | ack) == syn tcp dport @protected_ports '
            "meta skuid @tenant_uids reject with tcp reset") in text
    assert 'iifname "tf*" tcp dport @protected_ports reject' in text
    # declared, deleted, re-created: one atomic transaction whatever was there
    assert text.index("delete table inet tenantfpm_x") < text.index("set tenant_uids")


def test_ruleset_with_nothing_to_protect_is_valid():
    text = ruleset("t", set(), set())
    assert "elements" not in text and "type uid;" in text


def test_table_name_is_safe_for_nft_and_one_per_master():
    name = table_name("tenantfpm-test-tfpm-ab/c", "/run/tenantfpm/control.sock")
    assert re.fullmatch(r"tenantfpm_tenantfpm_test_tfpm_ab_c_[0-9a-f]{8}", name)
    # two masters with the default cgroup_parent never take each other's table
    assert table_name("tenantfpm", "/run/a/control.sock") != table_name(
        "tenantfpm", "/tmp/demo/run/control.sock")


def test_the_monitoring_ports_admit_root_and_the_monitoring_group_only():
    text = ruleset("tenantfpm_x", {1001}, {9253}, frozenset({9253}), 998)
    assert ('tcp dport { 9253 } meta skuid != 0 meta skgid != 998 reject with tcp reset'
            in text)
    assert "skgid" not in ruleset("tenantfpm_x", {1001}, {9001})


def test_token_bucket_refills_at_its_rate_up_to_its_burst():
    b = TokenBucket(rate=1000, burst=4000)
    assert b.available(0.0) == 4000
    b.take(4000)
    assert b.available(0.0) == 0 and b.wait(1000) == 1.0
    assert b.available(2.0) == 2000
    assert b.available(100.0) == 4000
    assert TokenBucket(rate=0, burst=0).available(0.0) > 1 << 20  # 0 = unlimited


def test_a_uid_stays_fenced_after_its_tenant_changes_user():
    """The old generation keeps running under the old uid for a while after a reload."""
    from types import SimpleNamespace

    from tenantfpm.config.model import GlobalConfig
    from tenantfpm.config.rules import parse_listen
    from tenantfpm.master.arbiter import Master

    master = Master(GlobalConfig.model_validate({"master": {"log_file": "stderr"}}))
    applied = []
    master.guard = SimpleNamespace(update=lambda uids, ports: applied.append((set(uids), ports)))

    def tenant(uid, listen):
        return SimpleNamespace(uid=uid, listen=parse_listen(listen))

    master.pools = {"a": SimpleNamespace(tenant=tenant(1001, "127.0.0.1:9001"))}
    assert master.protect() is None
    master.pools["a"].tenant = tenant(1002, "/run/a.sock")  # reloaded as another user
    master.protect()
    assert applied == [({1001}, {9001}), ({1001, 1002}, set())]


def test_after_the_first_table_only_the_changed_uids_and_ports_go_in():
    """nftables looks every uid of a whole table up by name (7 s with 10,000 users)."""
    from tenantfpm.errors import TenantFPMError
    from tenantfpm.netguard import NetGuard

    g = NetGuard("x")
    t = g.table
    sent: list[str] = []
    g._nft = g._whole = sent.append  # type: ignore[method-assign]
    g.update({1001}, {9001})
    g.update({1001, 1002}, {9001})  # a tenant more: its uid joins the set
    g.update({1001, 1002}, {9001})  # nothing changed: nothing sent
    g.update({1001, 1002}, {9002, 9003})  # a listener moved, another came
    g.update({1002}, {9002, 9003})
    assert "delete table" in sent[0]
    assert sent[1:] == [
        f"add element inet {t} tenant_uids {{ 1002 }}\n",
        f"delete element inet {t} protected_ports {{ 9001 }}\n"
        f"add element inet {t} protected_ports {{ 9002, 9003 }}\n",
        f"delete element inet {t} tenant_uids {{ 1001 }}\n"]

    def fail(script: str) -> None:
        raise TenantFPMError("nft failed: test")

    g._nft = g._whole = fail  # type: ignore[method-assign]
    with pytest.raises(TenantFPMError):
        g.update({1002, 1003}, {9002})
    g._nft = g._whole = sent.append  # type: ignore[method-assign]
    g.update({1002, 1003}, {9002})  # after a failure the kernel's state is unknown: all of it
    assert "delete table" in sent[-1] and "1002, 1003" in sent[-1]


def test_rules_go_into_the_kernel_in_one_transaction_or_not_at_all():
    """Through libnftables, against the kernel: a table made, a uid added in place, and a
    script with an error applies none of its lines and says why."""
    import os
    import subprocess
    import uuid

    import pytest

    from tenantfpm.errors import TenantFPMError
    from tenantfpm.netguard import NetGuard, nft

    if os.geteuid() != 0:
        pytest.skip("nftables needs root")
    g = NetGuard(f"unit-{uuid.uuid4().hex[:8]}")
    try:
        g.update({1001}, {9001})
        g.update({1001, 1002}, {9001})

        def listed() -> str:
            return subprocess.run(["nft", "list", "table", "inet", g.table], check=True,
                                  capture_output=True, text=True).stdout

        assert "1001, 1002" in listed() and "9001" in listed()
        g.update({1001, 1002}, {9002, 9003})  # in place: the ports' set changes
        assert "9002, 9003" in listed() and "9001" not in listed()
        assert "1001, 1002" in listed()
        with pytest.raises(TenantFPMError, match="nft failed: Error: No such file or directory"):
            nft(f"add element inet {g.table} tenant_uids {{ 1003 }}\n"
                f"add element inet {g.table} nosuch {{ 1 }}\n")
        assert "1003" not in listed()
    finally:
        g.remove()
    gone = subprocess.run(["nft", "list", "table", "inet", g.table], capture_output=True)
    assert gone.returncode != 0


CHILD = """
import os, resource, subprocess, sys
from tenantfpm import netguard
g = netguard.NetGuard(sys.argv[1])  # as the master: made first, with few descriptors open
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4096)), hard))
held = [os.open(os.devnull, os.O_RDONLY) for _ in range(1200)]  # tenants' sockets, as it were
assert max(held) > netguard.FD_SETSIZE
g.update({1001}, {9001})
g.update({1001, 1002}, {9001})
listed = subprocess.run(["nft", "list", "table", "inet", g.table], capture_output=True,
                        text=True).stdout
g.remove()
print("library" if netguard._spare is not None else "command", "1001, 1002" in listed)
"""


def test_rules_go_in_when_every_low_descriptor_is_taken(tmp_path):
    """libnftables select()s on its socket: past FD_SETSIZE glibc aborts the process. The
    bench's master died so at its 1,024th tenant; the reserved low descriptor prevents it."""
    import os
    import subprocess
    import sys
    import uuid

    import pytest

    if os.geteuid() != 0:
        pytest.skip("nftables needs root")
    r = subprocess.run([sys.executable, "-c", CHILD, f"unit-{uuid.uuid4().hex[:8]}"],
                       capture_output=True, text=True, timeout=60,
                       cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split() == ["library", "True"]


def test_without_a_low_descriptor_the_nft_command_does_it(monkeypatch):
    import os
    import subprocess
    import uuid

    import pytest

    from tenantfpm import netguard

    if os.geteuid() != 0:
        pytest.skip("nftables needs root")
    monkeypatch.setattr(netguard, "_spare", None)
    monkeypatch.setattr(netguard, "reserve", lambda: None)
    g = netguard.NetGuard(f"unit-{uuid.uuid4().hex[:8]}")
    try:
        g.update({1001}, {9001})
        g.update({1001, 1002}, {9001})  # a change in place: nft(), here the command
        listed = subprocess.run(["nft", "list", "table", "inet", g.table],
                                capture_output=True, text=True).stdout
        assert "1001, 1002" in listed and "9001" in listed
    finally:
        g.remove()


NUMERIC_CHILD = """
import subprocess, sys
from pathlib import Path
from tenantfpm import netguard
from tenantfpm.sandbox import linux
# this process's own view: /etc/passwd with a user named 4242 whose uid is 5000
linux.unshare(linux.CLONE_NEWNS)
linux.mount(None, "/", None, linux.MS_REC | linux.MS_PRIVATE)
copy = Path(sys.argv[2])
copy.write_text(Path("/etc/passwd").read_text() + "4242:x:5000:65534::/nonexistent:/bin/false\\n")
linux.mount(str(copy), "/etc/passwd", None, linux.MS_BIND)
g = netguard.NetGuard(sys.argv[1])

def uids():
    return subprocess.run(["nft", "list", "set", "inet", g.table, "tenant_uids"],
                          capture_output=True, text=True, check=True).stdout.split("elements")[1]

try:
    netguard.nft(netguard.ruleset(g.table, {4242}, {9001}))  # in the master: a name first
    print("library", uids().split()[2])
    g.update({4242}, {9001})  # the whole table: no user database
    print("whole", uids().split()[2])
finally:
    g.remove()
"""


def test_the_whole_table_takes_every_uid_for_the_number_it_is(tmp_path):
    """The first table (every tenant's uid) goes in with no user database in view: with
    10,000 users nftables' name lookups took 6 s of the master's start. The proof it is
    not looked up: a user named 4242 with uid 5000 turns 4242 into 5000 in the master's
    own view, and not in the whole table's."""
    import os
    import subprocess
    import sys
    import uuid

    import pytest

    if os.geteuid() != 0:
        pytest.skip("nftables and a mount namespace need root")
    r = subprocess.run([sys.executable, "-c", NUMERIC_CHILD, f"unit-{uuid.uuid4().hex[:8]}",
                        str(tmp_path / "passwd")], capture_output=True, text=True, timeout=60,
                       cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split("\n")[:2] == ["library 5000", "whole 4242"]


def test_out_of_descriptors_is_an_error_not_a_crash(monkeypatch):
    """EMFILE while taking the low descriptor back: no exception escapes but nft's own."""
    import errno

    from tenantfpm import netguard

    def emfile(*a, **k):
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(netguard, "_spare", None)
    monkeypatch.setattr(netguard.os, "open", emfile)
    netguard.reserve()
    assert netguard._spare is None
