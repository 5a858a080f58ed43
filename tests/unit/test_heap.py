"""Heap's wire protocol without I/O: classification, Retry-After, backoff, framing, masking."""

from __future__ import annotations

import datetime as dt
import json
import random
from email.utils import format_datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from heap_dbt import heap
from heap_dbt.heap import Outcome, RetryPolicy, body_frame, classify, mask_app_id, parse_retry_after

NOW = 1_700_000_000.0  # 2023-11-14T22:13:20Z


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (200, Outcome.DELIVERED),
        (201, Outcome.DELIVERED),
        (204, Outcome.DELIVERED),
        (299, Outcome.DELIVERED),
        (400, Outcome.SPLIT),
        (401, Outcome.FATAL),
        (403, Outcome.FATAL),
        (404, Outcome.FATAL),
        (408, Outcome.RETRY),
        (413, Outcome.SPLIT),
        (422, Outcome.SPLIT),
        (429, Outcome.RETRY),
        (500, Outcome.RETRY),
        (502, Outcome.RETRY),
        (503, Outcome.RETRY),
        (504, Outcome.RETRY),
        (301, Outcome.FATAL),
        (405, Outcome.FATAL),
    ],
    ids=lambda v: v.name if isinstance(v, Outcome) else str(v),
)
def test_classify(status: int, outcome: Outcome) -> None:
    assert classify(status) is outcome


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        pytest.param(None, None, id="absent"),
        pytest.param("", None, id="empty"),
        pytest.param("120", 120.0, id="seconds"),
        pytest.param(" 7 ", 7.0, id="padded-seconds"),
        pytest.param("1.5", 1.5, id="fractional-seconds"),
        pytest.param("0", 0.0, id="zero"),
        pytest.param("-5", 0.0, id="negative-clamped"),
        pytest.param(
            format_datetime(dt.datetime.fromtimestamp(NOW + 90, dt.UTC), usegmt=True),
            90.0,
            id="http-date-future",
        ),
        pytest.param(
            format_datetime(dt.datetime.fromtimestamp(NOW - 90, dt.UTC), usegmt=True),
            0.0,
            id="http-date-past",
        ),
        pytest.param("Tue, 14 Nov 2023 22:14:20 GMT", 60.0, id="http-date-literal"),
        pytest.param("soon", None, id="garbage"),
        pytest.param("Tue, 99 Foo 2023", None, id="broken-date"),
    ],
)
def test_parse_retry_after(header: str | None, expected: float | None) -> None:
    assert parse_retry_after(header, now=NOW) == expected


@pytest.mark.parametrize(
    ("attempt", "low", "high"),
    [(1, 0.25, 0.5), (2, 0.5, 1.0), (3, 1.0, 2.0), (6, 8.0, 16.0), (7, 15.0, 30.0), (20, 15.0, 30.0)],
    ids=["attempt-1", "attempt-2", "attempt-3", "attempt-6", "attempt-7-capped", "attempt-20-capped"],
)
def test_backoff_has_full_jitter_within_bounds(attempt: int, low: float, high: float) -> None:
    policy = RetryPolicy()
    rng = random.Random(1234)
    delays = [policy.delay(attempt, retry_after=None, rng=rng) for _ in range(500)]
    assert all(low <= d <= high for d in delays)
    assert max(delays) - min(delays) > (high - low) / 2  # jitter actually spreads


def test_backoff_is_reproducible_with_a_seeded_rng() -> None:
    policy = RetryPolicy()
    a = [policy.delay(n, retry_after=None, rng=random.Random(7)) for n in range(1, 6)]
    b = [policy.delay(n, retry_after=None, rng=random.Random(7)) for n in range(1, 6)]
    assert a == b


@pytest.mark.parametrize(
    ("retry_after", "expected"),
    [(0.0, 0.0), (12.0, 12.0), (300.0, 300.0), (3600.0, 300.0)],
    ids=["zero", "honoured", "at-cap", "capped"],
)
def test_retry_after_wins_over_backoff_up_to_the_cap(retry_after: float, expected: float) -> None:
    assert RetryPolicy().delay(1, retry_after=retry_after, rng=random.Random(0)) == expected


@pytest.mark.parametrize("obj", ["user", "account", "event"])
@pytest.mark.parametrize("app_id", ["1234567890", 'we"ird\\id', "ünï"], ids=["digits", "quotes", "unicode"])
def test_body_frame_with_joined_records_is_valid_json(obj: str, app_id: str) -> None:
    prefix, suffix = body_frame(obj, app_id)  # type: ignore[arg-type]
    records = [{"identity": "a", "properties": {"n": 1}}, {"identity": 'b"', "properties": {}}]
    body = prefix + b",".join(json.dumps(r).encode() for r in records) + suffix
    _, array = heap.ENDPOINTS[obj]
    assert json.loads(body) == {"app_id": app_id, array: records}


def test_body_frame_with_no_records_is_an_empty_array() -> None:
    prefix, suffix = body_frame("event", "1")
    assert json.loads(prefix + suffix) == {"app_id": "1", "events": []}


@pytest.mark.parametrize(
    ("obj", "path", "array"),
    [
        ("user", "/api/add_user_properties", "users"),
        ("account", "/api/add_account_properties", "accounts"),
        ("event", "/api/track", "events"),
    ],
)
def test_endpoints(obj: str, path: str, array: str) -> None:
    assert heap.ENDPOINTS[obj] == (path, array)


@pytest.mark.parametrize(
    ("app_id", "masked"),
    [("1234567890", "12******90"), ("12345", "12*45"), ("1234", "****"), ("1", "*"), ("", "")],
    ids=["ten", "five", "four", "one", "empty"],
)
def test_mask_app_id(app_id: str, masked: str) -> None:
    assert mask_app_id(app_id) == masked


@given(st.text(alphabet="0123456789abcdef", min_size=1, max_size=40))
def test_mask_app_id_never_shows_the_whole_id(app_id: str) -> None:
    masked = mask_app_id(app_id)
    assert app_id not in masked
    assert len(masked) == len(app_id)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", ""),
        ("bad\n  request\t!", "bad request !"),
        ("x" * 400, "x" * 299 + "…"),
    ],
    ids=["empty", "flattened", "bounded"],
)
def test_error_excerpt(text: str, expected: str) -> None:
    assert heap.error_excerpt(text) == expected


@pytest.mark.parametrize(
    ("text", "secret", "expected"),
    [
        pytest.param('bad body {"app_id": "8675309123457"}', "8675309123457",
                     'bad body {"app_id": "86*********57"}', id="echoed-body"),
        pytest.param("8675309123457 8675309123457", "8675309123457",
                     "86*********57 86*********57", id="twice"),
        pytest.param("no app_id here", "8675309123457", "no app_id here", id="absent"),
        pytest.param("kept as is: 8675309123457", None, "kept as is: 8675309123457", id="no-secret"),
    ],
)  # fmt: skip
def test_error_excerpt_masks_the_app_id(text: str, secret: str | None, expected: str) -> None:
    assert heap.error_excerpt(text, secret=secret) == expected


def test_error_excerpt_masks_before_it_cuts() -> None:
    secret = "8675309123457"
    excerpt = heap.error_excerpt("x" * 290 + secret, limit=300, secret=secret)

    assert secret[:10] not in excerpt and len(excerpt) == 300
