"""The sender: retries, backoff, Retry-After, bisecting a 400, cancelling on a 401.

Each test drives ``Sender`` with a scripted FakeTransport and a FakeClock.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from heap_dbt import heap, sql
from heap_dbt.bodies import Chunk
from heap_dbt.errors import RetriableAPIError
from heap_dbt.ratelimit import AppLimits, EventRateLimiter
from heap_dbt.sender import Cancellation, Delivery, Sender
from heap_dbt.transport import Transport
from tests.fakes import FakeClock, FakeTransport, response

APP_ID = "1234567890"
USERS = "/api/add_user_properties"
TRACK = "/api/track"
FRAMES = {"user": heap.Frame.of("user", APP_ID), "event": heap.Frame.of("event", APP_ID)}


def make_sender(
    transport: Transport,
    *,
    max_attempts: int = 6,
    clock: FakeClock | None = None,
    cancellation: Cancellation | None = None,
    limits: AppLimits | None = None,
    events: bool = False,
) -> Sender:
    return Sender(
        transport,
        clock=clock or FakeClock(),
        policy=heap.RetryPolicy(max_attempts=max_attempts),
        limits=limits,
        events=events,
        cancellation=cancellation,
        rng=random.Random(0),
    )


def record(i: int) -> dict[str, Any]:
    return {"identity": f"u{i}", "properties": {"n": i, "text": f'say "{i}"'}}


def chunk(n: int, *, start: int = 0, identities: list[str] | None = None) -> Chunk:
    records = [record(i) for i in range(start, start + n)]
    return Chunk(
        pa.array([json.dumps(r) + sql.SEPARATOR for r in records], pa.string()),  # as the SQL makes them
        pa.array([r["identity"] for r in records], pa.string()),
        pa.array(identities, pa.string()) if identities is not None else None,
    )


def counts(delivery: Delivery) -> tuple[int, int, int]:
    return delivery.sent, len(delivery.rejected), len(delivery.failed)


async def send(sender: Sender, part: Chunk, *, obj: str = "user") -> Delivery:
    return await sender.send(FRAMES[obj], part)


# --- delivered, retried, given up -----------------------------------------------------------------


async def test_delivered_on_first_try() -> None:
    fake = FakeTransport()
    delivery = await send(make_sender(fake), chunk(3))
    assert counts(delivery) == (3, 0, 0)
    assert (delivery.requests, delivery.retries) == (1, 0)
    assert [r.path for r in fake.requests] == [USERS]
    assert fake.requests[0].json() == {"app_id": APP_ID, "users": [record(0), record(1), record(2)]}


@pytest.mark.parametrize(
    ("script", "retries"),
    [
        pytest.param([500, 503, 200], 2, id="500-503-200"),
        pytest.param([502, 201], 1, id="502-201"),
        pytest.param([408, 429, 504, 204], 3, id="408-429-504-204"),
    ],
)
async def test_retried_then_delivered(script: list[int], retries: int) -> None:
    fake = FakeTransport({USERS: script})
    clock = FakeClock()
    delivery = await send(make_sender(fake, clock=clock), chunk(8))
    assert counts(delivery) == (8, 0, 0)
    assert (delivery.requests, delivery.retries) == (len(script), retries)
    assert delivery.failed == []
    assert len(clock.sleeps) == retries
    policy = heap.RetryPolicy()
    for attempt, slept in enumerate(clock.sleeps, start=1):
        ceiling = min(policy.cap, policy.base * 2 ** (attempt - 1))
        assert ceiling / 2 <= slept <= ceiling
    assert len({r.body for r in fake.requests}) == 1  # the same batch each time
    assert Counter(item["identity"] for item in fake.delivered()) == {f"u{i}": 1 for i in range(8)}


@pytest.mark.parametrize("max_attempts", [1, 3, 6])
async def test_gives_up_after_max_attempts(max_attempts: int) -> None:
    fake = FakeTransport(default=response(503, "Service\n unavailable"))
    clock = FakeClock()
    delivery = await send(make_sender(fake, max_attempts=max_attempts, clock=clock), chunk(4))
    assert counts(delivery) == (0, 0, 4)
    assert len(fake.requests) == max_attempts
    assert (delivery.requests, delivery.retries) == (max_attempts, max_attempts - 1)
    assert len(clock.sleeps) == max_attempts - 1
    reason = f"HTTP 503: Service unavailable (gave up after {max_attempts} attempts)"
    assert [(f.key, f.reason) for f in delivery.failed] == [(f"u{i}", reason) for i in range(4)]
    assert fake.delivered() == []


@pytest.mark.parametrize(
    ("header", "sleeps"),
    [
        pytest.param("7", [7.0], id="seconds"),
        pytest.param("0", [], id="zero"),  # a pause of no time: the retry goes at once
        pytest.param("86400", [300.0], id="capped"),
        pytest.param("Fri, 01 Jan 2100 00:00:00 GMT", [300.0], id="far-http-date"),
    ],
)
async def test_429_honours_retry_after(header: str, sleeps: list[float]) -> None:
    fake = FakeTransport({USERS: [response(429, "slow down", retry_after=header), 200]})
    clock = FakeClock()
    delivery = await send(make_sender(fake, clock=clock), chunk(2))
    assert clock.sleeps == sleeps
    assert counts(delivery) == (2, 0, 0)
    assert delivery.retries == 1


async def test_retry_after_as_a_date_is_read_on_the_injected_wall_clock() -> None:
    clock = FakeClock(wall=1_700_000_000.0)
    when = "Tue, 14 Nov 2023 22:13:50 GMT"  # 30 s after the fake clock's wall time
    fake = FakeTransport({USERS: [response(503, "", retry_after=when), 200]})
    await send(make_sender(fake, clock=clock), chunk(1))
    assert clock.sleeps == [30.0]


async def test_connection_errors_are_retried() -> None:
    fake = FakeTransport(
        {USERS: [RetriableAPIError("connection error: reset"), RetriableAPIError("no answer"), 200]}
    )
    clock = FakeClock()
    delivery = await send(make_sender(fake, clock=clock), chunk(5))
    assert counts(delivery) == (5, 0, 0)
    assert delivery.retries == 2
    assert delivery.requests == 1  # only answered requests count
    assert len(clock.sleeps) == 2


async def test_connection_errors_until_give_up_name_the_error() -> None:
    fake = FakeTransport(default=RetriableAPIError("connection error: ClientConnectorError: refused"))
    delivery = await send(make_sender(fake, max_attempts=2), chunk(1))
    assert counts(delivery) == (0, 0, 1)
    assert delivery.failed[0].reason == (
        "connection error: ClientConnectorError: refused (gave up after 2 attempts)"
    )


# --- refused records: bisect ------------------------------------------------------------------------


def poison_heap(poison: set[str]) -> FakeTransport:
    """A Heap that answers 400 to any body holding a poison identity, else 200."""

    def respond(path: str, body: bytes) -> Any:
        names = {item["identity"] for item in json.loads(body)["users"]}
        bad = sorted(names & poison)
        return response(400, f"Bad request: invalid identity {bad[0]}") if bad else 200

    return FakeTransport(respond=respond)


@pytest.mark.parametrize(
    "poison",
    [
        pytest.param({"u3"}, id="one"),
        pytest.param({"u0", "u7"}, id="first-and-last"),
        pytest.param({"u2", "u3"}, id="neighbours"),
        pytest.param({f"u{i}" for i in range(8)}, id="all"),
    ],
)
async def test_400_bisects_to_the_poison_records(poison: set[str]) -> None:
    fake = poison_heap(poison)
    delivery = await send(make_sender(fake), chunk(8))
    assert counts(delivery) == (8 - len(poison), len(poison), 0)
    assert sorted((r.key, r.reason) for r in delivery.rejected) == sorted(
        (key, f"Heap refused the record: HTTP 400: Bad request: invalid identity {key}") for key in poison
    )
    delivered = Counter(item["identity"] for item in fake.delivered())
    assert delivered == {f"u{i}": 1 for i in range(8) if f"u{i}" not in poison}
    assert delivery.retries == 0
    assert sorted(k for part in delivery.delivered for k in part.keys.to_pylist()) == sorted(delivered)


@pytest.mark.parametrize("status", [400, 413, 422])
async def test_refused_single_record_is_rejected(status: int) -> None:
    fake = FakeTransport({USERS: [response(status, "")]})
    delivery = await send(make_sender(fake), chunk(1))
    assert counts(delivery) == (0, 1, 0)
    assert delivery.rejected[0].reason == f"Heap refused the record: HTTP {status}: no message"


async def test_413_splits_the_batch() -> None:
    fake = FakeTransport({USERS: [413]})
    delivery = await send(make_sender(fake), chunk(6))
    assert counts(delivery) == (6, 0, 0)
    assert [len(r.items()) for r in fake.requests] == [6, 3, 3]


async def test_halves_of_a_split_are_retried_on_their_own() -> None:
    fake = FakeTransport({USERS: [400, 500, 200, 200]})
    delivery = await send(make_sender(fake), chunk(4))
    assert counts(delivery) == (4, 0, 0)
    assert delivery.retries == 1
    assert Counter(item["identity"] for item in fake.delivered()) == {f"u{i}": 1 for i in range(4)}


# --- fatal answers cancel the run ---------------------------------------------------------------------


@pytest.mark.parametrize("status", [401, 403, 404])
async def test_fatal_status_fails_the_chunk_and_cancels_later_ones(status: int) -> None:
    fake = FakeTransport({USERS: [response(status, "Unauthorized")]})
    cancellation = Cancellation()
    sender = make_sender(fake, cancellation=cancellation)
    first = await send(sender, chunk(3))
    assert counts(first) == (0, 0, 3)
    assert first.retries == 0
    assert {f.reason for f in first.failed} == {f"HTTP {status}: Unauthorized"}
    assert cancellation.reason == f"Heap refused a request with HTTP {status}: Unauthorized"

    later = await send(sender, chunk(2, start=3))
    assert counts(later) == (0, 0, 2)
    assert len(fake.requests) == 1  # the later chunk was never sent
    assert [(f.key, f.reason) for f in later.failed] == [
        ("u3", f"not sent: Heap refused a request with HTTP {status}: Unauthorized"),
        ("u4", f"not sent: Heap refused a request with HTTP {status}: Unauthorized"),
    ]


async def test_cancellation_is_shared_across_syncs() -> None:
    cancellation = Cancellation()
    first = make_sender(FakeTransport({USERS: [401]}), cancellation=cancellation)
    second_heap = FakeTransport()
    second = make_sender(second_heap, cancellation=cancellation)
    await send(first, chunk(1))
    delivery = await send(second, chunk(2))
    assert counts(delivery) == (0, 0, 2)
    assert second_heap.requests == []


async def test_cancellation_keeps_the_first_reason() -> None:
    cancellation = Cancellation()
    cancellation.cancel("HTTP 401")
    cancellation.cancel("HTTP 403")
    assert (cancellation.cancelled, cancellation.reason) == (True, "HTTP 401")


async def test_cancel_during_backoff_stops_the_retry() -> None:
    cancellation = Cancellation()

    class CancellingClock(FakeClock):
        async def sleep(self, seconds: float) -> None:
            cancellation.cancel("another request got 401")
            await super().sleep(seconds)

    fake = FakeTransport({USERS: [500]})
    delivery = await send(make_sender(fake, clock=CancellingClock(), cancellation=cancellation), chunk(2))
    assert counts(delivery) == (0, 0, 2)
    assert len(fake.requests) == 1
    assert delivery.failed[0].reason == "not sent: another request got 401"


# --- events and the rate limiter ----------------------------------------------------------------------


async def test_events_go_to_track_and_are_admitted_by_identity() -> None:
    clock = FakeClock(start=0.0)
    limits = AppLimits(clock=clock, events=EventRateLimiter(per_app=100, per_identity=3, clock=clock))
    fake = FakeTransport()
    sender = make_sender(fake, clock=clock, limits=limits, events=True)
    first = await send(sender, chunk(3, identities=["ann", "ann", "bob"]), obj="event")
    second = await send(sender, chunk(2, start=3, identities=["ann", "ann"]), obj="event")
    assert [r.path for r in fake.requests] == [TRACK, TRACK]
    assert fake.requests[0].json()["events"] == [record(0), record(1), record(2)]
    # ann already has 2 of her 3 this minute; 2 more wait until the first request's response
    # (at once, on this clock) is a window and the guard old
    assert clock.sleeps == [pytest.approx(60.6)]
    assert (first.sent, second.sent) == (3, 2)


# --- every row ends in exactly one outcome ---------------------------------------------------------


@settings(deadline=None, max_examples=60)
@given(
    n=st.integers(min_value=1, max_value=40),
    data=st.data(),
)
def test_every_record_is_accounted_exactly_once(n: int, data: st.DataObject) -> None:
    poison = data.draw(st.sets(st.sampled_from([f"u{i}" for i in range(n)])), label="poison")
    flaky = data.draw(st.sets(st.integers(min_value=0, max_value=200)), label="503 on these requests")
    seen = 0

    def respond(path: str, body: bytes) -> Any:
        nonlocal seen
        seen += 1
        if seen - 1 in flaky:
            return 503
        names = {item["identity"] for item in json.loads(body)["users"]}
        return 400 if names & poison else 200

    fake = FakeTransport(respond=respond)
    delivery = asyncio.run(send(make_sender(fake, max_attempts=3), chunk(n)))
    sent, rejected, failed = counts(delivery)
    assert sent + rejected + failed == n
    rejected_keys = [r.key for r in delivery.rejected]
    failed_keys = [f.key for f in delivery.failed]
    delivered = [item["identity"] for item in fake.delivered()]
    assert len(delivered) == sent
    everyone = Counter(rejected_keys) + Counter(failed_keys) + Counter(delivered)
    assert everyone == {f"u{i}": 1 for i in range(n)}
    assert set(rejected_keys) <= poison
    assert not (set(delivered) & poison)


# --- a 429 slows the whole app ---------------------------------------------------------------------


async def test_a_429_pauses_every_request_to_the_app_on_every_endpoint() -> None:
    clock = FakeClock(start=0.0)
    limits = AppLimits(clock=clock, events=EventRateLimiter(per_app=100, per_identity=0, clock=clock))
    fake = FakeTransport({TRACK: [response(429, "slow down", retry_after="10")]})
    events = make_sender(fake, clock=clock, limits=limits, events=True, max_attempts=1)
    users = make_sender(fake, clock=clock, limits=limits)
    gave_up = await send(events, chunk(2, identities=["ann", "bob"]), obj="event")
    assert counts(gave_up) == (0, 0, 2)  # its last attempt: it fails, and the app still pauses
    delivery = await send(users, chunk(3))
    assert clock.sleeps == [10.0]
    assert counts(delivery) == (3, 0, 0)


async def test_the_pause_is_per_app() -> None:
    clock = FakeClock(start=0.0)
    fake = FakeTransport({USERS: [response(429, "slow down", retry_after="10")]})
    await send(make_sender(fake, clock=clock, limits=AppLimits(clock=clock), max_attempts=1), chunk(1))
    other_app = make_sender(fake, clock=clock, limits=AppLimits(clock=clock))
    assert counts(await send(other_app, chunk(1))) == (1, 0, 0)
    assert clock.sleeps == []


async def test_events_heap_refused_with_429_do_not_fill_the_window() -> None:
    clock = FakeClock(start=0.0)
    limits = AppLimits(clock=clock, events=EventRateLimiter(per_app=10, per_identity=0, clock=clock))
    fake = FakeTransport({TRACK: [response(429, "slow down", retry_after="2")]})
    delivery = await send(make_sender(fake, clock=clock, limits=limits, events=True), chunk(10), obj="event")
    # Only the Retry-After: had the refused 10 events been counted, the retry would wait a window.
    assert clock.sleeps == [2.0]
    assert (delivery.sent, delivery.retries) == (10, 1)


async def test_every_request_holds_its_events_until_its_response_and_a_window_after() -> None:
    clock = FakeClock(start=0.0)
    limits = AppLimits(clock=clock, events=EventRateLimiter(per_app=10, per_identity=0, clock=clock))

    def respond(path: str, body: bytes) -> int:
        clock.advance(5.0)  # each response takes 5 s to come back
        return 200

    fake = FakeTransport(respond=respond)
    sender = make_sender(fake, clock=clock, limits=limits, events=True)
    await send(sender, chunk(10), obj="event")
    await send(sender, chunk(10, start=10), obj="event")
    # The first response came at t=5: the window is full until 5 + 60 s + the guard.
    assert clock.sleeps == [pytest.approx(60.6)]
    assert clock.now == pytest.approx(5 + 60.6 + 5)
