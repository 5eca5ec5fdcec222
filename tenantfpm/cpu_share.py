"""What all tenants together weigh against the host's other processes (the web server,
the database), in processes' worth: as many as their workers that are busy.

Each tenant's cgroup weighs its `max_children` inside the tenants' parent; the parent
competes with the root group's processes as one entity. Weighing every tenant's
`max_children` there, busy or not, made the parent outweigh MariaDB 28 to 1 in the
benchmark while 4 workers ran, and WordPress, which waits on the database some 20
times a request, took 1.26x FPM's p99; with the parent at the 4 busy workers' weight,
0.93x (docs/performance.md, "WordPress's p99"). PHP-FPM's workers weigh one process
each in the root group, busy or idle, but an idle one asks for no CPU, so what counts
against the database is the busy ones: this is that.

The pools' samples (each tick, and from their scoreboards' request times: every
request that ran since the last look) give the busy count. A higher count is kept for
HOLD seconds, so the weight does not follow every request; it never goes under two
processes per CPU of the host (a burst's first tick is not starved) nor over every
tenant's max_children.
Pure: the master writes what this returns (cgroups.Driver.set_parent_weight).
"""

from __future__ import annotations

from collections import deque

HOLD = 2.0  # seconds a busy count holds the weight up
# the weight never goes under this many processes per CPU: a burst runs on the idle weight
# until its pool's next tick (up to a second), and at one process per CPU include.php's
# p99 read 1.03-1.68x FPM's in that window; two keep every CPU fed with one waiting
FLOOR_PER_CPU = 2


class ParentWeight:
    """The busy counts of the last HOLD seconds, as a sliding-window maximum (each
    observation is O(1), amortized: 10,000 tenants' ticks add no quadratic cost)."""

    def __init__(self, floor: int, ceiling: int, hold: float = HOLD) -> None:
        self.floor = max(1, floor)
        self.ceiling = max(1, ceiling)
        self.hold = hold
        self._window: deque[tuple[float, int]] = deque()  # counts decreasing from the left
        self.current = self._bounded(0)

    def _bounded(self, busy: int) -> int:
        return min(self.ceiling, max(self.floor, busy))

    def _expire(self, now: float) -> None:
        while self._window and self._window[0][0] <= now - self.hold:
            self._window.popleft()

    def observe(self, busy: int, now: float) -> int | None:
        """A new total of busy workers: the weight to write, or None if it stays."""
        while self._window and self._window[-1][1] <= busy:
            self._window.pop()
        self._window.append((now, busy))
        return self.refresh(now)

    def refresh(self, now: float) -> int | None:
        """The weight now that older counts have expired (or the ceiling moved); None if
        it stays."""
        self._expire(now)
        want = self._bounded(self._window[0][1] if self._window else 0)
        if want == self.current:
            return None
        self.current = want
        return want

    def falls_at(self) -> float | None:
        """When the weight may next go down (the highest held count expires), or None
        when it is at its floor already."""
        if self.current <= self.floor or not self._window:
            return None
        return self._window[0][0] + self.hold
