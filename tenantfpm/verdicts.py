"""What the master concludes about a worker or a pool, as pure functions of what it saw.

PHP-FPM spreads these over fpm_children.c, fpm_request.c and fpm_process_ctl.c;
here they are one small module so each rule can be read and unit-tested on its
own, and master/pool.py only carries out the verdicts (log, signal, respawn).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

START_GRACE = 5.0  # a worker dying this soon, before ever accepting, failed to start
START_FAILURES = 3  # consecutive start failures that mark the tenant failed
RETRY_FIRST = 1.0  # seconds before the first retry of a failed tenant ...
RETRY_MAX = 60.0  # ... doubling up to this
OOM_ATTRIBUTION_DELAY = 1.0  # seconds a moved oom_kill count waits for a worker's reaping


class Request(Enum):
    """What a running request's age calls for (request_*_timeout, as FPM applies them)."""

    OK = "ok"
    SLOW = "slow"  # past request_slowlog_timeout, not logged yet: write slow.log once
    TERMINATE = "terminate"  # past request_terminate_timeout: kill the worker


def request(took: float, slowlog_timeout: float, terminate_timeout: float,
            slow_logged: bool) -> Request:
    """A timeout of 0 is off; terminating wins over logging."""
    if terminate_timeout and took >= terminate_timeout:
        return Request.TERMINATE
    if slowlog_timeout and not slow_logged and took >= slowlog_timeout:
        return Request.SLOW
    return Request.OK


def timed_start(prev: float | None, prev_claim: float | None, claim: float | None,
                now: float) -> tuple[float, bool]:
    """When the master times a busy worker's request from, and whether it is another
    request than at the last look (`prev`: the start it timed then, None if it saw the
    worker idle; `claim`: the start the worker's scoreboard gives now, None for none or
    garbage; `prev_claim`: the one it gave at the last look).

    The scoreboard is a report, never the authority: a start in the future is not taken
    (it would switch request_terminate_timeout and the slow log off), nor a "new" request
    that began before the one already timed; without a start the master times from the
    first look that found the worker busy."""
    if claim is None or not 0.0 < claim <= now:  # no credible word of its own
        return (now, True) if prev is None else (prev, False)
    if prev is None or (claim != prev_claim and claim > prev):
        return claim, True
    return prev, False


def failed_start(seen_idle: bool, lived: float, fatal: str) -> bool:
    """An unexpected exit counts against the start when the worker never reached accept()
    and died soon, or said why it could not start (a python app's import error)."""
    return not seen_idle and (lived < START_GRACE or bool(fatal))


def gives_up(start_failures: int, exec_error: str, fatal: str) -> bool:
    """Mark the tenant failed: a few start failures in a row, or one that will not heal by
    retrying at once (exec failed, the app cannot be imported)."""
    return start_failures >= START_FAILURES or bool(exec_error) or bool(fatal)


def next_retry_delay(delay: float) -> float:
    """The back-off after another failed retry: doubling, capped."""
    return min(delay * 2, RETRY_MAX)


def overdue(kill_at: float | None, now: float) -> bool:
    """A worker told to stop that has not by its process_control_timeout is killed."""
    return kill_at is not None and now >= kill_at


def over_memory(limit: int | None, rss: int | None, idle: bool, retiring: bool) -> bool:
    """`pm.max_worker_memory`: an idle worker over it is recycled (between requests, never
    in one; an unknown size is no reason)."""
    return bool(limit) and idle and not retiring and rss is not None and rss > (limit or 0)


def crash_storm(crashes: list[float], now: float, threshold: int,
                interval: float) -> bool:
    """FPM's emergency_restart_threshold/interval: record a SIGSEGV/SIGBUS death at `now`
    and say whether `threshold` of them fell within `interval` (then the window starts
    over). A threshold of 0 is off."""
    if threshold <= 0:
        return False
    crashes.append(now)
    while crashes and now - crashes[0] > interval:
        del crashes[0]
    if len(crashes) < threshold:
        return False
    crashes.clear()
    return True


@dataclass
class OomWatch:
    """Telling the OOM killer's kills apart: a worker reaped with SIGKILL while the cgroup's
    oom_kill count moved was killed by it; what moves the count without a worker dying
    killed processes the workers started, told once the workers had their chance."""

    seen: int = 0  # the count already accounted for
    pending_since: float | None = None  # the count moved and no worker has claimed it

    def worker_killed(self, count: int | None) -> bool:
        """A worker died of SIGKILL: was it the OOM killer? (claims one kill)"""
        if count is None or count <= self.seen:
            return False
        self.seen += 1
        self.pending_since = None
        return True

    def others_killed(self, count: int | None, now: float) -> int:
        """Kills of non-workers to report now (0 while waiting for a reaping to claim one)."""
        if count is None or count <= self.seen:
            self.pending_since = None
            return 0
        if self.pending_since is None:
            self.pending_since = now
            return 0
        if now - self.pending_since < OOM_ATTRIBUTION_DELAY:
            return 0
        n, self.seen, self.pending_since = count - self.seen, count, None
        return n


def peak_concurrency(intervals: list[tuple[float, float]]) -> int:
    """The most (start, end) intervals that overlap at one instant: how many workers were
    busy at once, from each one's current or last request as its scoreboard tells. The
    master looks now and then; the requests' own times say what happened in between."""
    # sorted, an end (-1) comes before a start (+1) at the same instant
    edges = sorted([(s, 1) for s, e in intervals if e >= s] +
                   [(e, -1) for s, e in intervals if e >= s])
    peak = busy = 0
    for _, step in edges:
        busy += step
        peak = max(peak, busy)
    return peak
