"""Tests for the Heap emulator: validation, stored state, faults, control endpoints and CLI."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from heap_dbt.emulator import (
    HeapEmulator,
    KeyedRateWindow,
    RunningEmulator,
    main,
    run_in_thread,
    serve,
    summarize,
)
from heap_dbt.emulator_payloads import (
    ACCOUNTS_PATH,
    TRACK_PATH,
    USERS_PATH,
    PayloadRejectedError,
    parse_request,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def post(
    url: str,
    body: Any,
    *,
    raw: bytes | None = None,
    content_type: str = "application/json",
    timeout: float = 5.0,
) -> tuple[int, str, dict[str, str]]:
    """POST and return (status, body text, headers), without raising on 4xx/5xx."""
    data = raw if raw is not None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": content_type}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read().decode(), dict(exc.headers)


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


@pytest.fixture
def heap() -> Iterator[RunningEmulator]:
    with run_in_thread() as running:
        yield running


def user(identity: str = "a@x.com", **properties: Any) -> dict[str, Any]:
    return {"identity": identity, "properties": properties or {"plan": "pro"}}


def account(account_id: str = "acme-co", **properties: Any) -> dict[str, Any]:
    return {"account_id": account_id, "properties": properties or {"seats": 12}}


def event(identity: str = "a@x.com", **fields: Any) -> dict[str, Any]:
    return {
        "identity": identity,
        "event": "Purchase",
        "timestamp": "2026-11-01T10:00:00.123Z",
        **fields,
    }


def assert_nothing_stored(state: dict[str, Any]) -> None:
    assert (state["users"], state["accounts"], state["events"], state["records"]) == (
        {},
        {},
        [],
        {},
    )


# ---- accepted payloads -------------------------------------------------------------------------


def test_bulk_user_properties_are_stored(heap: RunningEmulator) -> None:
    body = {
        "app_id": "11",
        "users": [user("a@x.com", plan="pro", seats=3), user("b@x.com", ltv=12.5)],
    }

    status, text, _ = post(heap.url + USERS_PATH, body)

    assert (status, text) == (200, "")
    state = heap.emulator.snapshot()
    assert state["users"] == {"11": {"a@x.com": {"plan": "pro", "seats": 3}, "b@x.com": {"ltv": 12.5}}}
    assert state["records"] == {USERS_PATH: 2}
    assert state["requests"] == {USERS_PATH: 1}
    assert state["status_counts"] == {"200": 1}


def test_bulk_account_properties_are_stored(heap: RunningEmulator) -> None:
    body = {"app_id": 11, "accounts": [account("acme-co", plan="pro"), account("globex", seats=9)]}

    status, _, _ = post(heap.url + ACCOUNTS_PATH, body)

    assert status == 200
    assert heap.emulator.snapshot()["accounts"] == {
        "11": {"acme-co": {"plan": "pro"}, "globex": {"seats": 9}}
    }


def test_bulk_track_events_are_stored(heap: RunningEmulator) -> None:
    body = {
        "app_id": "11",
        "events": [
            event("a@x.com", idempotency_key="k1", properties={"amount_usd": 49.0, "product": "Seat"}),
            {"identity": "b@x.com", "event": "Login"},
        ],
    }

    status, _, _ = post(heap.url + TRACK_PATH, body)

    assert status == 200
    assert heap.emulator.snapshot()["events"] == [
        {
            "app_id": "11",
            "identity": "a@x.com",
            "event": "Purchase",
            "timestamp": "2026-11-01T10:00:00.123Z",
            "idempotency_key": "k1",
            "properties": {"amount_usd": 49.0, "product": "Seat"},
        },
        {
            "app_id": "11",
            "identity": "b@x.com",
            "event": "Login",
            "timestamp": None,
            "idempotency_key": None,
            "properties": {},
        },
    ]


@pytest.mark.parametrize(
    ("path", "body", "state_key", "expected"),
    [
        pytest.param(
            USERS_PATH,
            {"app_id": "1", "identity": "a@x.com", "properties": {"plan": "pro"}},
            "users",
            {"1": {"a@x.com": {"plan": "pro"}}},
            id="single-user",
        ),
        pytest.param(
            ACCOUNTS_PATH,
            {"app_id": "1", "account_id": "acme", "properties": {"seats": 3}},
            "accounts",
            {"1": {"acme": {"seats": 3}}},
            id="single-account",
        ),
        pytest.param(
            TRACK_PATH,
            {"app_id": "1", "identity": "a@x.com", "event": "Login", "session_id": "s1"},
            "events",
            [
                {
                    "app_id": "1",
                    "identity": "a@x.com",
                    "event": "Login",
                    "timestamp": None,
                    "idempotency_key": None,
                    "properties": {},
                }
            ],
            id="single-track",
        ),
    ],
)
def test_single_forms_are_stored(
    heap: RunningEmulator, path: str, body: dict[str, Any], state_key: str, expected: Any
) -> None:
    status, _, _ = post(heap.url + path, body)

    assert status == 200
    assert heap.emulator.snapshot()[state_key] == expected


def test_a_full_batch_of_1000_is_accepted(heap: RunningEmulator) -> None:
    body = {"app_id": "1", "users": [user(f"u{i}@x.com") for i in range(1000)]}

    assert post(heap.url + USERS_PATH, body)[0] == 200
    assert len(heap.emulator.snapshot()["users"]["1"]) == 1000


# ---- validation --------------------------------------------------------------------------------

INVALID = [
    # (id, path, body, expected reason)
    ("body-not-object", USERS_PATH, [1, 2], "body: must be a JSON object"),
    ("app-id-missing", USERS_PATH, {"users": [user()]}, "app_id: required, a non-empty string"),
    (
        "app-id-empty",
        USERS_PATH,
        {"app_id": "", "users": [user()]},
        "app_id: required, a non-empty string",
    ),
    (
        "app-id-bool",
        USERS_PATH,
        {"app_id": True, "users": [user()]},
        "app_id: required, a non-empty string",
    ),
    (
        "app-id-float",
        USERS_PATH,
        {"app_id": 1.5, "users": [user()]},
        "app_id: required, a non-empty string",
    ),
    ("users-missing", USERS_PATH, {"app_id": "1"}, "users: required, a list of 1..1000 items"),
    ("users-not-list", USERS_PATH, {"app_id": "1", "users": {"a": 1}}, "users: must be a list"),
    (
        "users-empty",
        USERS_PATH,
        {"app_id": "1", "users": []},
        "users: has 0 items, must have 1..1000",
    ),
    (
        "users-1001",
        USERS_PATH,
        {"app_id": "1", "users": [user(f"u{i}") for i in range(1001)]},
        "users: has 1001 items, must have 1..1000",
    ),
    (
        "user-not-object",
        USERS_PATH,
        {"app_id": "1", "users": [user(), "x"]},
        "users[1]: must be a JSON object",
    ),
    (
        "identity-missing",
        USERS_PATH,
        {"app_id": "1", "users": [user(), {"properties": {}}]},
        "users[1].identity: required, a non-empty string",
    ),
    (
        "identity-empty",
        USERS_PATH,
        {"app_id": "1", "users": [user("")]},
        "users[0].identity: required, a non-empty string",
    ),
    (
        "identity-int",
        USERS_PATH,
        {"app_id": "1", "users": [user(42)]},  # type: ignore[arg-type]
        "users[0].identity: required, a non-empty string",
    ),
    (
        "identity-256-chars",
        USERS_PATH,
        {"app_id": "1", "users": [user("a" * 256)]},
        "users[0].identity: 256 characters, limit is 255",
    ),
    (
        "properties-not-object",
        USERS_PATH,
        {"app_id": "1", "users": [{"identity": "a", "properties": [1]}]},
        "users[0].properties: must be a JSON object",
    ),
    (
        "reserved-ID",
        USERS_PATH,
        {"app_id": "1", "users": [user(), user(), user(), user("d", ID="7")]},
        "users[3].properties.ID: reserved property name",
    ),
    (
        "reserved-iD",
        USERS_PATH,
        {"app_id": "1", "users": [user(iD=1)]},
        "users[0].properties.iD: reserved",
    ),
    (
        "empty-key",
        USERS_PATH,
        {"app_id": "1", "users": [{"identity": "a", "properties": {"": 1}}]},
        "users[0].properties: empty property name",
    ),
    (
        "key-1024-chars",
        USERS_PATH,
        {"app_id": "1", "users": [{"identity": "a", "properties": {"k" * 1024: 1}}]},
        "property name is 1024 characters, limit is 1023",
    ),
    (
        "value-1024-chars",
        USERS_PATH,
        {"app_id": "1", "users": [user(note="v" * 1024)]},
        "users[0].properties.note: value is 1024 characters, limit is 1023",
    ),
    (
        "value-null",
        USERS_PATH,
        {"app_id": "1", "users": [user(x=None)]},
        "users[0].properties.x: null value",
    ),
    (
        "value-bool",
        USERS_PATH,
        {"app_id": "1", "users": [user(x=True)]},
        "users[0].properties.x: bool value",
    ),
    (
        "value-list",
        USERS_PATH,
        {"app_id": "1", "users": [user(x=["a"])]},
        "users[0].properties.x: list value",
    ),
    (
        "value-object",
        USERS_PATH,
        {"app_id": "1", "users": [user(x={"a": 1})]},
        "users[0].properties.x: dict value",
    ),
    (
        "account-id-int",
        ACCOUNTS_PATH,
        {"app_id": "1", "accounts": [account(7)]},  # type: ignore[arg-type]
        "accounts[0].account_id: required, a non-empty string",
    ),
    (
        "account-id-256-chars",
        ACCOUNTS_PATH,
        {"app_id": "1", "accounts": [account("a" * 256)]},
        "accounts[0].account_id: 256 characters, limit is 255",
    ),
    ("accounts-empty", ACCOUNTS_PATH, {"app_id": "1", "accounts": []}, "accounts: has 0 items"),
    (
        "account-reserved-id",
        ACCOUNTS_PATH,
        {"app_id": "1", "accounts": [account(id=1)]},
        "accounts[0].properties.id: reserved property name",
    ),
    ("events-missing", TRACK_PATH, {"app_id": "1"}, "events: required"),
    (
        "event-name-missing",
        TRACK_PATH,
        {"app_id": "1", "events": [event(), {"identity": "a"}]},
        "events[1].event: required, a non-empty string",
    ),
    (
        "event-name-1025-chars",
        TRACK_PATH,
        {"app_id": "1", "events": [event(event="e" * 1025)]},
        "events[0].event: 1025 characters, limit is 1024",
    ),
    (
        "event-identity-missing",
        TRACK_PATH,
        {"app_id": "1", "events": [{"event": "E"}]},
        "events[0].identity: required, a non-empty string",
    ),
    (
        "event-user-id",
        TRACK_PATH,
        {"app_id": "1", "events": [event(user_id="123")]},
        "events[0].user_id: not supported",
    ),
    (
        "idempotency-key-empty",
        TRACK_PATH,
        {"app_id": "1", "events": [event(idempotency_key="")]},
        "events[0].idempotency_key: must be a non-empty string",
    ),
    (
        "idempotency-key-int",
        TRACK_PATH,
        {"app_id": "1", "events": [event(idempotency_key=5)]},
        "events[0].idempotency_key: must be a non-empty string",
    ),
    (
        "timestamp-microseconds",
        TRACK_PATH,
        {"app_id": "1", "events": [event(timestamp="2026-11-01T10:00:00.123456Z")]},
        "events[0].timestamp: '2026-11-01T10:00:00.123456Z' has sub-millisecond precision",
    ),
    (
        "timestamp-naive",
        TRACK_PATH,
        {"app_id": "1", "events": [event(timestamp="2026-11-01T10:00:00")]},
        "events[0].timestamp: '2026-11-01T10:00:00' is not ISO 8601 with a UTC offset",
    ),
    (
        "timestamp-date-only",
        TRACK_PATH,
        {"app_id": "1", "events": [event(timestamp="2026-11-01")]},
        "is not ISO 8601 with a UTC offset",
    ),
    (
        "timestamp-epoch",
        TRACK_PATH,
        {"app_id": "1", "events": [event(timestamp=1793527200000)]},
        "events[0].timestamp: must be an ISO 8601 string",
    ),
    (
        "timestamp-month-13",
        TRACK_PATH,
        {"app_id": "1", "events": [event(timestamp="2026-13-01T10:00:00Z")]},
        "events[0].timestamp: '2026-13-01T10:00:00Z' is not a valid date-time",
    ),
    (
        "event-property-list",
        TRACK_PATH,
        {"app_id": "1", "events": [event(properties={"flags": ["a"]})]},
        "events[0].properties.flags: list value",
    ),
    (
        "single-user-reserved",
        USERS_PATH,
        {"app_id": "1", "identity": "a", "properties": {"Id": 1}},
        "properties.Id: reserved property name",
    ),
    ("single-track-no-event", TRACK_PATH, {"app_id": "1", "identity": "a"}, "event: required"),
]


@pytest.mark.parametrize(
    ("path", "body", "reason"), [pytest.param(*case[1:], id=case[0]) for case in INVALID]
)
def test_invalid_payload_is_rejected_and_nothing_stored(
    heap: RunningEmulator, path: str, body: Any, reason: str
) -> None:
    status, text, _ = post(heap.url + path, body)

    assert status == 400
    assert reason in text
    state = heap.emulator.snapshot()
    assert_nothing_stored(state)
    assert state["status_counts"] == {"400": 1}


def test_one_bad_item_rejects_the_whole_batch(heap: RunningEmulator) -> None:
    good = [event(f"u{i}@x.com", idempotency_key=f"k{i}") for i in range(5)]
    body = {"app_id": "1", "events": [*good, event(properties={"ok": None})]}

    status, text, _ = post(heap.url + TRACK_PATH, body)

    assert (status, text) == (
        400,
        "events[5].properties.ok: null value, must be a string or a number",
    )
    assert_nothing_stored(heap.emulator.snapshot())
    # The keys of the rejected batch were not remembered: resending the good events stores them.
    assert post(heap.url + TRACK_PATH, {"app_id": "1", "events": good})[0] == 200
    assert len(heap.emulator.snapshot()["events"]) == 5


@pytest.mark.parametrize(
    ("raw", "content_type", "reason"),
    [
        pytest.param(b"{not json", "application/json", "body: invalid JSON", id="malformed"),
        pytest.param(b'{"app_id": NaN}', "application/json", "body: invalid JSON", id="nan"),
        pytest.param(b"\xff\xfe", "application/json", "body: invalid JSON", id="not-utf8"),
        pytest.param(b"", "application/json", "body: invalid JSON", id="empty"),
        pytest.param(
            b'{"app_id": "1", "users": [{"identity": "a", "properties": {"plan": "x", "plan": "y"}}]}',
            "application/json",
            "body: invalid JSON (key 'plan' appears twice in one object)",
            id="duplicate-property-key",
        ),
        pytest.param(
            b'{"app_id": "1", "app_id": "1", "users": []}',
            "application/json",
            "body: invalid JSON (key 'app_id' appears twice in one object)",
            id="duplicate-top-level-key",
        ),
        pytest.param(b'{"app_id": "1", "users": []}', "text/plain", "Content-Type", id="wrong-content-type"),
    ],
)
def test_undecodable_body_is_rejected(
    heap: RunningEmulator, raw: bytes, content_type: str, reason: str
) -> None:
    status, text, _ = post(heap.url + USERS_PATH, None, raw=raw, content_type=content_type)

    assert status == 400
    assert reason in text


@pytest.mark.parametrize(
    "timestamp",
    [
        "2026-11-01T10:00:00Z",
        "2026-11-01T10:00:00.1Z",
        "2026-11-01T10:00:00.123Z",
        "2026-11-01T10:00:00+00:00",
        "2026-11-01T10:00:00.5-05:30",
        "2026-11-01T10:00:00+0200",
    ],
)
def test_iso_timestamps_with_offset_and_up_to_milliseconds_are_valid(timestamp: str) -> None:
    parsed = parse_request(TRACK_PATH, {"app_id": "1", "events": [event(timestamp=timestamp)]})

    assert parsed.items[0].timestamp == timestamp  # type: ignore[union-attr]


def test_parse_request_names_the_first_bad_item() -> None:
    body = {"app_id": "1", "users": [user(), user(""), user(ID=1)]}

    with pytest.raises(PayloadRejectedError, match=r"^users\[1\]\.identity: "):
        parse_request(USERS_PATH, body)


# ---- stored semantics --------------------------------------------------------------------------


def test_properties_merge_last_write_wins(heap: RunningEmulator) -> None:
    post(heap.url + USERS_PATH, {"app_id": "1", "users": [user("a", plan="free", seats=1)]})
    post(
        heap.url + USERS_PATH,
        {"app_id": "1", "users": [user("a", plan="pro", ltv=9.5), user("a", ltv=10)]},
    )
    post(heap.url + ACCOUNTS_PATH, {"app_id": "1", "accounts": [account("acme", plan="free", mrr=0)]})
    post(heap.url + ACCOUNTS_PATH, {"app_id": "1", "accounts": [account("acme", plan="pro")]})
    post(heap.url + USERS_PATH, {"app_id": "2", "users": [user("a", plan="other-env")]})

    state = heap.emulator.snapshot()
    assert state["users"] == {
        "1": {"a": {"plan": "pro", "seats": 1, "ltv": 10}},
        "2": {"a": {"plan": "other-env"}},
    }
    assert state["accounts"] == {"1": {"acme": {"plan": "pro", "mrr": 0}}}


def test_events_dedupe_by_idempotency_key_first_write_wins(heap: RunningEmulator) -> None:
    first = event("a", idempotency_key="ord_0001", properties={"amount_usd": 10})
    corrected = event("a", idempotency_key="ord_0001", properties={"amount_usd": 99})
    post(
        heap.url + TRACK_PATH,
        {"app_id": "1", "events": [first, event("a", idempotency_key="ord_0002")]},
    )
    post(heap.url + TRACK_PATH, {"app_id": "1", "events": [corrected, corrected]})
    post(heap.url + TRACK_PATH, {"app_id": "2", "events": [corrected]})  # other environment: not a duplicate
    post(heap.url + TRACK_PATH, {"app_id": "1", "events": [event("a"), event("a")]})  # no key: never deduped

    state = heap.emulator.snapshot()
    assert [(e["app_id"], e["idempotency_key"], e["properties"]) for e in state["events"]] == [
        ("1", "ord_0001", {"amount_usd": 10}),
        ("1", "ord_0002", {}),
        ("2", "ord_0001", {"amount_usd": 99}),
        ("1", None, {}),
        ("1", None, {}),
    ]
    assert state["duplicate_events"] == 2
    assert state["records"] == {TRACK_PATH: 7}
    assert state["status_counts"] == {"200": 4}


# ---- fault injection ---------------------------------------------------------------------------


def test_scripted_statuses_are_answered_in_order_before_validation() -> None:
    script = [500, (503, 7), (429, "2"), {"status": 429}, [502, 3]]
    with run_in_thread(script=script) as heap:
        answers = [post(heap.url + USERS_PATH, {"not": "valid"}) for _ in range(5)]
        final = post(heap.url + USERS_PATH, {"app_id": "1", "users": [user()]})
        state = heap.emulator.snapshot()

    assert [(status, headers.get("Retry-After")) for status, _, headers in answers] == [
        (500, None),
        (503, "7"),
        (429, "2"),
        (429, None),
        (502, None),
    ]
    assert final[0] == 200
    assert state["status_counts"] == {"500": 1, "503": 1, "429": 2, "502": 1, "200": 1}
    assert state["records"] == {USERS_PATH: 1}
    assert state["config"]["script"] == []


def test_scripted_failure_stores_nothing(heap: RunningEmulator) -> None:
    heap.emulator.configure(script=[503])

    assert post(heap.url + USERS_PATH, {"app_id": "1", "users": [user()]})[0] == 503
    assert_nothing_stored(heap.emulator.snapshot())


def test_fail_rate_is_random_but_seedable() -> None:
    def statuses(seed: int) -> list[int]:
        with run_in_thread(fail_rate=0.5, seed=seed) as heap:
            return [post(heap.url + USERS_PATH, {"app_id": "1", "users": [user()]})[0] for _ in range(20)]

    first = statuses(7)
    assert first == statuses(7)
    assert set(first) == {200, 500}


def test_fail_rate_one_always_fails(heap: RunningEmulator) -> None:
    heap.emulator.configure(fail_rate=1.0)

    assert [post(heap.url + USERS_PATH, {"app_id": "1", "users": [user()]})[0] for _ in range(3)] == [500] * 3
    assert_nothing_stored(heap.emulator.snapshot())


def test_delay_makes_a_short_client_timeout_fire(heap: RunningEmulator) -> None:
    heap.emulator.configure(delay=0.5)

    with pytest.raises((TimeoutError, urllib.error.URLError)):
        post(heap.url + USERS_PATH, {"app_id": "1", "users": [user()]}, timeout=0.1)


def test_body_over_max_body_bytes_gets_413(heap: RunningEmulator) -> None:
    heap.emulator.configure(max_body_bytes=200)
    small = {"app_id": "1", "users": [user()]}
    large = {"app_id": "1", "users": [user(f"user{i}@example.com") for i in range(20)]}

    assert post(heap.url + USERS_PATH, large)[0] == 413
    assert post(heap.url + USERS_PATH, small)[0] == 200
    assert heap.emulator.snapshot()["records"] == {USERS_PATH: 1}


def test_dropped_connection_gets_no_answer_and_stores_nothing(heap: RunningEmulator) -> None:
    heap.emulator.configure(drop_connection_next=1)
    body = {"app_id": "1", "users": [user()]}

    with pytest.raises((ConnectionError, urllib.error.URLError)):
        post(heap.url + USERS_PATH, body)
    assert_nothing_stored(heap.emulator.snapshot())
    assert post(heap.url + USERS_PATH, body)[0] == 200


def test_dropped_response_stores_the_request_but_never_answers(heap: RunningEmulator) -> None:
    heap.emulator.configure(drop_response_next=1)
    body = {"app_id": "1", "events": [event(idempotency_key="k1")]}

    with pytest.raises((ConnectionError, urllib.error.URLError)):
        post(heap.url + TRACK_PATH, body)
    assert post(heap.url + TRACK_PATH, body)[0] == 200  # the client's retry

    state = heap.emulator.snapshot()
    assert len(state["events"]) == 1
    assert state["duplicate_events"] == 1
    assert [entry["status"] for entry in state["request_log"]] == [None, 200]


def test_random_fault_rates_are_seedable_and_each_gives_its_own_failure() -> None:
    body = {"app_id": "1", "events": [event(idempotency_key="k1")]}

    def outcomes(seed: int, **rates: float) -> list[int | None]:
        with run_in_thread(seed=seed, **rates) as heap:
            answers: list[int | None] = []
            for _ in range(30):
                try:
                    answers.append(post(heap.url + TRACK_PATH, body)[0])
                except (ConnectionError, urllib.error.URLError):
                    answers.append(None)
            return answers

    assert set(outcomes(3, throttle_rate=0.5)) == {200, 429}
    dropped = outcomes(3, drop_rate=0.5)
    assert set(dropped) == {200, None} and dropped == outcomes(3, drop_rate=0.5)
    assert set(outcomes(3, drop_response_rate=0.5)) == {200, None}


def test_throttle_rate_one_answers_429_without_retry_after_and_stores_nothing(heap: RunningEmulator) -> None:
    heap.emulator.configure(throttle_rate=1.0)

    status, text, headers = post(heap.url + USERS_PATH, {"app_id": "1", "users": [user()]})

    assert (status, "Retry-After" in headers) == (429, False)
    assert "throttle_rate" in text
    assert_nothing_stored(heap.emulator.snapshot())


def test_drop_rate_one_closes_every_connection_and_stores_nothing(heap: RunningEmulator) -> None:
    heap.emulator.configure(drop_rate=1.0)

    for _ in range(3):
        with pytest.raises((ConnectionError, urllib.error.URLError)):
            post(heap.url + TRACK_PATH, {"app_id": "1", "events": [event(idempotency_key="k1")]})
    state = heap.emulator.snapshot()
    assert_nothing_stored(state)
    assert [entry["status"] for entry in state["request_log"]] == [None] * 3


def test_drop_response_rate_one_stores_the_request_and_never_answers(heap: RunningEmulator) -> None:
    heap.emulator.configure(drop_response_rate=1.0)
    body = {"app_id": "1", "events": [event(idempotency_key="k1")]}

    for _ in range(2):
        with pytest.raises((ConnectionError, urllib.error.URLError)):
            post(heap.url + TRACK_PATH, body)
    state = heap.emulator.snapshot()
    assert len(state["events"]) == 1 and state["duplicate_events"] == 1


def test_an_outage_answers_503_to_everything_then_recovers_on_its_own() -> None:
    clock = FakeClock()
    with run_in_thread(time_fn=clock) as heap:
        body = {"app_id": "1", "users": [user()]}
        assert heap.emulator.configure(outage_seconds=10)["outage_seconds"] == 10
        during = [post(heap.url + USERS_PATH, body)[0] for _ in range(3)]
        clock.now += 9.5
        late = post(heap.url + USERS_PATH, body)[0]
        remaining = heap.emulator.snapshot()["config"]["outage_seconds"]
        clock.now += 0.5
        after = post(heap.url + USERS_PATH, body)[0]
        state = heap.emulator.snapshot()

    assert during == [503] * 3 and late == 503 and after == 200
    assert remaining == pytest.approx(0.5)
    assert state["outage_refused"] == 4
    assert state["config"]["outage_seconds"] == 0
    assert state["records"] == {USERS_PATH: 1}


def test_peak_in_flight_counts_requests_handled_at_once() -> None:
    import concurrent.futures

    with run_in_thread(delay=0.3) as heap:
        body = {"app_id": "1", "users": [user()]}
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            statuses = list(pool.map(lambda _: post(heap.url + USERS_PATH, body)[0], range(4)))
        parallel = heap.emulator.snapshot()["peak_in_flight"]
        heap.emulator.reset()
        post(heap.url + USERS_PATH, body)
        serial = heap.emulator.snapshot()["peak_in_flight"]

    assert statuses == [200] * 4
    assert (parallel, serial) == (4, 1)


def test_counts_are_the_requests_received_and_the_records_stored(heap: RunningEmulator) -> None:
    post(heap.url + USERS_PATH, {"app_id": "1", "users": [user("a"), user("b")]})
    heap.emulator.configure(script=[500])
    post(heap.url + USERS_PATH, {"app_id": "1", "users": [user("c")]})

    assert heap.emulator.counts() == {"requests": 2, "stored": 2}


def test_events_per_minute_limit_answers_429_until_the_window_slides() -> None:
    clock = FakeClock()
    with run_in_thread(events_per_minute=5, time_fn=clock) as heap:
        three = {"app_id": "1", "events": [event(f"u{i}") for i in range(3)]}
        first = post(heap.url + TRACK_PATH, three)
        clock.now += 20
        second = post(heap.url + TRACK_PATH, three)
        other_app = post(heap.url + TRACK_PATH, {**three, "app_id": "2"})
        clock.now += 40.5  # the first batch left the window
        third = post(heap.url + TRACK_PATH, three)
        users = post(heap.url + USERS_PATH, {"app_id": "1", "users": [user()] * 10})  # events only
        state = heap.emulator.snapshot()

    assert first[0] == 200
    assert (second[0], second[2].get("Retry-After")) == (429, "40")
    assert other_app[0] == 200
    assert third[0] == 200
    assert users[0] == 200
    assert len(state["events"]) == 9


def test_events_per_identity_limit_answers_429() -> None:
    clock = FakeClock()
    with run_in_thread(events_per_identity_per_minute=2, time_fn=clock) as heap:
        ok = post(heap.url + TRACK_PATH, {"app_id": "1", "events": [event("a"), event("a"), event("b")]})
        limited = post(heap.url + TRACK_PATH, {"app_id": "1", "events": [event("b"), event("a")]})
        other = post(heap.url + TRACK_PATH, {"app_id": "1", "events": [event("b")]})
        state = heap.emulator.snapshot()

    assert ok[0] == 200
    assert (limited[0], limited[2].get("Retry-After")) == (429, "60")
    assert other[0] == 200
    assert [e["identity"] for e in state["events"]] == ["a", "a", "b", "b"]


def test_sliding_window_reports_when_capacity_frees() -> None:
    window = KeyedRateWindow(10)
    window.add("app", 4, now=0.0)
    window.add("app", 6, now=30.0)

    assert window.retry_after("app", 0, now=31.0) is None
    assert window.retry_after("app", 4, now=31.0) == pytest.approx(29.0)
    assert window.retry_after("app", 5, now=31.0) == pytest.approx(59.0)
    assert window.retry_after("app", 4, now=60.0) is None
    assert window.retry_after("app", 11, now=0.0) == 60.0


def test_configure_rejects_unknown_keys_and_bad_values() -> None:
    emulator = HeapEmulator()

    for settings in (
        {"nope": 1},
        {"fail_rate": 2},
        {"delay": -1},
        {"script": [42]},
        {"events_per_minute": 0},
        {"drop_rate": 1.5},
        {"throttle_rate": -0.1},
        {"drop_response_rate": "half"},
        {"outage_seconds": -3},
    ):
        with pytest.raises(ValueError):
            emulator.configure(**settings)
    assert emulator.snapshot()["config"]["fail_rate"] == 0.0


# ---- control endpoints ---------------------------------------------------------------------------


def test_config_state_and_reset_endpoints(heap: RunningEmulator) -> None:
    config_url = heap.url + "/_emulator/config"

    assert post(config_url, {"fail_rate": 3})[0] == 400
    status, text, _ = post(
        config_url, {"script": [{"status": 503, "retry_after": 1}], "events_per_minute": 100}
    )
    assert status == 200
    assert json.loads(text)["script"] == [{"status": 503, "retry_after": "1"}]
    assert post(heap.url + USERS_PATH, {"app_id": "1", "users": [user()]})[:1] == (503,)
    assert post(heap.url + USERS_PATH, {"app_id": "1", "users": [user()]})[:1] == (200,)

    state = get_json(heap.url + "/_emulator/state")
    assert set(state) == {
        "users",
        "accounts",
        "events",
        "duplicate_events",
        "requests",
        "records",
        "status_counts",
        "request_log",
        "peak_in_flight",
        "outage_refused",
        "config",
        "time_scale",
    }
    assert state["users"] == {"1": {"a@x.com": {"plan": "pro"}}}
    assert state["config"]["events_per_minute"] == 100

    assert post(heap.url + "/_emulator/reset", {})[0] == 200
    state = get_json(heap.url + "/_emulator/state")
    assert_nothing_stored(state)
    assert (state["requests"], state["status_counts"], state["request_log"]) == ({}, {}, [])
    assert state["config"]["events_per_minute"] == 100  # reset keeps the configuration


@pytest.mark.asyncio
async def test_serve_runs_on_the_current_loop() -> None:
    async with serve() as heap, aiohttp.ClientSession() as session:
        async with session.post(heap.url + TRACK_PATH, json={"app_id": "1", "events": [event()]}) as response:
            assert response.status == 200
            assert await response.text() == ""
        async with session.get(heap.url + "/_emulator/state") as response:
            state = await response.json()
    assert len(state["events"]) == 1


@pytest.mark.asyncio
async def test_chunked_body_over_max_body_bytes_gets_413() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        body = json.dumps({"app_id": "1", "users": [user(f"u{i}") for i in range(50)]}).encode()
        for start in range(0, len(body), 100):
            yield body[start : start + 100]

    async with serve(max_body_bytes=500) as heap, aiohttp.ClientSession() as session:
        headers = {"Content-Type": "application/json"}
        async with session.post(heap.url + USERS_PATH, data=chunks(), headers=headers) as response:
            assert response.status == 413
    assert_nothing_stored(heap.emulator.snapshot())


# ---- state file and CLI --------------------------------------------------------------------------


def test_state_file_is_written_on_shutdown(tmp_path: Path) -> None:
    state_file = tmp_path / "heap_state.json"
    with run_in_thread(state_file=state_file) as heap:
        post(heap.url + USERS_PATH, {"app_id": "1", "users": [user()]})

    assert json.loads(state_file.read_text())["users"] == {"1": {"a@x.com": {"plan": "pro"}}}


def test_show_prints_a_summary(heap: RunningEmulator, capsys: pytest.CaptureFixture[str]) -> None:
    post(heap.url + USERS_PATH, {"app_id": "1", "users": [user(f"u{i}") for i in range(5)]})
    post(heap.url + TRACK_PATH, {"app_id": "1", "events": [event(idempotency_key="k")] * 2})

    assert main(["show", "--url", heap.url, "--limit", "2"]) == 0

    out = capsys.readouterr().out
    assert out.splitlines()[0] == "users: 5   accounts: 0   events: 1 (+1 duplicates ignored)"
    assert "[****] u1" in out  # app_ids are masked in the summary
    assert "u2" not in out
    assert "Purchase @ 2026-11-01T10:00:00.123Z" in out


def test_show_fails_cleanly_when_nothing_listens(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

    assert main(["show", "--url", f"http://127.0.0.1:{port}"]) == 1
    assert "Is the emulator running?" in capsys.readouterr().err


def test_summarize_an_empty_state() -> None:
    assert summarize(HeapEmulator().snapshot()) == (
        "users: 0   accounts: 0   events: 0 (+0 duplicates ignored)\nrequests: none\nstatuses: none"
    )


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("flags", "answer"),
    [((), 200), (("--throttle-rate", "1"), 429), (("--fail-rate", "1"), 500)],
    ids=["no-faults", "throttle-rate", "fail-rate"],
)
def test_cli_serves_until_sigterm_and_writes_the_state_file(
    tmp_path: Path, flags: tuple[str, ...], answer: int
) -> None:
    state_file = tmp_path / "state.json"
    process = subprocess.Popen(
        [sys.executable, "-m", "heap_dbt.emulator", "--port", "0", "--state-file", str(state_file), *flags],
        cwd=REPO_ROOT,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    try:
        assert process.stderr is not None
        line = process.stderr.readline()
        assert line.startswith("Heap emulator listening on http://127.0.0.1:")
        url = line.rsplit(" ", 1)[1].strip()
        assert post(url + ACCOUNTS_PATH, {"app_id": "1", "accounts": [account()]})[0] == answer
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stderr is not None:
            process.stderr.close()

    stored = {"1": {"acme-co": {"seats": 12}}} if answer == 200 else {}
    assert json.loads(state_file.read_text())["accounts"] == stored


@pytest.mark.usefixtures("permissive_umask")
def test_the_emulator_state_file_is_0600_even_when_it_replaces_a_0644_one(tmp_path: Path) -> None:
    """It holds what was sent (identities, app_ids): the owner's only, like heap-dbt's own files."""
    state_file = tmp_path / "heap_state.json"
    state_file.write_text("{}")
    state_file.chmod(0o644)
    emulator = HeapEmulator(state_file=state_file)

    emulator.write_state_file(force=True)

    assert stat.S_IMODE(state_file.stat().st_mode) == 0o600
    assert set(json.loads(state_file.read_text())) >= {"users", "accounts", "events"}
    assert [p.name for p in tmp_path.iterdir()] == [state_file.name]


# --- rate limits count on arrival, on a clock the time scale speeds up ------------------------------


def _wait_for(condition: Any, what: str) -> None:
    import time

    deadline = time.monotonic() + 5
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def test_rate_limits_count_a_request_when_it_arrives_on_the_scaled_clock() -> None:
    clock = FakeClock()
    clock.now = 0.0
    # Time scale 20: the 60 s window is 3 s of the real clock (time_fn).
    with run_in_thread(events_per_minute=5, time_fn=clock, time_scale=20) as heap:
        five = {"app_id": "1", "events": [event(f"u{i}") for i in range(5)]}
        assert post(heap.url + TRACK_PATH, five)[0] == 200  # at 0 s
        clock.now = 2.99  # 59.8 s on the emulator's clock: the first five are still in the window
        body = json.dumps({"app_id": "1", "events": [event("late")]}).encode()
        host, port = heap.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=5) as conn:
            conn.sendall(
                f"POST {TRACK_PATH} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            )
            _wait_for(
                lambda: heap.emulator.snapshot()["requests"].get(TRACK_PATH) == 2, "the request to arrive"
            )
            clock.now = 3.5  # the body comes after the window slid: Heap counted the request already
            conn.sendall(body)
            answer = b""
            while chunk := conn.recv(65536):
                answer += chunk
        state = heap.emulator.snapshot()

    head = answer.decode().split("\r\n\r\n")[0].lower()
    assert head.startswith("http/1.1 429")
    assert "retry-after: 0.01\r\n" in head + "\r\n"  # (60 - 59.8) s on the emulator's clock, in real seconds
    assert [(e["status"], e["at"]) for e in state["request_log"]] == [(200, 0.0), (429, pytest.approx(59.8))]
    assert state["time_scale"] == 20.0
    assert len(state["events"]) == 5


def test_a_time_scale_must_be_positive() -> None:
    with pytest.raises(ValueError, match="time_scale"):
        HeapEmulator(time_scale=0)
