"""The real aiohttp transport against canned answers (aioresponses), driven through the sender."""

from __future__ import annotations

import json
import random
import socket
from types import SimpleNamespace
from typing import Any

import aiohttp
import pyarrow as pa
import pytest
from aioresponses import aioresponses
from yarl import URL

from heap_dbt import heap, sql
from heap_dbt.bodies import Chunk
from heap_dbt.errors import RetriableAPIError
from heap_dbt.sender import Delivery, Sender
from heap_dbt.transport import AiohttpTransport
from tests.fakes import FakeClock

APP_ID = "1234567890"
USERS = "/api/add_user_properties"
TRACK = "/api/track"
BASE_URL = "http://heap.test"


def record(i: int) -> dict[str, Any]:
    return {"identity": f"u{i}", "properties": {"n": i, "text": f'say "{i}"'}}


def chunk(n: int) -> Chunk:
    records = [record(i) for i in range(n)]
    return Chunk(
        pa.array([json.dumps(r) + sql.SEPARATOR for r in records], pa.string()),
        pa.array([r["identity"] for r in records], pa.string()),
        None,
    )


async def send(http: AiohttpTransport, part: Chunk, *, max_attempts: int = 6) -> Delivery:
    sender = Sender(
        http, clock=FakeClock(), policy=heap.RetryPolicy(max_attempts=max_attempts), rng=random.Random(0)
    )
    return await sender.send(heap.Frame.of("user", APP_ID), part)


def counts(delivery: Delivery) -> tuple[int, int, int]:
    return delivery.sent, len(delivery.rejected), len(delivery.failed)


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
            delivery = await send(http, chunk(3))
    assert counts(delivery) == (3, 0, 0)
    assert (delivery.requests, delivery.retries) == (2, 1)


async def test_aiohttp_request_body_is_exactly_the_bulk_json() -> None:
    with Mock() as mock:
        mock.post(BASE_URL + USERS, status=200)
        async with transport() as http:
            await send(http, chunk(2))
        (call,) = mock.requests[("POST", URL(BASE_URL + USERS))]
    body = call.kwargs["data"]
    assert isinstance(body, bytes)
    assert json.loads(body) == {"app_id": APP_ID, "users": [record(0), record(1)]}


async def test_aiohttp_timeout_is_retried() -> None:
    with Mock() as mock:
        mock.post(BASE_URL + USERS, exception=TimeoutError())
        mock.post(BASE_URL + USERS, status=204)
        async with transport() as http:
            delivery = await send(http, chunk(2))
    assert counts(delivery) == (2, 0, 0)
    assert delivery.retries == 1


@pytest.mark.parametrize(
    ("exception", "message"),
    [
        pytest.param(TimeoutError(), f"no answer from {BASE_URL} within 5 s", id="timeout"),
        pytest.param(
            aiohttp.ClientConnectionError("refused"),
            f"connection to {BASE_URL} failed: ClientConnectionError: refused",
            id="connection",
        ),
        pytest.param(
            aiohttp.ServerDisconnectedError(),
            f"connection to {BASE_URL} failed: ServerDisconnectedError",
            id="disconnected",
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


async def test_a_refused_connection_names_the_url_as_given() -> None:
    """aiohttp's text says ``localhost:<port> ssl:default``; the user wrote an http URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    url = f"http://127.0.0.1:{port}"
    async with AiohttpTransport(url, concurrency=1, timeout=5) as http:
        with pytest.raises(RetriableAPIError) as info:
            await http.post(USERS, b"{}")
    assert str(info.value) == f"cannot connect to {url}: Connection refused"


async def test_aiohttp_connection_errors_until_give_up() -> None:
    with Mock() as mock:
        for _ in range(3):
            mock.post(BASE_URL + USERS, exception=aiohttp.ClientConnectionError("refused"))
        async with transport() as http:
            delivery = await send(http, chunk(2), max_attempts=3)
    assert counts(delivery) == (0, 0, 2)
    assert delivery.failed[0].reason == (
        f"connection to {BASE_URL} failed: ClientConnectionError: refused (gave up after 3 attempts)"
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
