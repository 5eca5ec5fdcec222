"""The cgroup drivers against fake trees laid out (names and formats) as the kernel does."""

from __future__ import annotations

from pathlib import Path

import pytest

from tenantfpm import cgroups
from tenantfpm.cgroups import Limits, V1Driver, V2Driver, favor, mountinfo
from tenantfpm.cgroups.delegation import own_unit_cgroup
from tenantfpm.sandbox import linux

V1_MOUNTINFO = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
V1_COMBINED = """\
31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
"""
V2_MOUNTINFO = """\
30 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime - cgroup2 cgroup2 rw,nsdelegate
"""


def test_detect_by_what_is_mounted_at_the_cgroup_root(tmp_path):
    for text, kind in ((V1_MOUNTINFO, V1Driver), (V2_MOUNTINFO, V2Driver)):
        info = tmp_path / "mountinfo"
        info.write_text(text)
        assert isinstance(cgroups.detect("tenantfpm", "/sys/fs/cgroup", str(info)), kind)


def test_v1_controllers_from_mountinfo():
    d = V1Driver.from_mounts(mountinfo.parse(V1_MOUNTINFO), "tf")
    assert d.mounts == {"cpu": "/sys/fs/cgroup/cpu", "cpuacct": "/sys/fs/cgroup/cpuacct",
                        "memory": "/sys/fs/cgroup/memory", "pids": "/sys/fs/cgroup/pids"}
    combined = V1Driver.from_mounts(mountinfo.parse(V1_COMBINED), "tf")
    assert combined.mounts["cpu"] == combined.mounts["cpuacct"] == "/sys/fs/cgroup/cpu,cpuacct"
    assert combined.check() == ["cgroup v1 controller 'pids' is not mounted"]


@pytest.fixture
def v1(tmp_path):
    """Each hierarchy with a tenant directory already showing the kernel's files."""
    mounts = {c: str(tmp_path / c) for c in ("memory", "cpu", "cpuacct", "pids")}
    t = tmp_path / "memory" / "tf" / "shop"
    t.mkdir(parents=True)
    (t / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    (t / "memory.memsw.limit_in_bytes").write_text("9223372036854771712\n")
    (t / "memory.usage_in_bytes").write_text("7340032\n")
    (t / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n")
    c = tmp_path / "cpu" / "tf" / "shop"
    c.mkdir(parents=True)
    (c / "cpu.cfs_quota_us").write_text("-1\n")
    (c / "cpu.cfs_period_us").write_text("100000\n")
    a = tmp_path / "cpuacct" / "tf" / "shop"
    a.mkdir(parents=True)
    (a / "cpuacct.usage").write_text("2500000000\n")
    p = tmp_path / "pids" / "tf" / "shop"
    p.mkdir(parents=True)
    (p / "pids.max").write_text("max\n")
    (p / "pids.current").write_text("3\n")
    for d in (t, c, a, p):
        (d / "cgroup.procs").write_text("")
    return V1Driver(mounts, "tf"), tmp_path


def test_v1_limits_usage_and_join(v1):
    driver, root = v1
    cg = driver.tenant("shop")
    assert cg.usage().memory_limit is None  # the kernel's "unlimited" is not a limit
    cg.create()
    cg.apply(Limits(memory=256 << 20, cpu=1.5, pids=64, weight=8))
    mem = root / "memory" / "tf" / "shop"
    assert (root / "cpu/tf/shop/cpu.shares").read_text() == str(8 * 1024)
    assert (mem / "memory.limit_in_bytes").read_text() == str(256 << 20)
    assert (mem / "memory.memsw.limit_in_bytes").read_text() == str(256 << 20)
    assert (root / "cpu/tf/shop/cpu.cfs_quota_us").read_text() == "150000"
    assert (root / "pids/tf/shop/pids.max").read_text() == "64"
    (mem / "memory.limit_in_bytes").write_text(str(256 << 20))
    u = cg.usage()
    assert (u.memory_current, u.memory_limit, u.oom_kills, u.cpu_seconds, u.pids_current) == (
        7340032, 256 << 20, 2, 2.5, 3)
    assert sorted(cg.join_files()) == sorted(str(root / c / "tf/shop/cgroup.procs")
                                             for c in ("memory", "cpu", "cpuacct", "pids"))
    cg.apply(Limits())
    assert (mem / "memory.limit_in_bytes").read_text() == "-1"
    assert (root / "pids/tf/shop/pids.max").read_text() == "max"


@pytest.fixture
def v2(tmp_path):
    """A unified hierarchy: the root offers controllers, none enabled below it yet."""
    (tmp_path / "cgroup.controllers").write_text("cpuset cpu io memory hugetlb pids rdma misc\n")
    (tmp_path / "cgroup.subtree_control").write_text("\n")
    t = tmp_path / "hosting" / "tf" / "shop"
    t.mkdir(parents=True)
    for d in (tmp_path / "hosting", tmp_path / "hosting" / "tf"):
        (d / "cgroup.subtree_control").write_text("")
    (t / "cgroup.controllers").write_text("cpu memory pids\n")
    (t / "cgroup.procs").write_text("")
    (t / "memory.max").write_text("max\n")
    (t / "memory.swap.max").write_text("max\n")
    (t / "memory.current").write_text("9437184\n")
    (t / "memory.events").write_text("low 0\nhigh 0\nmax 14\noom 2\noom_kill 2\n"
                                     "oom_group_kill 0\n")
    (t / "cpu.max").write_text("max 100000\n")
    (t / "cpu.stat").write_text("usage_usec 1500000\nuser_usec 1000000\nsystem_usec 500000\n")
    (t / "pids.max").write_text("max\n")
    (t / "pids.current").write_text("4\n")
    return V2Driver(str(tmp_path), "hosting/tf"), tmp_path


def test_v2_enables_controllers_down_to_the_parent_only(v2):
    driver, root = v2
    driver.tenant("shop").create()
    for d in (root, root / "hosting", root / "hosting" / "tf"):
        assert set((d / "cgroup.subtree_control").read_text().split()) == {
            "+memory", "+cpu", "+pids"}
    # no-internal-processes: workers go only into the tenant's leaf
    assert driver.tenant("shop").join_files() == [str(root / "hosting/tf/shop/cgroup.procs")]


def test_v2_limits_and_usage(v2):
    driver, root = v2
    cg = driver.tenant("shop")
    cg.apply(Limits(memory=64 << 20, cpu=0.5, pids=32, weight=8))
    t = root / "hosting" / "tf" / "shop"
    assert (t / "cpu.weight").read_text() == "800"
    assert (t / "memory.max").read_text() == str(64 << 20)
    assert (t / "memory.swap.max").read_text() == "0"
    assert (t / "cpu.max").read_text() == "50000 100000"
    assert (t / "pids.max").read_text() == "32"
    u = cg.usage()
    assert (u.memory_current, u.memory_limit, u.oom_kills, u.cpu_seconds, u.pids_current) == (
        9437184, 64 << 20, 2, 1.5, 4)
    cg.apply(Limits())
    assert (t / "memory.max").read_text() == "max" and cg.usage().memory_limit is None
    assert (t / "cpu.max").read_text() == "max 100000"


def test_v2_missing_controller_is_reported(v2):
    driver, root = v2
    (root / "cgroup.controllers").write_text("cpu memory\n")
    assert driver.check() == ["cgroup v2 controller 'pids' is not available at " + str(root)]


def test_parents_removed_deepest_first(v2):
    driver, root = v2
    assert driver.parent_dirs() == [str(root / "hosting" / "tf"), str(root / "hosting")]


def test_oom_count_alone(v1, v2):
    assert v1[0].tenant("shop").oom_kills() == 2
    assert v2[0].tenant("shop").oom_kills() == 2


def test_cpu_weight_is_a_tenants_max_children_worth_of_processes():
    """A tenant's cgroup competes as one entity: with the kernel's default weight its
    workers together would weigh what one process does (bench: 4 workers lost a fifth
    of their throughput to nginx and wrk that way). Bounded by the kernel's ranges."""
    from tenantfpm.cgroups.base import weight_v1, weight_v2

    assert (weight_v1(1), weight_v1(5), weight_v1(1000)) == (1024, 5120, 262144)
    assert (weight_v2(1), weight_v2(5), weight_v2(1000)) == (100, 500, 10000)


SYSTEMD_V2 = (
    "24 1 0:22 / / rw,relatime shared:1 - ext4 /dev/vda1 rw\n"
    "30 24 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 "
    "rw,nsdelegate,memory_recursiveprot\n")
HYBRID = (
    "24 1 0:22 / / rw,relatime shared:1 - ext4 /dev/vda1 rw\n"
    "31 30 0:27 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,favordynmods\n"
    "32 30 0:28 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n")


def test_favordynmods_remount_keeps_every_other_option():
    m = favor.find_cgroup2(SYSTEMD_V2)
    assert m is not None and m.target == "/sys/fs/cgroup" and not m.favored
    flags, data = m.remount_args()
    # the root's flags are replaced by exactly these: nsdelegate must survive
    assert data == "favordynmods,memory_recursiveprot,nsdelegate"
    want = (linux.MS_REMOUNT | linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC
            | (1 << 21))  # relatime
    assert flags == want and not flags & linux.MS_RDONLY
    assert m.remount_args(favor=False) == (want, "memory_recursiveprot,nsdelegate")


def test_favordynmods_found_on_the_hybrid_unified_mount_or_missing():
    m = favor.find_cgroup2(HYBRID)
    assert m is not None and m.target == "/sys/fs/cgroup/unified" and m.favored
    assert favor.find_cgroup2(HYBRID.replace("cgroup2", "tmpfs")) is None
    escaped = favor.find_cgroup2(SYSTEMD_V2.replace("/sys/fs/cgroup ", "/a\\040b "))
    assert escaped is not None and escaped.target == "/a b"


def test_favordynmods_without_a_cgroup2_mount_says_how_to_get_it(tmp_path):
    info = tmp_path / "mountinfo"
    info.write_text(HYBRID.replace("cgroup2", "tmpfs"))
    with pytest.raises(OSError, match="cgroup_favordynmods=true"):
        favor.enable(str(info))
    info.write_text(HYBRID)  # already set: nothing to do, nothing mounted
    assert favor.enable(str(info)) == "favordynmods already set on /sys/fs/cgroup/unified"


def test_the_tenants_parent_weighs_all_their_workers(v1, v2):
    """Not one process's worth next to the web server: what FPM's workers would weigh."""
    d1, root1 = v1
    d1.set_parent_weight(12)
    assert (root1 / "cpu" / "tf" / "cpu.shares").read_text() == str(12 * 1024)
    d2, root2 = v2
    for d in (root2 / "hosting", root2 / "hosting" / "tf"):
        d.mkdir(parents=True, exist_ok=True)
    d2.set_parent_weight(12)
    for d in (root2 / "hosting", root2 / "hosting" / "tf"):
        assert (d / "cpu.weight").read_text() == str(12 * 100)


# --- systemd delegation (cgroups/delegation.py) ------------------------------------------

V1_UNIT = """12:pids:/system.slice/tenantfpm.service
11:memory:/system.slice/tenantfpm.service
4:cpu,cpuacct:/system.slice/tenantfpm.service
1:name=systemd:/system.slice/tenantfpm.service
0::/system.slice/tenantfpm.service
"""


def test_unit_cgroup_v1_when_every_controller_agrees() -> None:
    assert own_unit_cgroup(V1_UNIT, 1) == "/system.slice/tenantfpm.service"


def test_unit_cgroup_v1_not_when_a_controller_is_elsewhere() -> None:
    # systemd on v1 without Delegate=yes leaves memory at the root, for instance
    text = V1_UNIT.replace("11:memory:/system.slice/tenantfpm.service", "11:memory:/")
    assert own_unit_cgroup(text, 1) is None


def test_unit_cgroup_v2_and_its_leaf() -> None:
    assert own_unit_cgroup("0::/system.slice/tenantfpm.service\n", 2) == \
        "/system.slice/tenantfpm.service"
    # a master that moved into the unit's leaf already (the rule of no internal processes)
    assert own_unit_cgroup("0::/system.slice/tenantfpm.service/master\n", 2) == \
        "/system.slice/tenantfpm.service"


@pytest.mark.parametrize("text", ["0::/user.slice/user-0.slice/session-3.scope\n", "0::/\n",
                                  "0::/system.slice/../x.service\n", "garbage", ""])
def test_unit_cgroup_none_outside_a_service(text: str) -> None:
    assert own_unit_cgroup(text, 2) is None


def test_delegated_parent_keeps_the_unit_levels(tmp_path: Path) -> None:
    """The master weighs and removes only the levels it made, never systemd's."""
    d = V2Driver(str(tmp_path), "system.slice/tenantfpm.service/tenantfpm",
                 "system.slice/tenantfpm.service")
    assert d.parent_dirs() == [str(tmp_path / "system.slice" / "tenantfpm.service" /
                                   "tenantfpm")]
