"""The master's heap over many tenants: what the garbage collector scans, and what glibc keeps.

Why: with 10,000 tenants the master's heap holds on the order of a million Python
objects that live as long as their tenants. CPython's collector scans every one of
them in each full collection, and it starts one whenever a quarter more objects have
reached its oldest generation than it held after the last: adds do that, and so does
a long stream of cold starts, each leaving a few hundred objects that live for
seconds. While 10,000 tenants went in, those collections took 73-292 ms each, and
the master's loop did nothing else meanwhile: no ondemand wake, no spawn, no control
call (docs/performance.md, "where its time goes").

What: after every change of tenants, what the change left unreachable is collected
(a pass over what came since the last change only), and what lives is frozen
(`gc.freeze()`): the collector's passes never walk it again. A frozen object is still
freed by its reference count; what it cannot be is found as part of a cycle that
nothing else holds, such as a removed tenant's pool and the objects pointing back at
it, or a worker's objects that were alive at a change and ended later. Those wait for
a full pass over everything, unfrozen first, which runs once the tenants gone since
the last one are a quarter of those left, or the frozen objects a quarter more than
that pass left (CPython's own rule for its oldest generation: the work per change
stays constant, and at most that share of the heap waits), at a moment when changes
have paused for QUIET_AFTER seconds. The first change (the master's start) finds
nothing frozen, so its collection is such a pass already and counts as one.
Then the C heap is trimmed too: glibc keeps the free pages an add's parsing leaves
between the tenants' objects (3 MB of 65 at 1,200 tenants added through the API).
"""
from __future__ import annotations

import asyncio
import asyncio.selector_events
import gc
import sys
from collections.abc import Callable
from typing import Any

QUIET_AFTER = 5.0  # seconds without a change of tenants before Heap._quiet()
FULL_PASS_SHARE = 4  # a full pass once the tenants gone, or the frozen objects added, are 1/4


def full_pass_due(gone: int, live: int, frozen: int, frozen_after_pass: int) -> bool:
    """Whether what may lie dead among the frozen objects is worth a pass over all of them:
    removed (or replaced) tenants' cycles, or objects frozen since the last pass."""
    return ((gone > 0 and gone * FULL_PASS_SHARE >= live)
            or frozen * FULL_PASS_SHARE >= frozen_after_pass * (FULL_PASS_SHARE + 1))


def release_transport_cycles() -> None:
    """Have every closed socket transport freed by its reference count (once per process).

    Why: on Python 3.11 (Debian 12's) a socket transport keeps a bound method of
    itself (`_read_ready_cb`), a cycle that only the collector frees (CPython
    gh-100348, fixed in 3.12). Each control-API call brings one. The call's change
    (an add, a remove) freezes the transports of the calls in flight, its own among
    them, so each waits, frozen, for the next full pass: 1,506 of them after 1,500
    adds here, and the master's RSS at 10,004 tenants read 124 MB, against 115-118
    before the heap was frozen and 115.5 with this (docs/performance.md). This is
    3.12's fix done from outside: drop the method once the connection is gone, when
    the transport reads no more."""
    cls: Any = asyncio.selector_events._SelectorSocketTransport  # type: ignore[attr-defined]
    if sys.version_info >= (3, 12) or getattr(cls, "_tenantfpm_releases", False):
        return
    lost = cls._call_connection_lost

    def _call_connection_lost(self: Any, exc: BaseException | None) -> None:
        try:
            lost(self, exc)
        finally:
            self._read_ready_cb = None

    cls._call_connection_lost = _call_connection_lost
    cls._tenantfpm_releases = True


class Heap:
    def __init__(self, call_later: Callable[[float, Callable[[], None]], asyncio.TimerHandle],
                 trim: Callable[[], None]) -> None:
        self._call_later = call_later
        self._trim = trim
        self._pending: asyncio.TimerHandle | None = None
        self.gone = 0  # tenants removed or replaced since the last full pass
        self.live = 0  # tenants at the last change
        self.frozen_after_pass = 0  # objects frozen by the last full pass
        self._first = True  # no change yet: nothing is frozen

    def changed(self, live: int, gone: int = 0) -> None:
        """Tenants came, changed or went (`gone` of them removed or replaced), `live` are left."""
        gc.collect()  # only what is not frozen: the garbage since the last change
        gc.freeze()
        if self._first:  # nothing was frozen: that was a full pass (the master's start)
            self._first = False
            self.frozen_after_pass = gc.get_freeze_count()
        self.gone += gone
        self.live = live
        if self._pending is not None:
            self._pending.cancel()
        self._pending = self._call_later(QUIET_AFTER, self._quiet)

    def _quiet(self) -> None:
        self._pending = None
        if full_pass_due(self.gone, self.live, gc.get_freeze_count(), self.frozen_after_pass):
            gc.unfreeze()
            gc.collect()
            gc.freeze()
            self.gone = 0
            self.frozen_after_pass = gc.get_freeze_count()
        self._trim()

    def close(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None
