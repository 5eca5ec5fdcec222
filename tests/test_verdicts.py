"""The master's verdicts (verdicts.py): pure rules, checked without a process in sight."""


from tenantfpm import verdicts
from tenantfpm.verdicts import OomWatch, Request


def test_request_timeouts_as_fpm_applies_them():
    assert verdicts.request(1.9, 2, 5, False) is Request.OK
    assert verdicts.request(2.0, 2, 5, False) is Request.SLOW
    assert verdicts.request(3.0, 2, 5, True) is Request.OK  # logged once per request
    assert verdicts.request(5.0, 2, 5, True) is Request.TERMINATE
    assert verdicts.request(9.0, 2, 5, False) is Request.TERMINATE  # terminating wins
    assert verdicts.request(1e6, 0, 0, False) is Request.OK  # 0 = off


def test_start_failures_and_back_off():
    assert verdicts.failed_start(seen_idle=False, lived=1.0, fatal="")
    assert not verdicts.failed_start(seen_idle=False, lived=60.0, fatal="")
    assert verdicts.failed_start(seen_idle=False, lived=60.0, fatal="ImportError: x")
    assert not verdicts.failed_start(seen_idle=True, lived=0.1, fatal="")
    assert not verdicts.gives_up(2, "", "")
    assert verdicts.gives_up(3, "", "")
    assert verdicts.gives_up(1, "exec: no such file", "")
    delays = [verdicts.RETRY_FIRST]
    for _ in range(8):
        delays.append(verdicts.next_retry_delay(delays[-1]))
    assert delays[:4] == [1, 2, 4, 8] and delays[-1] == verdicts.RETRY_MAX


def test_crash_storm_counts_within_the_window_and_starts_over():
    crashes: list[float] = []
    assert not verdicts.crash_storm(crashes, 0.0, 3, 10.0)
    assert not verdicts.crash_storm(crashes, 5.0, 3, 10.0)
    assert not verdicts.crash_storm(crashes, 11.0, 3, 10.0)  # the one at 0 fell out
    assert verdicts.crash_storm(crashes, 12.0, 3, 10.0)
    assert not crashes  # the window starts over after a restart
    assert not verdicts.crash_storm([], 0.0, 0, 10.0)  # 0 = off


def test_oom_kills_of_workers_and_of_what_they_started():
    oom = OomWatch(seen=4)  # kills from before this master are not ours
    assert not oom.worker_killed(4)  # a SIGKILL with no count moved: not the OOM killer
    assert oom.worker_killed(5)
    assert oom.others_killed(5, 0.0) == 0
    assert oom.others_killed(7, 1.0) == 0  # moved: wait for a reaping to claim it
    assert oom.others_killed(7, 1.5) == 0
    assert oom.others_killed(7, 2.0) == 2  # unclaimed after the delay: processes it started
    assert oom.others_killed(None, 3.0) == 0  # no cgroup figure


def test_peak_concurrency_counts_overlaps_only() -> None:
    assert verdicts.peak_concurrency([]) == 0
    assert verdicts.peak_concurrency([(0.0, 1.0), (2.0, 3.0)]) == 1  # one after the other
    assert verdicts.peak_concurrency([(0.0, 1.0), (0.5, 3.0), (0.9, 0.95)]) == 3
    assert verdicts.peak_concurrency([(0.0, 1.0), (1.0, 2.0)]) == 1  # one ends as one starts
    assert verdicts.peak_concurrency([(5.0, 1.0)]) == 0  # a page's nonsense counts nothing


def test_a_request_is_timed_from_what_the_master_saw_not_a_forged_start():
    from tenantfpm.verdicts import timed_start
    now = 1000.0
    # first look at a busy worker: its own start when credible, else now
    assert timed_start(None, None, 990.0, now) == (990.0, True)
    assert timed_start(None, None, 9e7, now) == (now, True)  # a start in the future
    assert timed_start(None, None, None, now) == (now, True)  # garbage: no word
    assert timed_start(None, None, -5.0, now) == (now, True)
    # later looks: the same request, whatever the page says now
    assert timed_start(990.0, 990.0, 990.0, now) == (990.0, False)
    assert timed_start(990.0, 990.0, 9e7, now) == (990.0, False)  # forged afterwards
    assert timed_start(990.0, 990.0, None, now) == (990.0, False)  # garbage afterwards
    assert timed_start(990.0, 990.0, 900.0, now) == (990.0, False)  # before the one timed
    # a new request since the last look (its start after the one timed, not in the future)
    assert timed_start(990.0, 990.0, 999.5, now) == (999.5, True)


def test_a_worker_past_its_stop_deadline_is_killed():
    assert not verdicts.overdue(None, 100.0)
    assert not verdicts.overdue(100.5, 100.0)
    assert verdicts.overdue(100.0, 100.0)


def test_an_idle_worker_over_max_worker_memory_is_recycled_and_no_other():
    mb = 1 << 20
    assert verdicts.over_memory(64 * mb, 65 * mb, idle=True, retiring=False)
    assert not verdicts.over_memory(64 * mb, 65 * mb, idle=False, retiring=False)  # in a request
    assert not verdicts.over_memory(64 * mb, 65 * mb, idle=True, retiring=True)  # going already
    assert not verdicts.over_memory(64 * mb, None, idle=True, retiring=False)  # size unknown
    assert not verdicts.over_memory(64 * mb, 64 * mb, idle=True, retiring=False)
    assert not verdicts.over_memory(None, 65 * mb, idle=True, retiring=False)  # no limit
    assert not verdicts.over_memory(0, 65 * mb, idle=True, retiring=False)
