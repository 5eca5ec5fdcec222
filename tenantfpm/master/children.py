"""The children of one tenant's pool (PHP-FPM's fpm_children.c): spawn, retire, forget,
and what a child's exit means (a recycling, a start failure, a crash storm, the OOM
killer), each verdict from tenantfpm.verdicts (pure).

A mixin of master/pool.py's Pool: `self` is the pool.
"""

from __future__ import annotations

import os
import random
import signal
import time
from typing import TYPE_CHECKING, cast

from tenantfpm import pm, runtimes, verdicts
from tenantfpm.master.pool_parts import PoolParts
from tenantfpm.master.worker import Worker, describe_exit
from tenantfpm.sandbox.spawn import Plan, spawn
from tenantfpm.wire import scoreboard

if TYPE_CHECKING:
    from tenantfpm.master.pool import Pool

CRASH_SIGNALS = (signal.SIGSEGV, signal.SIGBUS)
# A spawn brings the pool's next look this soon, not at once: the master goes back to
# sleep first. A fork order wakes the zygote on the master's own CPU (a Unix socket's
# wake-up is a "sync" one: the waker is expected to sleep), so every bit of the master's
# work after the order delayed the fork, and an ondemand first request, by 0.3-0.6 ms.
SPAWN_LOOK = 0.01


class Children(PoolParts):
    __slots__ = ()  # a mixin of Pool, which has the slots

    def spawn(self, n: int, look: bool = True) -> None:
        """Start n workers; with `look`, the pool's next look comes soon (SPAWN_LOOK) to
        see them. Not for a plain replacement (on_exit)."""
        if self.sock is None:
            return
        if n and look:
            self.tick_by(time.monotonic() + SPAWN_LOOK)
        for _ in range(n):
            site = self.tenant.site
            limit = site.pm.max_requests
            if limit and site.pm.max_requests_jitter:
                limit += random.randint(0, site.pm.max_requests_jitter)
            runtime = runtimes.of(self.tenant)
            if runtime.zygote:
                w = self.forker.fork(limit)
                if w is None:
                    return
                self.workers[w.pid] = w
                self.output.watch(w)
                continue
            argv, env = runtime.command(self.tenant, limit)
            try:
                ch = runtime.channels(self.tenant)
            except OSError as e:
                self.log.event("error", f"cannot start a worker: {e.strerror or e}")
                return
            try:
                plan = Plan(argv=argv, env=env, cwd=self.tenant.cwd, uid=self.tenant.uid,
                            gid=self.tenant.gid, listen_fd=self.sock.fileno(),
                            open_files=site.limits.open_files,
                            core_dumps=site.limits.core_dumps,
                            catch_output=site.log.catch_workers_output,
                            cgroup_procs=self.cgroup.join_files() if self.cgroup else [],
                            scheduling_policy=site.pm.scheduling_policy,
                            sandbox=self.sandbox, pass_fds=ch.pass_fds)
                child = spawn(plan)
            except OSError as e:
                self.log.event("error", f"cannot start a worker: {e.strerror or e}")
                ch.close()
                return
            ch.close_worker_ends()  # the worker has its copies
            now = time.monotonic()
            w = Worker(pid=child.pid, generation=self.generation, started=now,
                       max_requests=limit, stdout=child.stdout, stderr=child.stderr,
                       errpipe=child.errpipe, last_activity=now, wall_started=time.time(),
                       exe=argv[0], board=ch.board, trace=ch.trace, access=ch.access)
            self.workers[w.pid] = w
            self.host.own_child(w.pid, cast("Pool", self))
            self.output.watch(w)
            self.log.event("notice", f"child {w.pid} started")

    def retire(self, w: Worker, reason: str) -> None:
        """Graceful: php-cgi finishes its request on SIGTERM; escalate after the timeout."""
        if w.retiring is not None:
            return
        w.retiring = reason
        w.kill_at = time.monotonic() + self.host.process_control_timeout
        w.signal(signal.SIGTERM)

    def forget(self, w: Worker) -> str:
        """Stop tracking a worker: its output is drained, its pipes closed."""
        self.workers.pop(w.pid, None)
        self.output.drain(w)
        exec_error = w.exec_error()
        if w.errpipe is not None:
            os.close(w.errpipe)
            w.errpipe = None
        w.close_pidfd()
        if w.board is not None:
            w.slot = w.board.read() or w.slot
            slot = w.slot
            if slot is not None and not slot.fatal and (
                    slot.accepted or slot.requests
                    or slot.state in (scoreboard.IDLE, scoreboard.READING, scoreboard.RUNNING)):
                w.seen_idle = True  # it served (between two looks, if it lived that briefly)
            self.accepted_gone += w.slot.accepted if w.slot else 0
            w.board.close()
            w.board = None
        if w.trace is not None:
            os.close(w.trace)
            w.trace = None
        self._wake_waiters()
        return exec_error

    def on_exit(self, pid: int, status: int) -> None:
        """A worker was reaped: log it, account for it, replace it if the pm wants; then
        the pool's next look comes at once (a stop or reload waits on exits, an ondemand
        pool may owe a waiting connection a worker). Not after a plain replacement: it
        changes no count the pm decides on, the next regular look sees it, and with
        max_requests replacements come tens of times a second under load, where a look
        each (every worker's /proc and scoreboard) was a third of the master's CPU per
        replacement."""
        if not self._bury(pid, status):
            self.wake()

    def _bury(self, pid: int, status: int) -> bool:
        """on_exit's work; True when a worker that served and exited by itself was
        replaced at once, and nothing else needs the pool's attention."""
        if self.forker.owns(pid):
            self.forker.on_exit(pid, status)
            self._wake_waiters()  # a stop waits for the zygotes too
            return False
        w = self.workers.get(pid)
        if w is None:
            return False
        exec_error = self.forget(w)
        now = time.monotonic()
        lived = now - w.started
        text, code, sig = describe_exit(status)
        if sig == signal.SIGKILL and self._oom_killed(pid):
            text = "killed by the OOM killer"
        expected = w.retiring is not None
        if expected and sig in (None, signal.SIGTERM, signal.SIGQUIT):
            # asked to go and gone: how a runtime ends on SIGTERM (php-cgi's 255, say) is
            # not news; a SIGKILL after process_control_timeout or a crash still is
            text = f"retired ({w.retiring})"
        level = "notice" if expected or code == 0 else "warning"
        self.log.event(level, f"child {pid} {text} after {lived:.6f} seconds from start")
        if expected:
            # no spawn here: the tick that retired it (memory, timeout) no longer counted
            # it, and spawned the replacement the pm wanted in the same pass
            if w.retiring in ("memory", "timeout"):
                self.worker_restarts += 1
            return False
        # unexpected exit
        fatal = w.slot.fatal if w.slot else ""  # a python app that could not be loaded
        failed = verdicts.failed_start(w.seen_idle, lived, fatal)
        if failed:
            reason = (exec_error
                      or (f"app {self.tenant.site.runtime.app}: {fatal}" if fatal else "")
                      or (f"worker {text}: {w.last_output}" if w.last_output
                          else f"worker {text} before accepting connections"))
            self.log.event("error", f"child {pid} failed to start: {reason}")
            if self.start_failed(reason, exec_error, fatal):
                return False
        if sig in CRASH_SIGNALS and self._crash_storm(now):
            return False
        if pm.respawn_on_exit(self.pm) and self._serving():
            self.worker_restarts += 1
            self.spawn(1, look=False)  # on_exit looks at once unless this is plain
            return not failed and sig is None  # it served, then exited (max_requests)
        return False

    def start_failed(self, reason: str, exec_error: str = "", fatal: str = "") -> bool:
        """A worker or zygote died before serving; True when the pool gives up (failed)."""
        self.start_failures += 1
        if verdicts.gives_up(self.start_failures, exec_error, fatal):
            self._fail(reason)
            return True
        return False

    def _oom_limit(self) -> str:
        limit = self.tenant.site.limits.memory
        return f"{limit >> 20}M" if limit else "(none: the host's)"

    def _oom_killed(self, pid: int) -> bool:
        """The oom_kill count moved since the last look: the OOM killer sent that SIGKILL."""
        if self.cgroup is None or not self.oom.worker_killed(self.cgroup.oom_kills()):
            return False
        self.log.event("error", f"worker {pid} killed by the OOM killer: tenant memory limit "
                                f"{self._oom_limit()} reached")
        return True

    def _watch_oom(self, now: float) -> None:
        """OOM kills of processes that are not workers (what PHP started), once their
        worker had its chance to be reaped first."""
        if self.cgroup is None or (not self.workers and self.oom.pending_since is None):
            return  # nothing runs in the cgroup: nothing to kill
        n = self.oom.others_killed(self.cgroup.oom_kills(), now)
        if n:
            self.log.event("error", f"the OOM killer killed {n} process(es) started by the "
                                    f"tenant's workers: tenant memory limit {self._oom_limit()} "
                                    "reached")

    def _crash_storm(self, now: float) -> bool:
        """emergency_restart_threshold SIGSEGV/SIGBUS within the interval: restart this pool."""
        host = self.host
        if not verdicts.crash_storm(self.crashes, now, host.emergency_restart_threshold,
                                    host.emergency_restart_interval):
            return False
        msg = (f"{host.emergency_restart_threshold} children have received SIGSEGV or SIGBUS "
               f"within {host.emergency_restart_interval:g} seconds, restarting the pool")
        self.log.event("alert", msg)
        host.log("alert", f"[pool {self.name}] {msg}")
        host.loop.create_task(self.reload(self.tenant))
        return True

    def _serving(self) -> bool:
        return self.state in ("starting", "running", "reloading")
