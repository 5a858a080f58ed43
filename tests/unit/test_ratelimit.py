"""Sliding-window limits on a fake clock: never more than the limit in any 60 s window, wherever
Heap saw a request between its sending and its response; and the pause after a 429."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
from collections.abc import Awaitable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from heap_dbt.ratelimit import (
    AppLimits,
    AppPause,
    EventRateLimiter,
    IdentityWindows,
    RateLimits,
    SlidingWindow,
)
from tests.fakes import FakeClock

EPS = 1e-9
HELD = 60.0 * 1.01  # a completed request's events stay a window and the guard


def max_in_any_window(log: list[tuple[float, int]], window: float = 60.0) -> int:
    """The most units admitted within any half-open window (t - window, t]."""
    return max(
        (sum(n for s, n in log if t - window + EPS < s <= t) for t, _ in log),
        default=0,
    )


# --- SlidingWindow ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("log", "n", "now", "wait"),
    [
        pytest.param([], 10, 0.0, 0.0, id="empty-fits"),
        pytest.param([(0.0, 5)], 5, 1.0, 0.0, id="exactly-full-fits"),
        pytest.param([(0.0, 5)], 6, 1.0, 59.0, id="over-by-one-waits-for-oldest"),
        pytest.param([(0.0, 3), (10.0, 3)], 8, 20.0, 50.0, id="needs-two-entries-freed"),
        pytest.param([(0.0, 3), (10.0, 3)], 5, 20.0, 40.0, id="needs-one-entry-freed"),
        pytest.param([(0.0, 10)], 1, 60.0, 0.0, id="entry-expires-at-window-end"),
        pytest.param([(0.0, 10)], 1, 59.5, 0.5, id="entry-about-to-expire"),
    ],
)
def test_wait_time(log: list[tuple[float, int]], n: int, now: float, wait: float) -> None:
    window = SlidingWindow(10)
    for t, count in log:
        window.record(count, t)
    assert window.wait_time(n, now) == pytest.approx(wait)


# --- EventRateLimiter -----------------------------------------------------------------------------


class Recorder:
    """Admits requests in order and logs when each went, by the fake clock; each is answered at once."""

    def __init__(self, limiter: EventRateLimiter, clock: FakeClock) -> None:
        self.limiter = limiter
        self.clock = clock
        self.log: list[tuple[float, int]] = []
        self.by_identity: dict[str, list[tuple[float, int]]] = {}

    async def admit(self, total: int, per_identity: dict[str, int] | None = None) -> None:
        per_identity = per_identity or {}
        permit = await self.limiter.acquire(total, per_identity)
        permit.done()
        now = self.clock.monotonic()
        self.log.append((now, total))
        for identity, n in per_identity.items():
            self.by_identity.setdefault(identity, []).append((now, n))


def limiter(*, per_app: int, per_identity: int = 0) -> tuple[Recorder, FakeClock]:
    clock = FakeClock(start=0.0)
    return Recorder(EventRateLimiter(per_app=per_app, per_identity=per_identity, clock=clock), clock), clock


async def test_requests_within_the_limit_do_not_wait() -> None:
    rec, clock = limiter(per_app=100)
    for _ in range(10):
        await rec.admit(10)
    assert clock.sleeps == []


async def test_request_over_the_limit_waits_for_the_window() -> None:
    rec, clock = limiter(per_app=100)
    await rec.admit(60)
    clock.advance(10.0)
    await rec.admit(40)
    await rec.admit(30)
    assert clock.sleeps == [pytest.approx(50.6)]
    assert [t for t, _ in rec.log] == pytest.approx([0.0, 10.0, HELD])


@settings(deadline=None, max_examples=150)
@given(
    limit=st.integers(min_value=1, max_value=200),
    requests=st.lists(
        st.tuples(
            st.integers(min_value=1, max_value=200), st.sampled_from([0.0, 0.5, 1.0, 7.25, 30.0, 61.0])
        ),
        min_size=1,
        max_size=40,
    ),
)
def test_never_more_than_the_limit_in_any_window(limit: int, requests: list[tuple[int, float]]) -> None:
    async def scenario() -> Recorder:
        rec, clock = limiter(per_app=limit)
        for size, gap in requests:
            clock.advance(gap)
            await rec.admit(min(size, limit))
        return rec

    rec = asyncio.run(scenario())
    assert len(rec.log) == len(requests)
    assert max_in_any_window(rec.log) <= limit
    times = [t for t, _ in rec.log]
    assert times == sorted(times)  # admitted in order


@settings(deadline=None, max_examples=100)
@given(
    limit=st.integers(min_value=1, max_value=20),
    requests=st.lists(
        st.dictionaries(
            st.sampled_from(["ann", "bob", "cy"]), st.integers(min_value=1, max_value=20), min_size=1
        ),
        min_size=1,
        max_size=30,
    ),
)
def test_never_more_than_the_per_identity_limit_in_any_window(
    limit: int, requests: list[dict[str, int]]
) -> None:
    async def scenario() -> Recorder:
        rec, clock = limiter(per_app=0, per_identity=limit)
        for per_identity in requests:
            capped = {k: min(v, limit) for k, v in per_identity.items()}
            await rec.admit(sum(capped.values()), capped)
            clock.advance(1.0)
        return rec

    rec = asyncio.run(scenario())
    for log in rec.by_identity.values():
        assert max_in_any_window(log) <= limit


async def test_per_identity_limit_holds_back_only_a_busy_identity() -> None:
    rec, clock = limiter(per_app=0, per_identity=10)
    await rec.admit(10, {"ann": 10})
    await rec.admit(10, {"bob": 10})
    assert clock.sleeps == []
    await rec.admit(1, {"ann": 1})
    assert clock.sleeps == [pytest.approx(HELD)]


async def test_both_limits_apply_together() -> None:
    rec, clock = limiter(per_app=15, per_identity=10)
    await rec.admit(10, {"ann": 10})
    await rec.admit(5, {"bob": 5})
    clock.advance(30.0)
    await rec.admit(5, {"cy": 5})  # app window is full until t=60 and the guard
    assert rec.log[-1] == (pytest.approx(HELD), 5)


@pytest.mark.parametrize(
    ("per_app", "per_identity", "active"),
    [(0, 0, False), (100, 0, True), (0, 100, True), (100, 100, True)],
    ids=["both-off", "app-only", "identity-only", "both"],
)
def test_active(per_app: int, per_identity: int, active: bool) -> None:
    assert EventRateLimiter(per_app=per_app, per_identity=per_identity, clock=FakeClock()).active is active


async def test_limits_of_zero_are_off() -> None:
    rec, clock = limiter(per_app=0, per_identity=0)
    for _ in range(100):
        await rec.admit(1000, {"ann": 1000})
    assert clock.sleeps == []
    assert len(rec.log) == 100


@pytest.mark.parametrize(
    ("per_app", "per_identity", "default", "expected"),
    [
        (15_000, 1_000, 1_000, 1_000),
        (15_000, 500, 1_000, 500),
        (200, 1_000, 1_000, 200),
        (0, 0, 1_000, 1_000),
        (0, 300, 1_000, 300),
        (15_000, 0, 100, 100),
    ],
    ids=["heap-defaults", "identity-binds", "app-binds", "off", "identity-only", "default-binds"],
)
def test_max_batch(per_app: int, per_identity: int, default: int, expected: int) -> None:
    lim = EventRateLimiter(per_app=per_app, per_identity=per_identity, clock=FakeClock())
    assert lim.max_batch(default) == expected


async def test_concurrent_admits_are_serialised_in_order() -> None:
    rec, _ = limiter(per_app=10)
    await asyncio.gather(*(rec.admit(n) for n in (6, 6, 6)))
    assert rec.log == [(0.0, 6), (pytest.approx(HELD), 6), (pytest.approx(2 * HELD), 6)]


# --- IdentityWindows: one log for every identity ---------------------------------------------------


@given(
    requests=st.lists(
        st.tuples(
            st.floats(min_value=0, max_value=5, allow_nan=False),
            st.dictionaries(st.sampled_from(["ann", "bob", "cy"]), st.integers(1, 6), min_size=1),
        ),
        max_size=25,
    ),
    ask=st.dictionaries(st.sampled_from(["ann", "bob", "cy", "dee"]), st.integers(1, 10), min_size=1),
    later=st.floats(min_value=0, max_value=90, allow_nan=False),
)
def test_identity_windows_wait_exactly_as_one_window_per_identity(
    requests: list[tuple[float, dict[str, int]]], ask: dict[str, int], later: float
) -> None:
    shared = IdentityWindows(10)
    separate: dict[str, SlidingWindow] = {}
    now = 0.0
    for step, counts in requests:
        now += step
        shared.record(counts, now)
        for identity, n in counts.items():
            separate.setdefault(identity, SlidingWindow(10)).record(n, now)
    now += later
    expected = max(separate.get(i, SlidingWindow(10)).wait_time(n, now) for i, n in ask.items())
    assert shared.wait_time(ask, now) == pytest.approx(expected)


def test_identity_windows_forget_identities_that_left_the_window() -> None:
    windows = IdentityWindows(1000)
    windows.record({f"user{i}": 1 for i in range(50_000)}, 0.0)
    windows.record({"user0": 2}, 30.0)
    assert len(windows.used) == 50_000
    windows.prune(60.0)
    assert windows.used == {"user0": 2}
    windows.prune(90.0)
    assert windows.used == {}


# --- requests in flight: Heap may count them any time between sending and the response -------------


class SimClock:
    """Time moves only when every task waits on it, straight to the earliest wake-up: requests in
    flight overlap as they do on a real clock, and a test takes no real time."""

    def __init__(self) -> None:
        self.now = 0.0
        self._timers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        wake: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._timers, (self.now + max(0.0, seconds), next(self._seq), wake))
        await wake

    async def run(self, *work: Awaitable[Any]) -> list[Any]:
        tasks = [asyncio.ensure_future(w) for w in work]
        while not all(t.done() for t in tasks):
            for _ in range(50):  # let every task run until it waits
                await asyncio.sleep(0)
            while self._timers and self._timers[0][2].done():  # cancelled sleeps
                heapq.heappop(self._timers)
            if all(t.done() for t in tasks):
                break
            assert self._timers, "deadlock: every task waits and no timer is set"
            at, _, wake = heapq.heappop(self._timers)
            self.now = at
            wake.set_result(None)
        return [t.result() for t in tasks]


def worst_case_in_heaps_window(spans: list[tuple[float, float, int]], window: float = 60.0) -> int:
    """The most events Heap could count in one window if each request arrived at whatever moment
    between its sending and its response suits the count worst: ``spans`` are (sent, answered, n)."""
    return max(
        (sum(n for s, d, n in spans if s <= t and d > t - window) for t, _, _ in spans),
        default=0,
    )


@settings(deadline=None, max_examples=80)
@given(
    limit=st.integers(min_value=1, max_value=50),
    requests=st.lists(
        st.tuples(
            st.integers(min_value=1, max_value=50),  # events
            st.sampled_from(["ann", "bob"]),  # identity, for the per-identity case
            st.floats(min_value=0.0, max_value=5.0),  # time before it is ready to go
            st.floats(min_value=0.0, max_value=40.0),  # response time
        ),
        min_size=1,
        max_size=25,
    ),
    per_identity=st.booleans(),
)
def test_heap_never_counts_more_than_the_limit_whenever_it_saw_each_request(
    limit: int, requests: list[tuple[int, str, float, float]], per_identity: bool
) -> None:
    clock = SimClock()
    limiter = EventRateLimiter(
        per_app=0 if per_identity else limit, per_identity=limit if per_identity else 0, clock=clock
    )
    spans: dict[str, list[tuple[float, float, int]]] = {}

    async def request(n: int, identity: str, ready: float, latency: float) -> None:
        await clock.sleep(ready)
        permit = await limiter.acquire(n, {identity: n})
        sent = clock.now
        await clock.sleep(latency)
        permit.done()
        key = identity if per_identity else "app"
        spans.setdefault(key, []).append((sent, clock.now, n))

    capped = [(min(n, limit), who, ready, latency) for n, who, ready, latency in requests]
    asyncio.run(clock.run(*(request(*r) for r in capped)))
    assert sum(len(v) for v in spans.values()) == len(requests)
    for key_spans in spans.values():
        assert worst_case_in_heaps_window(key_spans) <= limit


async def test_a_request_in_flight_holds_its_place_until_its_response_and_a_window_after() -> None:
    clock = SimClock()
    limiter = EventRateLimiter(per_app=10, per_identity=0, clock=clock)
    sent: list[float] = []

    async def request(latency: float) -> None:
        permit = await limiter.acquire(10, {})
        sent.append(clock.now)
        await clock.sleep(latency)
        permit.done()

    await clock.run(request(7.0), request(1.0))
    assert sent == pytest.approx([0.0, 7.0 + HELD])


async def test_events_heap_did_not_take_leave_the_window_at_once() -> None:
    clock = SimClock()
    limiter = EventRateLimiter(per_app=10, per_identity=0, clock=clock)
    sent: list[float] = []

    async def refused() -> None:
        permit = await limiter.acquire(10, {})
        await clock.sleep(3.0)
        permit.done(counted=False)  # a 429: Heap did not count it

    async def waiting() -> None:
        await clock.sleep(1.0)
        permit = await limiter.acquire(10, {})
        sent.append(clock.now)
        permit.done()

    await clock.run(refused(), waiting())
    assert sent == [3.0]  # woken by the 429's response, not after a window


def test_done_counts_once() -> None:
    async def scenario() -> list[float]:
        clock = FakeClock(start=0.0)
        limiter = EventRateLimiter(per_app=10, per_identity=0, clock=clock)
        permit = await limiter.acquire(5, {})
        permit.done()
        permit.done()
        await limiter.acquire(5, {})
        return clock.sleeps

    assert asyncio.run(scenario()) == []


def test_in_flight_units_fill_the_window_until_done() -> None:
    window = SlidingWindow(10)
    window.in_flight = 6
    assert window.wait_time(5, 0.0) == math.inf  # only the answer of the one in flight can help
    window.record(1, 0.0)
    window.in_flight = 9
    assert window.wait_time(2, 1.0) == math.inf  # the 1 logged at 0 leaving is not enough
    window.in_flight = 8
    assert window.wait_time(2, 1.0) == pytest.approx(59.0)  # it is now: it leaves at 60


# --- the pause after a 429, and one set of limits per app ----------------------------------------------


async def test_pause_holds_every_waiter_until_its_end() -> None:
    clock = FakeClock(start=0.0)
    pause = AppPause(clock)
    pause.pause(10.0)
    pause.pause(4.0)  # an earlier end does not shorten it
    assert pause.remaining == 10.0
    await pause.wait()
    assert (clock.now, clock.sleeps) == (10.0, [10.0])
    await pause.wait()
    assert clock.sleeps == [10.0]


async def test_a_pause_that_starts_while_waiting_for_the_window_is_waited_out_too() -> None:
    clock = SimClock()
    limits = AppLimits(clock=clock, events=EventRateLimiter(per_app=10, per_identity=0, clock=clock))
    sent: list[float] = []

    async def first() -> None:
        permit = await limits.acquire(10, {})
        await clock.sleep(1.0)
        limits.pause.pause(200.0)  # its answer: 429, Retry-After 200
        permit.done(counted=False)

    async def second() -> None:
        permit = await limits.acquire(5, {})  # waits for the first, then for the pause
        sent.append(clock.now)
        permit.done()

    await clock.run(first(), second())
    assert sent == [201.0]


async def test_users_and_accounts_wait_only_for_the_pause() -> None:
    clock = FakeClock(start=0.0)
    limits = AppLimits(clock=clock, events=EventRateLimiter(per_app=10, per_identity=0, clock=clock))
    (await limits.acquire(10, {})).done()
    for _ in range(5):
        (await limits.acquire()).done()  # no events: the full event window does not hold them
    assert clock.sleeps == []


def test_rate_limits_give_each_app_its_own_limits_once() -> None:
    limits = RateLimits(
        events_per_minute=100, events_per_identity_per_minute=0, clock=FakeClock(), window=3.0
    )
    first = limits.for_app("111")
    assert limits.for_app("111") is first
    assert limits.for_app("222") is not first
    assert first.events is not None and first.max_batch(1000) == 100
    off = RateLimits(events_per_minute=0, events_per_identity_per_minute=0, clock=FakeClock())
    assert off.for_app("111").events is None
    assert off.for_app("111").max_batch(1000) == 1000


async def test_a_scaled_window_is_held_with_its_own_guard() -> None:
    clock = FakeClock(start=0.0)
    limits = RateLimits(events_per_minute=10, events_per_identity_per_minute=0, clock=clock, window=3.0)
    app = limits.for_app("111")
    (await app.acquire(10, {})).done()
    (await app.acquire(1, {})).done()
    assert clock.sleeps == [pytest.approx(3.03)]


def test_limits_shared_by_runs_one_after_the_other_keep_their_windows() -> None:
    clock = FakeClock(start=0.0)
    limits = RateLimits(events_per_minute=10, events_per_identity_per_minute=0, clock=clock)

    async def run(sizes: list[int]) -> None:  # requests in flight at once, as in a sync
        app = limits.for_app("111")

        async def one(n: int) -> None:
            permit = await app.acquire(n, {})
            await asyncio.sleep(0)
            permit.done()

        await asyncio.gather(*(one(n) for n in sizes))

    asyncio.run(run([6, 4, 5]))  # the third waits for the first two's answers, on this loop's event
    clock.advance(HELD)  # the window is empty again
    asyncio.run(run([10, 1]))  # a new loop: the 1 waits for the 10 to be answered, then a window
    assert clock.sleeps == [pytest.approx(HELD), pytest.approx(HELD)]
