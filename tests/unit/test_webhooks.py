"""The webhook rules without a server: signatures, payloads, and which deliveries start a sync."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import pytest

from heap_dbt import webhooks
from heap_dbt.errors import ConfigError

SECRET = "whsec-test-0123456789"


def payload(**data: Any) -> dict[str, Any]:
    """A job.run.completed delivery as dbt Cloud documents it, with ``data`` overrides."""
    return {
        "accountId": 1,
        "webhooksID": "wsu_12345abcde",
        "eventId": data.pop("eventId", "wev_2L6ZDoilyiWzKkSA59Gmc2d7FDD"),
        "timestamp": "2023-01-31T19:29:35.789265936Z",
        "eventType": data.pop("eventType", "job.run.completed"),
        "webhookName": "test",
        "data": {
            "jobId": "123",
            "jobName": "Daily Job (dbt build)",
            "runId": "12345",
            "runStatus": "Success",
            "runStatusCode": 10,
            **data,
        },
    }


def test_the_signature_is_the_hex_hmac_sha256_of_the_raw_body() -> None:
    body = json.dumps(payload()).encode()
    expected = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert webhooks.signature(SECRET, body) == expected
    assert webhooks.verify(SECRET, body, expected)


@pytest.mark.parametrize(
    ("header", "body_change"),
    [
        pytest.param(None, b"", id="missing"),
        pytest.param("", b"", id="empty"),
        pytest.param("0" * 64, b"", id="forged"),
        pytest.param("sig", b" ", id="tampered body"),
        pytest.param("other-secret", b"", id="other secret"),
        pytest.param("sha256=", b"", id="prefixed"),
    ],
)
def test_a_wrong_signature_is_refused(header: str | None, body_change: bytes) -> None:
    body = json.dumps(payload()).encode()
    good = webhooks.signature(SECRET, body)
    if header == "sig":
        header = good
    elif header == "other-secret":
        header = webhooks.signature("another secret", body)
    elif header == "sha256=":
        header = "sha256=" + good
    assert not webhooks.verify(SECRET, body + body_change, header)


def test_parse_keeps_ids_as_strings() -> None:
    event = webhooks.parse(json.dumps(payload()).encode())
    assert event == webhooks.Event(
        event_id="wev_2L6ZDoilyiWzKkSA59Gmc2d7FDD",
        event_type="job.run.completed",
        job_id="123",
        run_id="12345",
        run_status_code=10,
    )


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param(b"{not json", "not JSON", id="bad json"),
        pytest.param(b"[1, 2]", "not a JSON object", id="array"),
        pytest.param(json.dumps({"data": {}}).encode(), "no eventId", id="no event id"),
        pytest.param(json.dumps({"eventId": {"a": 1}}).encode(), "not a string", id="object id"),
    ],
)
def test_parse_refuses_what_is_not_a_delivery(body: bytes, message: str) -> None:
    with pytest.raises(webhooks.BadDeliveryError, match=message):
        webhooks.parse(body)


@pytest.mark.parametrize(
    ("changes", "decision"),
    [
        pytest.param({}, "sync", id="success of a configured job"),
        pytest.param({"jobId": 123}, "sync", id="numeric job id"),
        pytest.param({"runStatusCode": 20}, "ignored: run status 20 (Error)", id="failed"),
        pytest.param({"runStatusCode": 30}, "ignored: run status 30 (Cancelled)", id="cancelled"),
        pytest.param({"runStatusCode": None}, "ignored: run status (none) (missing)", id="no status"),
        pytest.param({"jobId": "7"}, "ignored: job 7 is not configured", id="unknown job"),
        pytest.param(
            {"eventType": "job.run.started"},
            "ignored: event type job.run.started is not job.run.completed",
            id="started",
        ),
        pytest.param({"runId": "abc"}, "ignored: run ID abc is not a number", id="bad run id"),
    ],
)
def test_decide(changes: dict[str, Any], decision: str) -> None:
    event = webhooks.parse(json.dumps(payload(**changes)).encode())
    assert webhooks.decide(event, jobs={"123", "456"}) == decision


def test_the_secret_comes_from_the_environment() -> None:
    assert webhooks.secret_from_env({"DBT_CLOUD_WEBHOOK_SECRET": SECRET}) == SECRET
    with pytest.raises(ConfigError, match="set DBT_CLOUD_WEBHOOK_SECRET"):
        webhooks.secret_from_env({"DBT_CLOUD_WEBHOOK_SECRET": "  "})


def test_job_ids_are_numbers() -> None:
    assert webhooks.job_ids(["12", " 007"]) == ["12", "7"]
    with pytest.raises(ConfigError, match="'nightly' is not a dbt Cloud job ID"):
        webhooks.job_ids(["12", "nightly"])
    with pytest.raises(ConfigError, match="at least one"):
        webhooks.job_ids([])
