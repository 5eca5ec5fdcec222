"""The warm PHP's side of the bargain: what it loads ahead, and the order naming its tenant.

A warm process (sapi/warm.c; kept by the spawn server, spawner.py) is a PHP zygote
exec'd before its tenant is known: the master's child, root, PID 1 of a PID namespace of
its own, with the extensions of the distribution's conf.d loaded. Its order carries what
sandbox/spawn.py's _child() does for the plan, descriptors to chdir, encoded here (pure, so
the tests read it): records of a tag byte, a little-endian u32 length and the value. The
C side parses the whole order, bounds-checked, before it acts on any of it.

  a argv element      e "KEY=value"         c cwd            h hostname
  R the new root (an empty host directory the tmpfs root is mounted on)
  u uid               g gid                 r "soft hard" RLIMIT_NOFILE (absent: kept)
  k core dumps 0|1    P scheduling policy   G a cgroup.procs file to join
  n the network namespace's handle         m output caught 0|1   p pass fds count
  B the seccomp filter (struct sock_filter entries)
  S a step's op, then its fields: t target, s source, y fstype, f flags, d data,
    C content, N nofollow, K kind
"""

from __future__ import annotations

import os
import re
import struct
from collections.abc import Iterator

from tenantfpm.sandbox import rootfs, seccomp
from tenantfpm.sandbox.spawn import SCHEDULING_POLICIES, WORKER_PID_ENV, Plan

_EXTENSION = re.compile(r"""^\s*(zend_extension|extension)\s*=\s*["']?([^"';\s]+)""")
MAX_ORDER = 1 << 16  # sapi/warm.c's bounds: a larger plan is cloned as usual
MAX_STEPS = 512
MAX_ENV = 512
MAX_ARGS = 512


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


def _record(tag: str, value: str | bytes) -> bytes:
    raw = value.encode() if isinstance(value, str) else value
    return tag.encode() + struct.pack("<I", len(raw)) + raw


def _steps(steps: list[rootfs.Step]) -> Iterator[bytes]:
    for s in steps:
        yield _record("S", s.op)
        yield _record("t", s.target)
        if s.source is not None:
            yield _record("s", s.source)
        if s.fstype is not None:
            yield _record("y", s.fstype)
        if s.data is not None:
            yield _record("d", s.data)
        if s.content:
            yield _record("C", s.content)
        flags = rootfs.bind_flags(s) if s.op == "bind" else s.flags
        yield _record("f", str(flags))
        if s.nofollow:
            yield _record("N", "1")
            yield _record("K", s.kind)


def order(plan: Plan, caught: bool, host_pid: int,
          nofile: tuple[int, int] | None) -> bytes | None:
    """The order for a warm process to carry `plan` out; None if it is beyond the warm
    process's bounds. `nofile` is the descriptor limit workers inherit when the plan sets
    none."""
    box = plan.sandbox
    assert box is not None
    if len(box.steps) > MAX_STEPS or len(plan.env) >= MAX_ENV or len(plan.argv) > MAX_ARGS:
        return None
    env = {**plan.env, WORKER_PID_ENV: str(host_pid)}
    if plan.open_files:
        nofile = (plan.open_files, plan.open_files)
    parts = [_record("a", a) for a in plan.argv]
    parts += [_record("e", f"{k}={v}") for k, v in env.items()]
    parts += [_record("c", plan.cwd), _record("h", box.hostname),
              _record("R", box.root.new_root),
              _record("u", str(plan.uid)), _record("g", str(plan.gid)),
              _record("k", "1" if plan.core_dumps else "0"),
              _record("P", str(int(SCHEDULING_POLICIES[plan.scheduling_policy]))),
              _record("m", "1" if caught else "0"), _record("p", str(len(plan.pass_fds))),
              _record("B", seccomp.packed(channel=bool(plan.pass_fds),
                                          unix_listener=seccomp.listens_on_unix(plan.listen_fd)))]
    if nofile is not None:
        parts.append(_record("r", f"{nofile[0]} {nofile[1]}"))
    if box.netns:
        parts.append(_record("n", box.netns))
    parts += [_record("G", path) for path in plan.cgroup_procs]
    parts += list(_steps(box.steps))
    message = b"".join(parts)
    return message if len(message) <= MAX_ORDER else None
