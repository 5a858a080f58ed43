"""Sliding-window limits on a fake clock: never more than the limit in any 60 s window."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from heap_dbt.ratelimit import EventRateLimiter, IdentityWindows, SlidingWindow
from tests.fakes import FakeClock

EPS = 1e-9


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
    """Admits requests in order and logs when each went, by the fake clock."""

    def __init__(self, limiter: EventRateLimiter, clock: FakeClock) -> None:
        self.limiter = limiter
        self.clock = clock
        self.log: list[tuple[float, int]] = []
        self.by_identity: dict[str, list[tuple[float, int]]] = {}

    async def admit(self, total: int, per_identity: dict[str, int] | None = None) -> None:
        per_identity = per_identity or {}
        await self.limiter.admit(total, per_identity)
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
    assert clock.sleeps == [50.0]
    assert [t for t, _ in rec.log] == [0.0, 10.0, 60.0]


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
    assert clock.sleeps == [60.0]


async def test_both_limits_apply_together() -> None:
    rec, clock = limiter(per_app=15, per_identity=10)
    await rec.admit(10, {"ann": 10})
    await rec.admit(5, {"bob": 5})
    clock.advance(30.0)
    await rec.admit(5, {"cy": 5})  # app window is full until t=60
    assert rec.log[-1] == (60.0, 5)


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
    assert rec.log == [(0.0, 6), (60.0, 6), (120.0, 6)]


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
