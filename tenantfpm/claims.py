"""What every running tenant holds alone (socket, user, uid, root, log directory), indexed.

`clashes(t, o)` says why two tenants cannot run side by side. Asking it of every running
tenant made each `add` O(N) and a boot with N tenants O(N^2): with 2,400 tenants the
check was a third of an add's time, and it grew with every tenant. The index finds, with
a few lookups and one bisect, the tenants that could clash with a newcomer (same socket
path or port, same user or uid, a root or log directory on the same path, above or
below); only those are asked `clashes`, so the verdict and its words are the pairwise
function's.
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Iterable
from typing import Any

from tenantfpm.config.rules import ListenAddress
from tenantfpm.config.tenant import Tenant
from tenantfpm.errors import Problem
from tenantfpm.safefs import inside


def _same_listener(a: ListenAddress, b: ListenAddress) -> bool:
    if a.is_unix or b.is_unix:
        return a.is_unix and b.is_unix and os.path.normpath(a.path or "") == os.path.normpath(
            b.path or "")
    wildcard = ("0.0.0.0", "::")
    return a.port == b.port and (a.host == b.host or a.host in wildcard or b.host in wildcard)


def clashes(t: Tenant, o: Tenant) -> list[Problem]:
    """Why `t` cannot run beside `o`."""
    out = []
    who = f"tenant {o.name!r}"
    if _same_listener(t.listen, o.listen):
        out.append(Problem("listen.address", f"{t.listen} is already used by {who}"))
    if o.site.user == t.site.user or o.uid == t.uid:
        out.append(Problem("user", f"user {t.site.user!r} already runs {who}; each tenant "
                                   "needs its own"))
    if inside(t.site.root, o.site.root) or inside(o.site.root, t.site.root):
        out.append(Problem("root", f"{t.site.root} overlaps {who}'s root {o.site.root}"))
    if inside(t.log_dir, o.log_dir) or inside(o.log_dir, t.log_dir):
        out.append(Problem("log.dir", f"{t.log_dir} overlaps {who}'s log directory"))
    if inside(t.log_dir, o.site.root):
        out.append(Problem("log.dir", f"{t.log_dir} is inside {who}'s root"))
    for i, b in enumerate(t.site.isolation.binds):
        if inside(b.source, o.site.root) or inside(o.site.root, b.source):
            out.append(Problem(f"isolation.binds[{i}].source",
                               f"{b.source} overlaps {who}'s root {o.site.root}"))
    return out


# what holds a key: one name (nearly always: a claim is one tenant's), or the set of them
_Held = dict[Any, "str | set[str]"]


def _norm(path: str) -> str:
    """The normalised path; the tenant's own string when it was normal already (one copy
    of each path, not two, for 10,000 tenants)."""
    p = os.path.normpath(path)
    return path if p == path else p


def _put(held: _Held, key: Any, name: str) -> bool:
    """Record `name` holding `key`; True when the key was free."""
    now = held.get(key)
    if now is None:
        held[key] = name
        return True
    if isinstance(now, str):
        if now != name:
            held[key] = {now, name}
    else:
        now.add(name)
    return False


def _drop(held: _Held, key: Any, name: str) -> bool:
    """`name` lets `key` go; True when nobody holds it any more."""
    now = held.get(key)
    if now is None:
        return False
    if isinstance(now, str):
        if now != name:
            return False
        del held[key]
        return True
    now.discard(name)
    if len(now) == 1:
        held[key] = next(iter(now))
    return False


def _names(held: _Held, key: Any) -> set[str]:
    now = held.get(key)
    return set() if now is None else {now} if isinstance(now, str) else set(now)


class _Paths:
    """Normalised paths -> the names holding them, with the paths kept sorted so those
    below a path are one bisect away."""

    def __init__(self) -> None:
        self.holders: _Held = {}
        self.sorted: list[str] = []

    def add(self, path: str, name: str) -> None:
        p = _norm(path)
        if _put(self.holders, p, name):
            bisect.insort(self.sorted, p)

    def discard(self, path: str, name: str) -> None:
        p = _norm(path)
        if _drop(self.holders, p, name):
            del self.sorted[bisect.bisect_left(self.sorted, p)]

    def overlapping(self, path: str) -> set[str]:
        """Holders of `path`, of a directory above it, or of one below it."""
        p = os.path.normpath(path)
        out: set[str] = set()
        up = p
        while True:
            out |= _names(self.holders, up)
            parent = os.path.dirname(up)
            if parent == up:
                break
            up = parent
        prefix = p.rstrip("/") + "/"
        i = bisect.bisect_left(self.sorted, prefix)
        while i < len(self.sorted) and self.sorted[i].startswith(prefix):
            out |= _names(self.holders, self.sorted[i])
            i += 1
        return out


class Claims:
    """The running tenants, indexed by what each must hold alone."""

    def __init__(self, tenants: Iterable[Tenant] = ()) -> None:
        self.tenants: dict[str, Tenant] = {}
        # socket path, TCP port, user name, uid: each its own map, keyed by the tenant's
        # own objects
        self._keys: tuple[_Held, _Held, _Held, _Held] = ({}, {}, {}, {})
        self._roots = _Paths()
        self._logs = _Paths()
        self.max_children = 0  # the held tenants' pm.max_children summed (cgroup weights)
        for t in tenants:
            self.add(t)

    def _exact(self, t: Tenant) -> list[tuple[_Held, Any]]:
        sockets, ports, users, uids = self._keys
        listen = (sockets, _norm(t.listen.path or "")) if t.listen.is_unix else (
            ports, t.listen.port)
        return [listen, (users, t.site.user), (uids, t.uid)]

    def add(self, t: Tenant) -> None:
        """`t` holds its claims (a tenant of the same name is replaced)."""
        old = self.tenants.get(t.name)
        if old is not None:
            self.discard(old)
        self.tenants[t.name] = t
        self.max_children += t.site.pm.max_children
        for held, key in self._exact(t):
            _put(held, key, t.name)
        self._roots.add(t.site.root, t.name)
        self._logs.add(t.log_dir, t.name)

    def discard(self, t: Tenant) -> None:
        """`t` (this configuration of its tenant) holds nothing any more."""
        if self.tenants.get(t.name) is not t:
            return
        del self.tenants[t.name]
        self.max_children -= t.site.pm.max_children
        for held, key in self._exact(t):
            _drop(held, key, t.name)
        self._roots.discard(t.site.root, t.name)
        self._logs.discard(t.log_dir, t.name)

    def candidates(self, t: Tenant) -> list[str]:
        """The tenants (other than `t`'s name) that may clash with `t`, a superset of
        those that do."""
        names: set[str] = set()
        for held, key in self._exact(t):
            names |= _names(held, key)
        for path in [t.site.root, t.log_dir] + [b.source for b in t.site.isolation.binds]:
            names |= self._roots.overlapping(path)
        names |= self._logs.overlapping(t.log_dir)
        names.discard(t.name)
        return sorted(names)

    def clashes(self, t: Tenant) -> list[Problem]:
        """Why `t` cannot run beside the tenants held here (none of its own name)."""
        return [pr for n in self.candidates(t) for pr in clashes(t, self.tenants[n])]
