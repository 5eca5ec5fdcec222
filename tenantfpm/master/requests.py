"""A running request's verdicts carried out: slow.log entries and termination.

PHP-FPM's fpm_request.c and fpm_php_trace.c seams. What to do is decided by
verdicts.request() (pure); this module reads what the request is (the worker's
scoreboard, its memory, or a python worker's own traceback), writes slow.log
and the warnings, and kills a request past request_terminate_timeout. It also
says when the pool must look again so that both limits act on time.
"""

from __future__ import annotations

import os
import signal
from typing import TYPE_CHECKING

from tenantfpm import inspect, verdicts
from tenantfpm.master.trace import traceback_frames
from tenantfpm.master.worker import Worker
from tenantfpm.wire.fds import TRACE_SIGNAL

if TYPE_CHECKING:
    from tenantfpm.master.pool import Pool

TRACE_MAX = 256 << 10  # bytes of a python worker's trace pipe read for one slow.log entry
TRACE_WAIT = 0.2  # seconds a python worker gets to write its traceback for the slow log


def next_deadline(pool: Pool, now: float) -> float | None:
    """When the next tick must come for request_slowlog_timeout and
    request_terminate_timeout to act on time: at the earliest deadline of a running
    request, and within the shortest timeout for a request not seen yet (workers with a
    scoreboard give the exact start, so the verdict lands within the loop's latency)."""
    limits = pool.tenant.site.limits
    timeouts = [t for t in (limits.request_slowlog_timeout,
                            limits.request_terminate_timeout) if t]
    if not timeouts or not pool.workers:
        return None
    soonest = now + min(timeouts)
    for w in pool.workers.values():
        if w.idle or w.busy_since is None or w.retiring is not None:
            continue
        for t, done in ((limits.request_slowlog_timeout, w.slow_logged),
                        (limits.request_terminate_timeout, False)):
            if t and not done and w.busy_since + t > now:
                soonest = min(soonest, w.busy_since + t)
    return soonest


def check(pool: Pool, w: Worker, now: float) -> None:
    """request_slowlog_timeout and request_terminate_timeout, as PHP-FPM applies them."""
    if w.retiring is not None or w.idle or w.busy_since is None:
        return
    limits = pool.tenant.site.limits
    took = now - w.busy_since
    verdict = verdicts.request(took, limits.request_slowlog_timeout,
                               limits.request_terminate_timeout, w.slow_logged)
    if verdict is verdicts.Request.OK:
        return
    terminate, slow = verdict is verdicts.Request.TERMINATE, verdict is verdicts.Request.SLOW
    python = w.trace is not None  # the worker writes its own stack
    state: inspect.PhpState | None = None
    why_not = ""
    if not python:
        try:
            state = pool.inspect(w, limits.slowlog_trace_depth if slow else 0)
        except inspect.Unavailable as e:
            why_not = str(e)
    # the request: from the worker's scoreboard (php, python), or from php-cgi's memory
    req = w.slot if w.slot is not None else state
    what = (f"script '{req.script}' (request: \"{req.method} {req.uri}\")"
            if req else "script unknown")
    if terminate:
        pool.log.event("warning", f"child {w.pid}, {what} execution timed out "
                                  f"({took:.6f} sec), terminating")
        pool.terminated_requests += 1
        w.retiring = "timeout"  # workers finish their request despite SIGTERM: SIGKILL
        w.signal(signal.SIGKILL)
        return
    w.slow_logged = True
    pool.slow_requests += 1
    pool.log.event("warning", f"child {w.pid}, {what} executing too slow "
                              f"({took:.6f} sec), logging")
    if python:  # the worker writes its own stack (faulthandler on TRACE_SIGNAL)
        read_trace(w)  # anything stale
        w.signal(TRACE_SIGNAL)
        pool.host.loop.call_later(TRACE_WAIT, write_trace, pool, w,
                                  req.script if req else None)
        return
    script = (state.script if state else None) or (req.script if req else None)
    pool.log.slow(w.pid, script,
                  [f.slowlog() for f in state.frames] if state else None, why_not)


def read_trace(w: Worker) -> str:
    """What the worker wrote on its trace pipe, at most TRACE_MAX: a faulthandler dump is
    a few kB, and the pipe is the tenant's (a flood of it must not hold the loop or grow
    the master). A worker that wrote more loses its pipe: its later slow requests are
    logged without a stack."""
    chunks: list[bytes] = []
    got = 0
    while w.trace is not None and got < TRACE_MAX:
        try:
            data = os.read(w.trace, min(65536, TRACE_MAX - got))
        except (BlockingIOError, OSError):
            break
        if not data:
            break
        chunks.append(data)
        got += len(data)
    if got >= TRACE_MAX and w.trace is not None:
        os.close(w.trace)
        w.trace = None
    return b"".join(chunks).decode(errors="replace")


def write_trace(pool: Pool, w: Worker, script: str | None) -> None:
    text = read_trace(w)
    frames = traceback_frames(text, pool.tenant.site.limits.slowlog_trace_depth)
    if frames:
        why_not = ""
    elif not text:
        why_not = f"the worker wrote no traceback within {TRACE_WAIT:g}s"
    else:  # the request ended between the signal and the dump
        why_not = "no application frames on the stack"
    pool.log.slow(w.pid, script, frames, why_not)
