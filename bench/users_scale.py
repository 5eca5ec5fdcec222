"""What a host with one user per tenant costs the master: the registry and the firewall.

Each tenant runs as its own user, so 10,000 tenants make a 10,000-line /etc/passwd,
and glibc reads that file from the top on every lookup (to the end for a name it
does not find). This script measures the two places where the master's work
followed that: loading the registry (`Registry.load_all()`, at start, on reload,
and in `check`/`add`/`edit`) and the firewall's nftables set of tenant uids, whose
every element nftables looks up as a user name first.

The host's /etc/passwd is never touched. In a private mount namespace of this
process, a copy with N more users is bound over it, and glibc and libnftables in
this process read that copy. The site files, roots and nftables table are
temporary and go when it ends.

    sudo .venv/bin/python bench/users_scale.py [-n 10000]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tenantfpm.config.model import GlobalConfig
from tenantfpm.netguard import NetGuard
from tenantfpm.registry import Registry
from tenantfpm.sandbox import linux

FIRST_UID = 3_000_000  # far above any real user's


def more_users(base: Path, n: int) -> None:
    """/etc/passwd as the host has it plus `n` users, bound over it in this process's
    own mount namespace."""
    linux.unshare(linux.CLONE_NEWNS)
    linux.mount(None, "/", None, linux.MS_REC | linux.MS_PRIVATE)
    copy = base / "passwd"
    lines = "".join(f"tfpmscale{i:05d}:x:{FIRST_UID + i}:65534::/nonexistent:"
                    "/usr/sbin/nologin\n" for i in range(n))
    copy.write_text(Path("/etc/passwd").read_text() + lines)
    linux.mount(str(copy), "/etc/passwd", None, linux.MS_BIND)


def load_registry(base: Path, n: int) -> float:
    tenants, www = base / "tenants", base / "www"
    tenants.mkdir()
    for i in range(n):
        root = www / f"s{i}"
        root.mkdir(parents=True)
        (tenants / f"s{i}.toml").write_text(
            f'name = "s{i}"\nuser = "tfpmscale{i:05d}"\nroot = "{root}"\n'
            '[pm]\nmode = "ondemand"\n')
    conf = GlobalConfig.model_validate({"paths": {
        "tenants_dir": str(tenants), "run_dir": str(base / "run"),
        "log_dir": str(base / "log"), "state_dir": str(base / "lib"),
        "profiles_dir": str(base / "profiles")}})
    t = time.perf_counter()
    ok, bad = Registry(conf).load_all()
    took = time.perf_counter() - t
    if len(ok) != n:
        raise SystemExit(f"{len(bad)} site files did not load: {next(iter(bad.values()))}")
    return took


def firewall(n: int) -> dict[str, float]:
    guard = NetGuard(f"bench-{uuid.uuid4().hex[:8]}")
    uids = {FIRST_UID + i for i in range(n)}
    out = {}
    try:
        for label, u, ports in (("the first table", uids, {9001}),
                                ("a port more", uids, {9001, 9002}),
                                ("a uid more", uids | {FIRST_UID + n}, {9001, 9002})):
            t = time.perf_counter()
            guard.update(u, ports)
            out[label] = time.perf_counter() - t
    finally:
        guard.remove()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=10_000, help="users and tenants (10000)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root (a mount namespace and nftables need it)")
    with tempfile.TemporaryDirectory(prefix="tfpm-users-") as tmp:
        base = Path(tmp)
        more_users(base, args.n)
        print(f"/etc/passwd with {args.n} more users (this process's view only)")
        print(f"Registry.load_all() of {args.n} site files: "
              f"{load_registry(base, args.n):.2f} s", flush=True)
        for label, s in firewall(args.n).items():
            print(f"firewall, {args.n} tenant uids, {label}: {s * 1000:.1f} ms", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
