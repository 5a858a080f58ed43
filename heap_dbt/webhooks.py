"""dbt Cloud webhook deliveries, without I/O: the signature check, the payload, and what to do with it.

``heap-dbt serve`` (``heap_dbt.server``) feeds every request through these functions, so
each rule is a table test here: a delivery is trusted only when its ``Authorization``
header is the hex HMAC-SHA256 of the raw body keyed with the webhook secret, and it starts
a sync only for a successful ``job.run.completed`` of a configured job. dbt Cloud's IDs
are strings in the payload (``"jobId": "123"``), so they stay strings here.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import msgspec

from heap_dbt.errors import ConfigError

if TYPE_CHECKING:
    from heap_dbt.report import SyncReport

MAX_BODY_BYTES = 1024 * 1024
"""Bodies above this are refused (413) before they are read; a real delivery is about 1 KB."""
COMPLETED = "job.run.completed"
SUCCESS = 10
SYNC = "sync"
"""The decision that starts (or joins) a sync; every other decision ignores the delivery."""
SECRET_ENV = "DBT_CLOUD_WEBHOOK_SECRET"  # noqa: S105 - the variable's name, not a secret
RUN_STATUSES = {1: "Queued", 2: "Starting", 3: "Running", 10: "Success", 20: "Error", 30: "Cancelled"}


class BadDeliveryError(ValueError):
    """A signed body that is not a dbt Cloud delivery (bad JSON, no eventId): answered 400."""


@dataclass(frozen=True)
class Event:
    """The fields of a delivery heap-dbt acts on."""

    event_id: str
    event_type: str
    job_id: str
    run_id: str
    run_status_code: int | None


def signature(secret: str, body: bytes) -> str:
    """The ``Authorization`` value dbt Cloud sends with ``body``."""
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, header: str | None) -> bool:
    """True when ``header`` signs ``body``; compared in constant time, so that timing tells
    an attacker nothing about the right value."""
    if not header:
        return False
    return hmac.compare_digest(signature(secret, body).encode(), header.strip().encode())


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise BadDeliveryError(f"an ID is {type(value).__name__}, not a string")
    return str(value)


def parse(body: bytes) -> Event:
    """The event in a (verified) body.

    Raises:
        BadDeliveryError: the body is not JSON, or has no ``eventId``.
    """
    try:
        doc = msgspec.json.decode(body)
    except msgspec.DecodeError as exc:
        raise BadDeliveryError(f"the body is not JSON ({exc})") from exc
    if not isinstance(doc, dict):
        raise BadDeliveryError("the body is not a JSON object")
    event_id = _text(doc.get("eventId"))
    if not event_id:
        raise BadDeliveryError("the body has no eventId")
    data = doc.get("data")
    if not isinstance(data, dict):
        data = {}
    status = data.get("runStatusCode")
    if isinstance(status, str) and status.isdigit():
        status = int(status)
    return Event(
        event_id=event_id,
        event_type=str(doc.get("eventType") or ""),
        job_id=_text(data.get("jobId")),
        run_id=_text(data.get("runId")),
        run_status_code=status if isinstance(status, int) and not isinstance(status, bool) else None,
    )


def decide(event: Event, *, jobs: Collection[str]) -> str:
    """``SYNC``, or ``"ignored: <why>"`` for a delivery that must not start a sync."""
    if event.event_type != COMPLETED:
        return f"ignored: event type {event.event_type or '(none)'} is not {COMPLETED}"
    if event.job_id not in jobs:
        return f"ignored: job {event.job_id or '(none)'} is not configured"
    if event.run_status_code != SUCCESS:
        code = event.run_status_code
        name = RUN_STATUSES.get(code, "unknown") if code is not None else "missing"
        return f"ignored: run status {code if code is not None else '(none)'} ({name})"
    if not event.run_id.isdigit():
        return f"ignored: run ID {event.run_id or '(none)'} is not a number"
    return SYNC


def outcome_of(report: SyncReport) -> str:
    """A sync's outcome for the delivery log, e.g. ``success: sent 10, unchanged 0, rejected 1, failed 0``."""
    t = report.as_dict()["totals"]
    status = "success" if report.exit_code == 0 else "partial"
    return (
        f"{status}: sent {t['sent']:,}, unchanged {t['unchanged']:,}, rejected {t['rejected']:,}, "
        f"failed {t['failed']:,}"
    )


def secret_from_env(env: Mapping[str, str]) -> str:
    """The webhook secret dbt Cloud signs with, from DBT_CLOUD_WEBHOOK_SECRET."""
    value = env.get(SECRET_ENV, "").strip()
    if not value:
        raise ConfigError(
            f"heap-dbt serve needs the webhook's secret: set {SECRET_ENV} to the secret dbt Cloud "
            "showed when the webhook was created (Account settings > Webhooks)."
        )
    return value


def job_ids(jobs: Sequence[str]) -> list[str]:
    """The configured job IDs, as dbt Cloud writes them in a delivery (strings of digits)."""
    if not jobs:
        raise ConfigError("heap-dbt serve needs at least one --dbt-cloud-job JOB_ID to sync after.")
    bad = [j for j in jobs if not j.strip().isdigit()]
    if bad:
        raise ConfigError(f"--dbt-cloud-job {bad[0]!r} is not a dbt Cloud job ID; give the number.")
    return [str(int(j)) for j in jobs]
