"""The master's heap housekeeping (tenantfpm/master/heap.py): a change of tenants freezes what
lives, so collections skip it; what removed tenants held in cycles, which a frozen heap alone
would keep forever, is freed by a full pass once enough of them have gone."""
from __future__ import annotations

import asyncio
import gc
import socket
import weakref
from collections.abc import Callable, Iterator

import pytest

from tenantfpm.master import heap


class Timers:
    """call_later without a loop: what is pending, and whether it was cancelled."""

    def __init__(self) -> None:
        self.made: list[Timer] = []

    def call_later(self, delay: float, fn: Callable[[], None]) -> Timer:
        t = Timer(delay, fn)
        self.made.append(t)
        return t

    def pending(self) -> list[Timer]:
        return [t for t in self.made if not t.cancelled]


class Timer:
    def __init__(self, delay: float, fn: Callable[[], None]) -> None:
        self.delay, self.fn, self.cancelled = delay, fn, False

    def cancel(self) -> None:
        self.cancelled = True


class Pool:
    """A stand-in for a tenant's pool: it and its parts point at each other, as Pool and its
    Forker, log and sandbox do."""

    def __init__(self) -> None:
        self.part = Part(self)


class Part:
    def __init__(self, pool: Pool) -> None:
        self.pool = pool


@pytest.fixture
def fresh_gc() -> Iterator[None]:
    gc.collect()
    yield
    gc.unfreeze()  # no other test runs with a frozen heap


@pytest.fixture
def timers() -> Timers:
    return Timers()


@pytest.fixture
def trims() -> list[int]:
    return []


@pytest.fixture
def h(timers: Timers, trims: list[int]) -> heap.Heap:
    return heap.Heap(timers.call_later, lambda: trims.append(1))  # type: ignore[arg-type]


def test_a_change_freezes_what_lives_so_collections_skip_it(fresh_gc: None, h: heap.Heap) -> None:
    tenants = [Pool() for _ in range(1000)]
    h.changed(live=1000)
    assert gc.get_freeze_count() >= 2000
    walked = {id(o) for g in range(3) for o in gc.get_objects(generation=g)}
    assert not any(id(t) in walked or id(t.part) in walked for t in tenants)


def test_what_a_change_left_in_cycles_is_freed_before_what_lives_is_frozen(
        fresh_gc: None, h: heap.Heap) -> None:
    left = Pool()  # an add's temporary: unreachable, but only its own cycle frees it
    gone = weakref.ref(left)
    del left
    h.changed(live=1)
    assert gone() is None


def test_removed_tenants_held_in_cycles_are_freed_once_a_quarter_have_gone(
        fresh_gc: None, h: heap.Heap, timers: Timers, trims: list[int]) -> None:
    pools = [Pool() for _ in range(10)]
    refs = [weakref.ref(p) for p in pools]
    h.changed(live=10)  # added: frozen
    h.frozen_after_pass = gc.get_freeze_count()  # as if a full pass had just run
    pools.pop()  # removed: only its own cycle holds it now
    h.changed(live=9, gone=1)
    gc.collect()
    assert refs[-1]() is not None  # frozen: no pass walks it
    timers.pending()[-1].fn()  # changes pause: 1 gone of 9 left is not worth a full pass
    assert refs[-1]() is not None and trims == [1]
    pools.pop()
    h.changed(live=8, gone=1)  # 2 of 8: a quarter
    timers.pending()[-1].fn()
    assert refs[-1]() is None and refs[-2]() is None
    assert all(r() is not None for r in refs[:8])
    assert gc.get_freeze_count() > 0  # what lives is frozen again
    assert h.gone == 0 and trims == [1, 1]


def test_the_first_change_counts_as_a_full_pass_and_is_not_followed_by_another(
        fresh_gc: None, h: heap.Heap, timers: Timers, trims: list[int]) -> None:
    """The master's start: its first change collected everything, nothing being frozen;
    a second pass over the whole heap 5 s later would walk 10,000 tenants for nothing."""
    worker = Pool()
    gone = weakref.ref(worker)
    h.changed(live=1)
    assert h.frozen_after_pass == gc.get_freeze_count() > 0
    del worker  # died frozen: only a full pass would free it
    timers.pending()[-1].fn()
    assert gone() is not None and trims == [1]


def test_full_pass_due_after_a_quarter_of_the_tenants_left_have_gone() -> None:
    assert not heap.full_pass_due(0, 0, 100, 100)
    assert heap.full_pass_due(1, 0, 100, 100)  # the last tenant removed
    assert not heap.full_pass_due(2499, 10000, 100, 100)
    assert heap.full_pass_due(2500, 10000, 100, 100)


def test_full_pass_due_once_a_quarter_more_objects_are_frozen() -> None:
    """Objects frozen alive at a change (a worker's, an add in progress) may end in cycles:
    no removal needed for them to be collected one day."""
    assert not heap.full_pass_due(0, 10000, 499_999, 400_000)
    assert heap.full_pass_due(0, 10000, 500_000, 400_000)
    assert heap.full_pass_due(0, 4, 10, 0)  # no pass recorded yet


def test_a_full_pass_frees_what_was_frozen_alive_and_died_later(
        fresh_gc: None, h: heap.Heap, timers: Timers) -> None:
    worker = Pool()  # alive at the change: frozen
    gone = weakref.ref(worker)
    h.changed(live=1)
    h.frozen_after_pass = gc.get_freeze_count() // 2  # the heap has doubled since a pass
    del worker  # ended: its cycle, frozen, holds it
    gc.collect()
    assert gone() is not None
    timers.pending()[-1].fn()
    assert gone() is None and h.frozen_after_pass == gc.get_freeze_count()


def test_changes_in_a_row_wait_for_one_quiet_moment(fresh_gc: None, h: heap.Heap,
                                                   timers: Timers) -> None:
    for _ in range(3):
        h.changed(live=1)
    assert len(timers.made) == 3
    [last] = timers.pending()
    assert last is timers.made[-1] and last.delay == heap.QUIET_AFTER
    h.close()
    assert timers.pending() == []


async def closed_transport() -> weakref.ref:
    """A socket transport of the loop's, as each control-API call brings one, closed and
    gone from its peer; a weak reference to it."""
    loop = asyncio.get_running_loop()
    a, b = socket.socketpair()
    lost = loop.create_future()

    class Peer(asyncio.Protocol):
        def connection_lost(self, exc: BaseException | None) -> None:
            lost.set_result(None)

    transport, _ = await loop.connect_accepted_socket(Peer, a)
    ref = weakref.ref(transport)
    transport.close()
    b.close()
    await lost
    return ref


def test_a_closed_socket_transport_is_freed_by_its_reference_count() -> None:
    """Without release_transport_cycles(), Python 3.11 keeps it in a cycle of its own, which
    a change of tenants freezes while its call is in flight (checked: alive without it)."""
    heap.release_transport_cycles()  # once per process: a second call changes nothing
    gc.collect()
    gc.disable()
    try:
        ref = asyncio.run(closed_transport())
        assert ref() is None
    finally:
        gc.enable()
