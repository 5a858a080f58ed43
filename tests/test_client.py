"""Sending one chunk: retries, backoff, Retry-After, bisecting a 400, aborting on a 401.

Part (a) drives ``engine._SyncRun.send`` with a scripted FakeTransport and a FakeClock;
part (b) puts the real ``AiohttpTransport`` in front of aioresponses.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter
from types import SimpleNamespace
from typing import Any

import aiohttp
import pyarrow as pa
import pytest
from aioresponses import aioresponses
from hypothesis import given, settings
from hypothesis import strategies as st
from yarl import URL

from heap_dbt import heap, sql
from heap_dbt.bodies import Chunk
from heap_dbt.config import SyncSpec
from heap_dbt.engine import _SyncRun
from heap_dbt.errors import RetriableAPIError
from heap_dbt.manifest import ModelNode
from heap_dbt.plan import Prepared, SyncOptions
from heap_dbt.ratelimit import EventRateLimiter
from heap_dbt.report import SyncResult
from heap_dbt.transport import AiohttpTransport, Transport
from tests.fakes import FakeClock, FakeTransport, response

APP_ID = "1234567890"
USERS = "/api/add_user_properties"
TRACK = "/api/track"
BASE_URL = "http://heap.test"


def make_run(
    transport: Transport,
    *,
    obj: str = "user",
    max_attempts: int = 6,
    clock: FakeClock | None = None,
    abort: dict[str, str] | None = None,
    limiter: EventRateLimiter | None = None,
) -> _SyncRun:
    model = ModelNode(
        unique_id="model.demo.dim_users",
        name="dim_users",
        relation_name='"dev"."main"."dim_users"',
        materialized="table",
        meta={},
        tags=(),
        fqn=("demo", "dim_users"),
        original_file_path="models/dim_users.sql",
    )
    spec = SyncSpec(
        model=model,
        meta_path="config.meta.heap",
        object=obj,  # type: ignore[arg-type]
        key="id",
        identity="who" if obj == "event" else None,
        event_name="Signup" if obj == "event" else None,
    )
    prepared = Prepared(
        spec,
        APP_ID,
        sql.RecordQuery(
            sql="",
            has_identity=obj == "event",
            can_truncate=False,
            keys_sql="",
            probe_sql="",
            duplicates_sql="",
            probe_duplicates_sql="",
            duplicate_keys_sql="",
            definition="",
            width=1,
        ),
    )
    result = SyncResult(
        model=model.name,
        unique_id=model.unique_id,
        object=obj,
        meta_path=spec.meta_path,
        app_id=heap.mask_app_id(APP_ID),
    )
    run = _SyncRun(
        prepared,
        result,
        transport=transport,
        slots=asyncio.Semaphore(8),
        limiter=limiter,
        options=SyncOptions(max_attempts=max_attempts),
        clock=clock or FakeClock(),
        abort={} if abort is None else abort,
    )
    run.rng = random.Random(0)
    return run


def record(i: int) -> dict[str, Any]:
    return {"identity": f"u{i}", "properties": {"n": i, "text": f'say "{i}"'}}


def chunk(n: int, *, start: int = 0, identities: list[str] | None = None) -> Chunk:
    records = [record(i) for i in range(start, start + n)]
    return Chunk(
        pa.array([json.dumps(r) + sql.SEPARATOR for r in records], pa.string()),  # as the SQL makes them
        pa.array([r["identity"] for r in records], pa.string()),
        pa.array(identities, pa.string()) if identities is not None else None,
    )


def counts(run: _SyncRun) -> tuple[int, int, int]:
    return run.result.sent, run.result.rejected, run.result.failed


# --- (a) the retry loop against a scripted Heap ---------------------------------------------------


async def test_delivered_on_first_try() -> None:
    fake = FakeTransport()
    run = make_run(fake)
    await run.send(chunk(3))
    assert counts(run) == (3, 0, 0)
    assert (run.result.requests, run.result.retries) == (1, 0)
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
    run = make_run(fake, clock=clock)
    await run.send(chunk(8))
    assert counts(run) == (8, 0, 0)
    assert (run.result.requests, run.result.retries) == (len(script), retries)
    assert run.result.failures == []
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
    run = make_run(fake, max_attempts=max_attempts, clock=clock)
    await run.send(chunk(4))
    assert counts(run) == (0, 0, 4)
    assert len(fake.requests) == max_attempts
    assert (run.result.requests, run.result.retries) == (max_attempts, max_attempts - 1)
    assert len(clock.sleeps) == max_attempts - 1
    reason = f"HTTP 503: Service unavailable (gave up after {max_attempts} attempts)"
    assert [(f.key, f.reason) for f in run.result.failures] == [(f"u{i}", reason) for i in range(4)]
    assert fake.delivered() == []


@pytest.mark.parametrize(
    ("header", "slept"),
    [
        pytest.param("7", 7.0, id="seconds"),
        pytest.param("0", 0.0, id="zero"),
        pytest.param("86400", 300.0, id="capped"),
        pytest.param("Fri, 01 Jan 2100 00:00:00 GMT", 300.0, id="far-http-date"),
    ],
)
async def test_429_honours_retry_after(header: str, slept: float) -> None:
    fake = FakeTransport({USERS: [response(429, "slow down", retry_after=header), 200]})
    clock = FakeClock()
    run = make_run(fake, clock=clock)
    await run.send(chunk(2))
    assert clock.sleeps == [slept]
    assert counts(run) == (2, 0, 0)
    assert run.result.retries == 1


async def test_connection_errors_are_retried() -> None:
    fake = FakeTransport(
        {USERS: [RetriableAPIError("connection error: reset"), RetriableAPIError("no answer"), 200]}
    )
    clock = FakeClock()
    run = make_run(fake, clock=clock)
    await run.send(chunk(5))
    assert counts(run) == (5, 0, 0)
    assert run.result.retries == 2
    assert run.result.requests == 1  # only answered requests count
    assert len(clock.sleeps) == 2


async def test_connection_errors_until_give_up_name_the_error() -> None:
    fake = FakeTransport(default=RetriableAPIError("connection error: ClientConnectorError: refused"))
    run = make_run(fake, max_attempts=2)
    await run.send(chunk(1))
    assert counts(run) == (0, 0, 1)
    assert run.result.failures[0].reason == (
        "connection error: ClientConnectorError: refused (gave up after 2 attempts)"
    )


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
    run = make_run(fake)
    await run.send(chunk(8))
    assert counts(run) == (8 - len(poison), len(poison), 0)
    assert sorted((r.key, r.reason) for r in run.result.rejections) == sorted(
        (key, f"Heap refused the record: HTTP 400: Bad request: invalid identity {key}") for key in poison
    )
    delivered = Counter(item["identity"] for item in fake.delivered())
    assert delivered == {f"u{i}": 1 for i in range(8) if f"u{i}" not in poison}
    assert run.result.retries == 0


@pytest.mark.parametrize("status", [400, 413, 422])
async def test_refused_single_record_is_rejected(status: int) -> None:
    fake = FakeTransport({USERS: [response(status, "")]})
    run = make_run(fake)
    await run.send(chunk(1))
    assert counts(run) == (0, 1, 0)
    assert run.result.rejections[0].reason == f"Heap refused the record: HTTP {status}: no message"


async def test_413_splits_the_batch() -> None:
    fake = FakeTransport({USERS: [413]})
    run = make_run(fake)
    await run.send(chunk(6))
    assert counts(run) == (6, 0, 0)
    assert [len(r.items()) for r in fake.requests] == [6, 3, 3]


async def test_halves_of_a_split_are_retried_on_their_own() -> None:
    fake = FakeTransport({USERS: [400, 500, 200, 200]})
    run = make_run(fake)
    await run.send(chunk(4))
    assert counts(run) == (4, 0, 0)
    assert run.result.retries == 1
    assert Counter(item["identity"] for item in fake.delivered()) == {f"u{i}": 1 for i in range(4)}


@pytest.mark.parametrize("status", [401, 403, 404])
async def test_fatal_status_fails_the_chunk_and_aborts_later_ones(status: int) -> None:
    fake = FakeTransport({USERS: [response(status, "Unauthorized")]})
    abort: dict[str, str] = {}
    run = make_run(fake, abort=abort)
    await run.send(chunk(3))
    assert counts(run) == (0, 0, 3)
    assert run.result.retries == 0
    assert {f.reason for f in run.result.failures} == {f"HTTP {status}: Unauthorized"}
    assert abort == {"reason": f"Heap refused a request with HTTP {status}: Unauthorized"}

    await run.send(chunk(2, start=3))
    assert counts(run) == (0, 0, 5)
    assert len(fake.requests) == 1  # the later chunk was never sent
    assert [(f.key, f.reason) for f in run.result.failures[3:]] == [
        ("u3", f"not sent: Heap refused a request with HTTP {status}: Unauthorized"),
        ("u4", f"not sent: Heap refused a request with HTTP {status}: Unauthorized"),
    ]


async def test_abort_is_shared_across_syncs() -> None:
    abort: dict[str, str] = {}
    first = make_run(FakeTransport({USERS: [401]}), abort=abort)
    second_heap = FakeTransport()
    second = make_run(second_heap, abort=abort)
    await first.send(chunk(1))
    await second.send(chunk(2))
    assert counts(second) == (0, 0, 2)
    assert second_heap.requests == []


async def test_abort_during_backoff_stops_the_retry() -> None:
    abort: dict[str, str] = {}
    clock = FakeClock()

    class AbortingClock(FakeClock):
        async def sleep(self, seconds: float) -> None:
            abort["reason"] = "another request got 401"
            await clock.sleep(seconds)

    fake = FakeTransport({USERS: [500]})
    run = make_run(fake, clock=AbortingClock(), abort=abort)
    await run.send(chunk(2))
    assert counts(run) == (0, 0, 2)
    assert len(fake.requests) == 1
    assert run.result.failures[0].reason == "not sent: another request got 401"


async def test_events_go_to_track_and_are_admitted_by_identity() -> None:
    clock = FakeClock(start=0.0)
    limiter = EventRateLimiter(per_app=100, per_identity=3, clock=clock)
    fake = FakeTransport()
    run = make_run(fake, obj="event", clock=clock, limiter=limiter)
    await run.send(chunk(3, identities=["ann", "ann", "bob"]))
    await run.send(chunk(2, start=3, identities=["ann", "ann"]))
    assert [r.path for r in fake.requests] == [TRACK, TRACK]
    assert fake.requests[0].json()["events"] == [record(0), record(1), record(2)]
    assert clock.sleeps == [60.0]  # ann already has 2 of her 3 this minute; 2 more must wait
    assert counts(run) == (5, 0, 0)


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

    async def scenario() -> _SyncRun:
        run = make_run(fake, max_attempts=3)
        await run.send(chunk(n))
        return run

    run = asyncio.run(scenario())
    sent, rejected, failed = counts(run)
    assert sent + rejected + failed == n
    rejected_keys = [r.key for r in run.result.rejections]
    failed_keys = [f.key for f in run.result.failures]
    delivered = [item["identity"] for item in fake.delivered()]
    assert len(rejected_keys) == rejected
    assert len(failed_keys) == failed
    assert len(delivered) == sent
    everyone = Counter(rejected_keys) + Counter(failed_keys) + Counter(delivered)
    assert everyone == {f"u{i}": 1 for i in range(n)}
    assert set(rejected_keys) <= poison
    assert not (set(delivered) & poison)


# --- (b) the real aiohttp transport against canned answers ---------------------------------------


class _Response(aiohttp.ClientResponse):
    """aioresponses 0.7.9 does not pass the ``stream_writer`` that aiohttp 3.14 requires
    (pnuckowski/aioresponses#289); give it one that says the upload is done."""

    def __init__(self, method: str, url: URL, **kwargs: Any) -> None:
        kwargs.setdefault("stream_writer", SimpleNamespace(output_size=0))
        super().__init__(method, url, **kwargs)


class Mock(aioresponses):
    """aioresponses with the aiohttp 3.14 shim on every canned answer."""

    def add(self, url: Any, method: str = "GET", *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("response_class", _Response)
        super().add(url, method, *args, **kwargs)


def transport() -> AiohttpTransport:
    return AiohttpTransport(BASE_URL, concurrency=2, timeout=5)


async def test_aiohttp_500_then_200_is_retried() -> None:
    with Mock() as mock:
        mock.post(BASE_URL + USERS, status=500, body="oops")
        mock.post(BASE_URL + USERS, status=200)
        async with transport() as http:
            run = make_run(http)
            await run.send(chunk(3))
    assert counts(run) == (3, 0, 0)
    assert (run.result.requests, run.result.retries) == (2, 1)


async def test_aiohttp_request_body_is_exactly_the_bulk_json() -> None:
    with Mock() as mock:
        mock.post(BASE_URL + USERS, status=200)
        async with transport() as http:
            run = make_run(http)
            await run.send(chunk(2))
        (call,) = mock.requests[("POST", URL(BASE_URL + USERS))]
    body = call.kwargs["data"]
    assert isinstance(body, bytes)
    assert json.loads(body) == {"app_id": APP_ID, "users": [record(0), record(1)]}


async def test_aiohttp_timeout_is_retried() -> None:
    with Mock() as mock:
        mock.post(BASE_URL + USERS, exception=TimeoutError())
        mock.post(BASE_URL + USERS, status=204)
        async with transport() as http:
            run = make_run(http)
            await run.send(chunk(2))
    assert counts(run) == (2, 0, 0)
    assert run.result.retries == 1


@pytest.mark.parametrize(
    ("exception", "message"),
    [
        pytest.param(TimeoutError(), "no answer from Heap within 5 s", id="timeout"),
        pytest.param(
            aiohttp.ClientConnectionError("refused"),
            "connection error: ClientConnectionError: refused",
            id="connection",
        ),
        pytest.param(
            aiohttp.ServerDisconnectedError(), "connection error: ServerDisconnectedError", id="disconnected"
        ),
    ],
)
async def test_aiohttp_errors_become_retriable(exception: BaseException, message: str) -> None:
    with Mock() as mock:
        mock.post(BASE_URL + USERS, exception=exception)
        async with transport() as http:
            with pytest.raises(RetriableAPIError) as info:
                await http.post(USERS, b"{}")
    assert str(info.value).startswith(message)


async def test_aiohttp_connection_errors_until_give_up() -> None:
    with Mock() as mock:
        for _ in range(3):
            mock.post(BASE_URL + USERS, exception=aiohttp.ClientConnectionError("refused"))
        async with transport() as http:
            run = make_run(http, max_attempts=3)
            await run.send(chunk(2))
    assert counts(run) == (0, 0, 2)
    assert run.result.failures[0].reason == (
        "connection error: ClientConnectionError: refused (gave up after 3 attempts)"
    )


async def test_aiohttp_response_carries_status_text_and_retry_after() -> None:
    with Mock() as mock:
        mock.post(BASE_URL + TRACK, status=429, body="Too many", headers={"Retry-After": "12"})
        async with transport() as http:
            answer = await http.post(TRACK, b"{}")
    assert (answer.status, answer.text, answer.retry_after) == (429, "Too many", "12")


async def test_aiohttp_transport_cannot_be_reused_after_close() -> None:
    # The session opens lazily at the first request; after the context ends it stays closed.
    async with transport() as closed:
        pass
    with pytest.raises(RuntimeError, match="closed"):
        await closed.post(USERS, b"{}")
