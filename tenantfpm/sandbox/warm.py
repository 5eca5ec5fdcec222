"""The warm PHP's side of the bargain: what it loads ahead, and the order naming its tenant.

A warm process (sapi/warm.c; kept by the spawn server, spawner.py) is a PHP zygote
exec'd before its tenant is known: the master's child, root, PID 1 of a PID namespace of
its own, with the extensions of the distribution's conf.d loaded. Its order carries what
sandbox/spawn.py's _child() does for the plan, descriptors to chdir, encoded here (pure,
so the tests read it) in wire/order.py's records. The C side parses the whole order,
bounds-checked, before it acts on any of it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator

from tenantfpm.sandbox import rootfs, seccomp
from tenantfpm.sandbox.spawn import SCHEDULING_POLICIES, Plan
from tenantfpm.wire import order as wire
from tenantfpm.wire.fds import HOST_PID_ENV

_EXTENSION = re.compile(r"""^\s*(zend_extension|extension)\s*=\s*["']?([^"';\s]+)""")
MAX = wire.BOUNDS


def extensions(scan_dir: str | None) -> list[str]:
    """What PHP loads from `scan_dir`'s .ini files, in its order: the files sorted by name,
    every zend_extension before every extension (php_ini_register_extensions)."""
    if not scan_dir:
        return []
    zend: list[str] = []
    plain: list[str] = []
    try:
        names = sorted(n for n in os.listdir(scan_dir) if n.endswith(".ini"))
    except OSError:
        return []
    for name in names:
        try:
            with open(os.path.join(scan_dir, name), encoding="utf-8", errors="replace") as f:
                lines = f.read().splitlines()
        except OSError:
            continue
        for line in lines:
            m = _EXTENSION.match(line)
            if m:
                (zend if m.group(1) == "zend_extension" else plain).append(m.group(2))
    return zend + plain


_record = wire.record


def _steps(steps: list[rootfs.Step]) -> Iterator[bytes]:
    for s in steps:
        yield _record("STEP", s.op)
        yield _record("STEP_TARGET", s.target)
        if s.source is not None:
            yield _record("STEP_SOURCE", s.source)
        if s.fstype is not None:
            yield _record("STEP_FSTYPE", s.fstype)
        if s.data is not None:
            yield _record("STEP_DATA", s.data)
        if s.content:
            yield _record("STEP_CONTENT", s.content)
        flags = rootfs.bind_flags(s) if s.op == "bind" else s.flags
        yield _record("STEP_FLAGS", str(flags))
        if s.nofollow:
            yield _record("STEP_NOFOLLOW", "1")
            yield _record("STEP_KIND", s.kind)


def order(plan: Plan, caught: bool, host_pid: int,
          nofile: tuple[int, int] | None) -> bytes | None:
    """The order for a warm process to carry `plan` out; None if it is beyond the warm
    process's bounds. `nofile` is the descriptor limit workers inherit when the plan sets
    none."""
    box = plan.sandbox
    assert box is not None
    if (len(box.steps) > MAX["STEPS"] or len(plan.env) >= MAX["ENV"]
            or len(plan.argv) > MAX["ARGS"] or len(plan.cgroup_procs) > MAX["CGROUPS"]
            or len(plan.pass_fds) > MAX["PASS_FDS"]):
        return None
    env = {**plan.env, HOST_PID_ENV: str(host_pid)}
    if plan.open_files:
        nofile = (plan.open_files, plan.open_files)
    parts = [_record("ARGV", a) for a in plan.argv]
    parts += [_record("ENV", f"{k}={v}") for k, v in env.items()]
    parts += [_record("CWD", plan.cwd), _record("HOSTNAME", box.hostname),
              _record("NEW_ROOT", box.root.new_root),
              _record("UID", str(plan.uid)), _record("GID", str(plan.gid)),
              _record("CORE_DUMPS", "1" if plan.core_dumps else "0"),
              _record("POLICY", str(int(SCHEDULING_POLICIES[plan.scheduling_policy]))),
              _record("CAUGHT", "1" if caught else "0"),
              _record("PASS_FDS", str(len(plan.pass_fds))),
              _record("SECCOMP", seccomp.packed(
                  channel=bool(plan.pass_fds),
                  unix_listener=seccomp.listens_on_unix(plan.listen_fd)))]
    if nofile is not None:
        parts.append(_record("NOFILE", f"{nofile[0]} {nofile[1]}"))
    if box.netns:
        parts.append(_record("NETNS", box.netns))
    parts += [_record("CGROUP", path) for path in plan.cgroup_procs]
    parts += list(_steps(box.steps))
    message = b"".join(parts)
    return message if len(message) <= MAX["SIZE"] else None
