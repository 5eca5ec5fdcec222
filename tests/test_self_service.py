"""The self-service socket's pure parts: who the caller may act on, and log slices.
The socket itself is attacked as real users in tests/integration/test_attacks.py."""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest

from tenantfpm.master.control import Refused
from tenantfpm.master.self_service import own_tenant, read_slice


def pools(**uids: int) -> dict:
    return {n: SimpleNamespace(tenant=SimpleNamespace(name=n, uid=u)) for n, u in uids.items()}


def test_the_callers_uid_picks_its_one_tenant():
    p = pools(shop=1001, blog=1002)
    assert own_tenant(p, 1001, None).tenant.name == "shop"
    assert own_tenant(p, 1001, "shop").tenant.name == "shop"
    for uid, asked in [(1001, "blog"), (1003, None), (0, "shop"), (1002, "shop")]:
        with pytest.raises(Refused):
            own_tenant(p, uid, asked)


@pytest.mark.skipif(os.geteuid() != 0, reason="the log directory must be root's")
def test_a_slice_ends_on_a_line_and_a_negative_offset_is_the_tail(tmp_path):
    d = tmp_path / "logs"
    d.mkdir(mode=0o750)
    (d / "error.log").write_bytes("é line one\nline two\nline three\n".encode())
    part = read_slice(str(d), "error", 0, 16)
    assert part["data"] == "é line one\n" and part["next"] == len("é line one\n".encode())
    tail = read_slice(str(d), "error", -11, 100)
    assert tail["data"] == "line three\n" and tail["next"] == tail["size"]
    assert read_slice(str(d), "slow", 0, 100)["exists"] is False
    (d / "access.log").symlink_to("/etc/shadow")
    with pytest.raises(OSError):
        read_slice(str(d), "access", 0, 100)
