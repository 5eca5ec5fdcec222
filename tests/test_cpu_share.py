"""The tenants' parent weight: their busy workers, held up for a while, within bounds."""

import random

from tenantfpm.cpu_share import ParentWeight


def test_starts_at_the_floor_and_never_leaves_the_bounds():
    w = ParentWeight(floor=2, ceiling=28, hold=2.0)
    assert w.current == 2
    assert w.observe(0, 0.0) is None  # idle: the host's CPUs' worth
    assert w.observe(40, 0.1) == 28  # more busy than all max_children: capped
    small = ParentWeight(floor=2, ceiling=1)  # one tenant of max_children 1 on 2 CPUs
    assert small.current == 1 and small.observe(5, 0.0) is None


def test_rises_at_once_holds_then_falls():
    w = ParentWeight(floor=2, ceiling=28, hold=2.0)
    assert w.observe(4, 10.0) == 4  # a WordPress tenant's 4 workers busy
    assert w.observe(1, 10.5) is None  # a quiet tick does not lower it ...
    assert w.falls_at() == 12.0
    assert w.refresh(11.9) is None
    assert w.refresh(12.0) == 2  # ... until the 4 is 2 s old (the 1 is bounded by 2)
    assert w.falls_at() is None  # at its floor: nothing to wait for
    assert w.observe(3, 13.0) == 3 and w.observe(6, 13.5) == 6
    assert w.refresh(15.4) is None and w.refresh(15.5) == 2


def test_the_ceiling_moves_with_the_tenants():
    w = ParentWeight(floor=2, ceiling=4)
    assert w.observe(8, 0.0) == 4
    w.ceiling = 12  # a tenant was added
    assert w.refresh(0.5) == 8


def test_is_the_maximum_of_the_window_whatever_the_order():
    rng = random.Random(7)
    w = ParentWeight(floor=1, ceiling=10**6, hold=2.0)
    seen: list[tuple[float, int]] = []
    now = 0.0
    for _ in range(2000):
        now += rng.choice((0.01, 0.1, 0.5, 1.0))
        busy = rng.randrange(0, 50)
        seen.append((now, busy))
        w.observe(busy, now)
        held = [b for t, b in seen if t > now - 2.0]
        assert w.current == max(1, max(held))
