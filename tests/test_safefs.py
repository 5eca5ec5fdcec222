"""safefs: what the root master will open, and what check calls tenant-writable."""

from __future__ import annotations

import os
import stat

import pytest

from tenantfpm import safefs
from tenantfpm.logs import LogFile, escape

TENANT = 4242  # a uid/gid no file here belongs to, as the tenant


@pytest.fixture
def tree(tmp_path):
    tmp_path.chmod(0o755)
    return tmp_path


def test_a_trusted_directory_opens_and_files_are_made_in_it(tree):
    fd = safefs.open_trusted_dir(str(tree / "log" / "a"), create_mode=0o750)
    try:
        f = safefs.open_in(fd, "error.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        os.write(f, b"x\n")
        os.close(f)
    finally:
        os.close(fd)
    assert (tree / "log" / "a" / "error.log").read_text() == "x\n"
    assert stat.S_IMODE((tree / "log").stat().st_mode) == 0o750


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_a_directory_a_tenant_owns_or_can_write_is_refused(tree):
    owned = tree / "owned"
    owned.mkdir()
    os.chown(owned, TENANT, TENANT)
    with pytest.raises(safefs.UnsafePath, match="owned by uid 4242"):
        safefs.open_trusted_dir(str(owned / "logs"), create_mode=0o750)
    open_to_all = tree / "open"
    open_to_all.mkdir()
    open_to_all.chmod(0o777)
    with pytest.raises(safefs.UnsafePath, match="could replace"):
        safefs.open_trusted_dir(str(open_to_all))
    sticky = tree / "sticky"
    sticky.mkdir()
    sticky.chmod(0o1777)  # like /tmp: root's entries in it are root's alone
    os.close(safefs.open_trusted_dir(str(sticky)))


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_a_tenants_symlink_on_the_way_is_not_followed(tree):
    (tree / "target").mkdir()
    link = tree / "logs"
    link.symlink_to(tree / "target")
    os.chown(link, TENANT, TENANT, follow_symlinks=False)
    with pytest.raises(safefs.UnsafePath, match="a symlink owned by uid 4242"):
        safefs.open_trusted_dir(str(link))
    root_link = tree / "rootlink"
    root_link.symlink_to("target")  # root's own link, in root's directory: followed
    os.close(safefs.open_trusted_dir(str(root_link)))


def test_a_log_file_that_is_a_link_or_a_fifo_is_not_opened(tree):
    (tree / "elsewhere").write_text("root's file\n")
    (tree / "error.log").symlink_to(tree / "elsewhere")
    os.mkfifo(tree / "slow.log")
    for name in ("error.log", "slow.log"):
        log = LogFile(str(tree / name))
        assert log.problem is not None
        log.write("error", "injected")
        log.close()
    assert (tree / "elsewhere").read_text() == "root's file\n"


def test_read_regular_refuses_fifos_without_blocking(tree):
    os.mkfifo(tree / "fifo")
    with pytest.raises(safefs.UnsafePath, match="not a regular file"):
        safefs.read_regular(str(tree / "fifo"), 100)
    (tree / "f").write_bytes(b"0123456789")
    assert safefs.read_regular(str(tree / "f"), 4) == b"0123"


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_writable_by_names_the_component_a_tenant_could_replace(tree):
    home = tree / "home"
    (home / "bin").mkdir(parents=True)
    prog = home / "bin" / "php"
    prog.write_text("#!/bin/sh\n")
    assert safefs.writable_by(str(prog), TENANT, TENANT) is None
    os.chown(home, TENANT, TENANT)  # the tenant's home: it can rename bin/
    assert safefs.writable_by(str(prog), TENANT, TENANT) == str(home / "bin")
    os.chown(home, 0, 0)
    prog.chmod(0o666)
    assert safefs.writable_by(str(prog), TENANT, TENANT) == str(prog)
    prog.chmod(0o755)
    link = tree / "php-link"
    link.symlink_to(prog)
    assert safefs.writable_by(str(link), TENANT, TENANT) is None
    os.chown(home / "bin", 0, TENANT)
    (home / "bin").chmod(0o775)  # the tenant's group may write the directory
    assert safefs.writable_by(str(link), TENANT, TENANT) == str(prog)
    up = tree / "up"
    up.symlink_to("home/bin/../bin/php")  # '..' in a link: judged where it leads
    assert safefs.writable_by(str(up), TENANT, TENANT) == str(prog)


def test_escape_keeps_one_line_one_line():
    assert escape("a\rb\nc\x1b[31m\x85d\u2028") == "a\\x0db\\x0ac\\x1b[31m\\x85d\\u2028"
    assert escape("naïve \\ \"quoted\"\ttab") == "naïve \\ \"quoted\"\ttab"


def test_error_log_cap_drops_worker_output_counts_it_and_says_so(tree):
    from tenantfpm.logs import TenantLog

    log = TenantLog("t", str(tree / "logs"), max_size=2000)
    for i in range(100):
        log.worker_said(42, "stderr", [f"line {i} " + "x" * 80])
    size = (tree / "logs" / "error.log").stat().st_size
    assert size < 2000 + 200  # the last write may pass the cap, none after it
    text = (tree / "logs" / "error.log").read_text()
    assert text.count("reached log.max_size") == 1 and log.dropped > 5000
    (tree / "logs" / "error.log").rename(tree / "logs" / "error.log.1")  # logrotate
    log.reopen()
    log.worker_said(42, "stderr", ["after rotation"])
    text = (tree / "logs" / "error.log").read_text()
    assert "bytes of workers' output were dropped" in text and "after rotation" in text
    log.close()


def test_a_resting_log_holds_no_descriptor_and_its_next_line_reopens_it_safely(tree):
    from tenantfpm.logs import TenantLog

    logs = tree / "logs"
    log = TenantLog("t", str(logs))
    log.event("notice", "before")
    fd = log.error._fd
    assert fd is not None
    log.rest()
    with pytest.raises(OSError):
        os.fstat(fd)  # closed (the number is free again)
    (logs / "error.log").rename(logs / "error.log.1")  # rotated while resting
    log.reopen()  # logrotate's signal to a resting log: nothing opened yet
    assert not (logs / "error.log").exists()
    log.event("notice", "after")
    assert "after" in (logs / "error.log").read_text()
    assert "after" not in (logs / "error.log.1").read_text()
    log.rest()
    (logs / "error.log").unlink()
    (tree / "elsewhere").write_text("root's file\n")
    (logs / "error.log").symlink_to(tree / "elsewhere")  # swapped in while resting
    log.event("notice", "injected")
    assert (tree / "elsewhere").read_text() == "root's file\n"
    assert log.problem is not None
    log.close()


def test_a_hostile_process_name_does_not_change_the_counters():
    from tenantfpm.procfs import _switches

    status = ("Name:\tctxt_switches: 99999\nState:\tS (sleeping)\n"
              "voluntary_ctxt_switches:\t7\nnonvoluntary_ctxt_switches:\t5\n")
    assert _switches(status) == 12
