"""Process-manager policies: static, dynamic, ondemand as pure decisions.

A function of what the master observed (workers idle or busy per the kernel,
pending connections, the clock) to what it should do. Modelled on PHP-FPM's
fpm_pctl_perform_idle_server_maintenance() and fpm_pctl_on_socket_accept(), so
the pools behave as FPM users expect; no processes are touched here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tenantfpm.config.model import PM


@dataclass(frozen=True)
class WorkerView:
    pid: int
    idle: bool  # blocked in accept() on the pool socket, per /proc
    starting: bool  # spawned, not yet seen in accept(): about to be idle
    last_activity: float  # when it was last seen doing something


@dataclass
class PoolState:
    """What the policy remembers between ticks (FPM keeps these in the pool struct)."""

    spawn_rate: int = 1
    warned_max_children: bool = False


@dataclass
class Decision:
    spawn: int = 0
    retire: list[int] = field(default_factory=list)  # graceful: SIGTERM
    max_children_reached: bool = False  # a new event: log and count
    message: str | None = None  # a warning for the tenant's log


def _reached(state: PoolState, d: Decision, max_children: int) -> Decision:
    if not state.warned_max_children:
        state.warned_max_children = True
        d.max_children_reached = True
        d.message = ("server reached pm.max_children setting "
                     f"({max_children}), consider raising it")
    return d


def tick(pm: PM, workers: list[WorkerView], state: PoolState, now: float,
         pending: int = 0, capacity: int | None = None) -> Decision:
    """The periodic maintenance pass; `capacity` caps spawns by the global process_max."""
    live = len(workers)
    idle = [w for w in workers if w.idle or w.starting]
    room = pm.max_children - live
    if capacity is not None:
        room = min(room, capacity)
    d = Decision()
    if pm.mode == "static":
        d.spawn = max(0, room)
        return d
    if pm.mode == "ondemand":
        expired = [w.pid for w in workers
                   if w.idle and not w.starting
                   and now - w.last_activity > pm.process_idle_timeout]
        d.retire = expired
        if pending > len(idle):
            return on_connection(pm, workers, state, pending, capacity)
        if live < pm.max_children:
            state.warned_max_children = False
        return d
    # dynamic
    if len(idle) > pm.max_spare_servers:
        # one per pass, the one idle longest, as FPM does
        candidates = sorted((w for w in workers if w.idle and not w.starting),
                            key=lambda w: w.last_activity)
        if candidates:
            d.retire = [candidates[0].pid]
        state.spawn_rate = 1
        state.warned_max_children = False
        return d
    if len(idle) < pm.min_spare_servers:
        if room <= 0:
            return _reached(state, d, pm.max_children)
        state.warned_max_children = False
        n = min(pm.min_spare_servers - len(idle), state.spawn_rate, room)
        d.spawn = n
        if state.spawn_rate >= 8:
            d.message = (f"seems busy (you may need to increase pm.start_servers, or "
                         f"pm.min/max_spare_servers), spawning {n} children, there are "
                         f"{len(idle)} idle, and {live} total children")
        if state.spawn_rate < pm.max_spawn_rate:
            state.spawn_rate = min(state.spawn_rate * 2, pm.max_spawn_rate)
        return d
    # enough spare workers again: a later starvation is a new episode
    state.spawn_rate = 1
    state.warned_max_children = False
    return d


def on_connection(pm: PM, workers: list[WorkerView], state: PoolState, pending: int,
                  capacity: int | None = None) -> Decision:
    """ondemand: connections wait and nobody is free to accept them."""
    d = Decision()
    free = sum(1 for w in workers if w.idle or w.starting)
    want = max(0, pending - free)
    if want == 0:
        return d
    room = pm.max_children - len(workers)
    if capacity is not None:
        room = min(room, capacity)
    if room <= 0:
        return _reached(state, d, pm.max_children)
    d.spawn = min(want, room)
    return d


def initial_workers(pm: PM) -> int:
    """How many workers a pool starts with."""
    if pm.mode == "static":
        return pm.max_children
    if pm.mode == "dynamic":
        return pm.effective_start_servers
    return 0


def wakes_on_connection(pm: PM) -> bool:
    """Whether a connection waiting on the socket starts workers (ondemand: the master
    watches the socket; FPM's fpm_pctl_on_socket_accept), rather than the timer alone."""
    return pm.mode == "ondemand"


def dormant(pm: PM, running: bool, has_processes: bool, watching_socket: bool) -> bool:
    """Whether a pool needs no timer: an ondemand pool with nothing running waits for its
    socket, so 10,000 idle tenants cost the master nothing between their requests."""
    return wakes_on_connection(pm) and running and not has_processes and watching_socket


def zygote_idle_timeout(pm: PM) -> float:
    """Seconds a zygote with no worker lives on before it goes (the next request starts
    PHP again); 0: it stays. Only ondemand pools let theirs go: the others keep workers."""
    return pm.zygote_idle_timeout if pm.mode == "ondemand" else 0.0


def respawn_on_exit(pm: PM) -> bool:
    """Whether an unexpected exit (crash, max_requests) is replaced at once (FPM: not ondemand)."""
    return pm.mode != "ondemand"


SPARE_DELAY_MS = 100  # a zygote forks its spare after this long without an order


def spare_delay_ms(pm: PM) -> int | None:
    """How long a zygote waits without an order before forking a spare worker ahead, or
    None for no spare. Where a fork answers a waiting request (ondemand's first request,
    dynamic's scale-up) the spare takes the fork off its path; a static pool forks only
    to replace a worker while the others serve, and keeps no idle process for it. The
    wait keeps the spare's fork from competing with the request that took the last one."""
    return None if pm.mode == "static" else SPARE_DELAY_MS


def tick_interval(pm: PM, state: PoolState) -> float:
    """FPM shortens the maintenance period while it is ramping up the spawn rate."""
    if pm.mode == "dynamic" and state.spawn_rate > 1:
        return max(0.05, 1.0 / state.spawn_rate)
    return 1.0
