"""What the master sees of one pool's workers (PHP-FPM's scoreboard reading in
fpm_pctl_perform_idle_server_maintenance): each worker's own scoreboard page where its
runtime keeps one, else /proc (idle in accept(), activity, RSS, CPU); the listen queue.

A mixin of master/pool.py's Pool: `self` is the pool.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, cast

from tenantfpm import procfs, verdicts
from tenantfpm.master.pool_parts import PoolParts
from tenantfpm.master.worker import Worker
from tenantfpm.wire import scoreboard

if TYPE_CHECKING:
    from tenantfpm.master.pool import Pool

QUEUE_FRESH = 0.01  # seconds a listen-queue reading may be old for an arriving connection
QUEUE_TICK = 1.0  # ... and for the periodic tick


class Sampling(PoolParts):
    __slots__ = ()  # a mixin of Pool, which has the slots

    def sample(self, fresh: bool = False) -> None:
        """Look at every worker through /proc: idle in accept() or busy, RSS, CPU."""
        now = time.monotonic()
        seen = [(w.seen_idle, w.idle) for w in self.workers.values()]
        for w in self.workers.values():
            if w.pid <= 0:  # forked, but its hello (and so its host pid) not yet in
                continue
            if w.board is not None:
                u = procfs.usage(w.pid)
                if u is not None:
                    w.rss, w.cpu_seconds = u.rss, u.cpu_seconds
                    self._observe_board(w, now)
                continue
            s = procfs.sample(w.pid)
            if s is None:
                continue
            w.rss, w.cpu_seconds = s.rss, s.cpu_seconds
            if not w.seen_idle and (s.idle or procfs.serving_connection(w.pid, w.exe)):
                self._started(w)
            if s.idle:
                if not w.idle or (w.activity >= 0 and s.activity != w.activity):
                    w.last_activity = now  # it did something since the last look
                w.idle = True
                w.busy_since = None
            elif w.seen_idle:
                conn = procfs.connection(w.pid)
                if w.idle or w.busy_since is None or (conn is not None and conn != w.conn):
                    w.busy_since = now  # a new request (or the first look at this one)
                    w.slow_logged = False
                w.conn = conn
                w.idle = False
                w.last_activity = now
            w.activity = s.activity
        if seen != [(w.seen_idle, w.idle) for w in self.workers.values()]:
            self._wake_waiters()  # a worker started serving, or went idle or busy
        active = sum(1 for w in self.workers.values() if w.seen_idle and not w.idle)
        peak, recent = self._board_peaks(now, since=self.sampled_at)
        self.max_active = max(self.max_active, active, peak)
        # what all tenants weigh (cpu_share.py): the requests since the last look, too
        self.host.note_busy(cast("Pool", self), max(active, recent))
        self.sampled_at = now
        # the kernel's word on this pool's socket alone; a connection that just arrived
        # (ondemand) needs a fresh one, the once-a-second tick does not
        q = self.host.listen_queue(cast("Pool", self), QUEUE_FRESH if fresh else QUEUE_TICK)
        if q is not None:
            self.listen_queue = q.pending
            self.listen_queue_len = q.backlog
            self.max_listen_queue = max(self.max_listen_queue or 0, q.pending)

    def _observe_board(self, w: Worker, now: float) -> None:
        """A worker with a scoreboard says what it does, and the master checks what it can:
        idle only when the kernel shows it waiting for work (blocked in accept on its
        socket, or in poll on a kept connection); a request timed from the first look that
        found it busy unless its own start is credible (verdicts.timed_start). Garbage on
        the page is a busy worker that says nothing: its timeouts still run."""
        assert w.board is not None
        slot = w.board.read()
        moved = False  # it served a request since the last look, by its own count
        if slot is not None:
            w.slot = slot
            if not w.seen_idle and slot.state in (scoreboard.IDLE, scoreboard.READING,
                                                  scoreboard.RUNNING):
                self._started(w)
            moved, w.activity = slot.requests != w.activity, slot.requests
        if slot is not None and slot.state == scoreboard.IDLE and procfs.is_waiting(w.pid):
            if not w.idle or moved:
                w.last_activity = now
            w.idle, w.busy_since, w.board_claim = True, None, None
            return
        if slot is None and not w.seen_idle:
            return  # not started yet: nothing to time
        claim = slot.request_start if slot is not None and slot.state == scoreboard.RUNNING \
            else None
        start, new = verdicts.timed_start(None if w.idle else w.busy_since, w.board_claim,
                                          claim, now)
        if new:
            w.slow_logged = False
        w.busy_since, w.board_claim = start, claim
        w.idle, w.last_activity = False, now

    def _board_peaks(self, now: float, since: float) -> tuple[int, int]:
        """Workers busy at once, from their scoreboards' request times (current or last):
        among all of them, and among those that ran after `since`."""
        spans = []
        for w in self.workers.values():
            slot = w.slot if w.board is not None else None
            if slot is None or slot.request_start <= 0:
                continue
            if slot.state in (scoreboard.READING, scoreboard.RUNNING):
                spans.append((slot.request_start, now))
            elif slot.last_duration >= 0:
                spans.append((slot.request_start, slot.request_start + slot.last_duration))
        return (verdicts.peak_concurrency(spans),
                verdicts.peak_concurrency([s for s in spans if s[1] > since]))

    def _started(self, w: Worker) -> None:
        """The worker's runtime is up and taking connections."""
        w.seen_idle = True
        self.start_failures = 0
        self.retry_delay = verdicts.RETRY_FIRST
        if self.state == "starting":
            self._set_state("running")
            self.log.event("notice", "ready: serving")
