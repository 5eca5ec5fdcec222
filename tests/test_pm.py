"""The pm policies without processes: PHP-FPM's decisions on made-up pool states."""

from tenantfpm import pm
from tenantfpm.config.model import PM


def workers(idle=0, busy=0, starting=0, now=100.0, idle_age=0.0):
    out, pid = [], 1
    for _ in range(idle):
        out.append(pm.WorkerView(pid, True, False, now - idle_age - pid))
        pid += 1
    for _ in range(busy):
        out.append(pm.WorkerView(pid, False, False, now))
        pid += 1
    for _ in range(starting):
        out.append(pm.WorkerView(pid, False, True, now))
        pid += 1
    return out


def test_initial_counts():
    assert pm.initial_workers(PM(mode="static", max_children=7)) == 7
    assert pm.initial_workers(PM(mode="dynamic", max_children=10, min_spare_servers=2,
                                 max_spare_servers=6)) == 4  # FPM default: 2 + (6-2)/2
    assert pm.initial_workers(PM(mode="ondemand")) == 0


def test_static_refills_to_max_children():
    d = pm.tick(PM(mode="static", max_children=4), workers(idle=1, busy=1), pm.PoolState(), 100)
    assert d.spawn == 2 and d.retire == []


def test_static_respects_global_process_max():
    d = pm.tick(PM(mode="static", max_children=4), [], pm.PoolState(), 100, capacity=1)
    assert d.spawn == 1


def test_dynamic_spawn_rate_doubles_up_to_max_spawn_rate():
    conf = PM(mode="dynamic", max_children=50, min_spare_servers=40, max_spare_servers=45,
              start_servers=40, max_spawn_rate=8)
    state = pm.PoolState()
    spawned = []
    for _ in range(5):
        spawned.append(pm.tick(conf, workers(busy=1), state, 100).spawn)
    assert spawned == [1, 2, 4, 8, 8]


def test_dynamic_rate_resets_when_enough_spares():
    conf = PM(mode="dynamic", max_children=10, min_spare_servers=1, max_spare_servers=3)
    state = pm.PoolState(spawn_rate=8)
    d = pm.tick(conf, workers(idle=2), state, 100)
    assert d.spawn == 0 and state.spawn_rate == 1


def test_dynamic_retires_one_longest_idle_per_tick():
    conf = PM(mode="dynamic", max_children=10, min_spare_servers=1, max_spare_servers=2)
    ws = workers(idle=5)
    d = pm.tick(conf, ws, pm.PoolState(), 100)
    oldest = min(ws, key=lambda w: w.last_activity)
    assert d.retire == [oldest.pid]


def test_dynamic_starting_workers_count_as_spare():
    conf = PM(mode="dynamic", max_children=10, min_spare_servers=2, max_spare_servers=4)
    d = pm.tick(conf, workers(busy=3, starting=2), pm.PoolState(), 100)
    assert d.spawn == 0


def test_max_children_reached_is_reported_once_per_episode():
    conf = PM(mode="dynamic", max_children=2, min_spare_servers=1, max_spare_servers=2,
              start_servers=1)
    state = pm.PoolState()
    first = pm.tick(conf, workers(busy=2), state, 100)
    second = pm.tick(conf, workers(busy=2), state, 101)
    assert first.max_children_reached and "pm.max_children" in first.message
    assert not second.max_children_reached
    pm.tick(conf, workers(busy=1, idle=1), state, 102)  # pressure gone
    assert pm.tick(conf, workers(busy=2), state, 103).max_children_reached


def test_ondemand_spawns_for_waiting_connections_only():
    conf = PM(mode="ondemand", max_children=5)
    state = pm.PoolState()
    assert pm.on_connection(conf, [], state, pending=3).spawn == 3
    assert pm.on_connection(conf, workers(idle=1), state, pending=1).spawn == 0
    assert pm.on_connection(conf, workers(starting=1), state, pending=2).spawn == 1
    full = pm.on_connection(conf, workers(busy=5), state, pending=1)
    assert full.spawn == 0 and full.max_children_reached


def test_ondemand_retires_workers_idle_past_timeout():
    conf = PM(mode="ondemand", max_children=5, process_idle_timeout=10)
    fresh = pm.WorkerView(1, True, False, 95.0)
    stale = pm.WorkerView(2, True, False, 80.0)
    busy = pm.WorkerView(3, False, False, 50.0)
    d = pm.tick(conf, [fresh, stale, busy], pm.PoolState(), 100.0)
    assert d.retire == [2] and d.spawn == 0


def test_respawn_policy_and_tick_interval():
    assert pm.respawn_on_exit(PM(mode="static"))
    assert not pm.respawn_on_exit(PM(mode="ondemand"))
    assert pm.tick_interval(PM(mode="dynamic"), pm.PoolState(spawn_rate=4)) == 0.25
    assert pm.tick_interval(PM(mode="dynamic"), pm.PoolState()) == 1.0


def test_a_spare_only_where_a_fork_answers_a_waiting_request():
    assert pm.spare_delay_ms(PM(mode="static")) is None
    assert pm.spare_delay_ms(PM(mode="static", max_requests=500)) is None
    assert pm.spare_delay_ms(PM(mode="ondemand")) == pm.spare_delay_ms(PM()) > 0


def test_only_ondemand_waits_on_its_socket_and_rests_with_nothing_running():
    ondemand, dynamic = PM(mode="ondemand", zygote_idle_timeout=30), PM(mode="dynamic")
    assert pm.wakes_on_connection(ondemand) and not pm.wakes_on_connection(dynamic)
    assert pm.dormant(ondemand, running=True, has_processes=False, watching_socket=True)
    # a worker or zygote left, not running (starting, failed), or the socket not watched:
    # the timer still has something to look at
    assert not pm.dormant(ondemand, True, True, True)
    assert not pm.dormant(ondemand, False, False, True)
    assert not pm.dormant(ondemand, True, False, False)
    assert not pm.dormant(dynamic, True, False, True)
    assert pm.zygote_idle_timeout(ondemand) == 30
    assert pm.zygote_idle_timeout(PM(mode="static", zygote_idle_timeout=30)) == 0.0
