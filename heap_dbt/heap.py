"""Heap's wire protocol without I/O: request bodies, response classification, retry timing.

Records arrive as JSON text already built by the warehouse (see ``heap_dbt.sql``); this
module only frames them into bulk bodies and decides what a response means.
"""

from __future__ import annotations

import enum
import json
import random
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING

from heap_dbt.errors import FatalAPIError, RefusedBatchError, RetriableAPIError

if TYPE_CHECKING:
    from heap_dbt.config import ObjectType

US_BASE_URL = "https://heapanalytics.com"
EU_BASE_URL = "https://c.eu.heap-api.com"
MAX_ITEMS_PER_REQUEST = 1000  # Heap's bulk limit for events, users and accounts
MAX_BODY_BYTES = 4 * 1024 * 1024  # Heap publishes no limit; stay well under common proxy caps
NO_APP_ID = "<app_id>"  # stands in for the app_id in a dry run's sample when none was given

ENDPOINTS: dict[str, tuple[str, str]] = {
    "user": ("/api/add_user_properties", "users"),
    "account": ("/api/add_account_properties", "accounts"),
    "event": ("/api/track", "events"),
}


@dataclass(frozen=True)
class HeapResponse:
    """Heap's answer to one request, as the transport saw it."""

    status: int
    text: str
    retry_after: str | None


def body_frame(obj: ObjectType, app_id: str) -> tuple[bytes, bytes]:
    """The bytes that go before and after the comma-joined records of a bulk body."""
    _, array = ENDPOINTS[obj]
    prefix = json.dumps({"app_id": app_id})[:-1] + f', "{array}": ['
    return prefix.encode(), b"]}"


@dataclass(frozen=True)
class Frame:
    """Where the records of one object go, and the bytes around them in each body."""

    path: str
    prefix: bytes
    suffix: bytes
    app_id: str
    """Masked wherever Heap's error text echoes it."""

    @classmethod
    def of(cls, obj: ObjectType, app_id: str) -> Frame:
        prefix, suffix = body_frame(obj, app_id)
        return cls(ENDPOINTS[obj][0], prefix, suffix, app_id)

    @property
    def room(self) -> int:
        """Bytes left for the joined records of one body within MAX_BODY_BYTES."""
        return MAX_BODY_BYTES - len(self.prefix) - len(self.suffix)

    def body(self, records: bytes | memoryview) -> bytes:
        return b"".join((self.prefix, records, self.suffix))


class Outcome(enum.Enum):
    """What to do with a batch after Heap answered."""

    DELIVERED = "delivered"
    RETRY = "retry"  # 429, 5xx, 408: same batch again, later
    SPLIT = "split"  # 400, 413, 422: some record is bad (or the body too big); bisect
    FATAL = "fatal"  # 401, 403, 404, ...: nothing will fix this batch; stop sending


def classify(status: int) -> Outcome:
    """Map an HTTP status to an Outcome. Any 2xx is a success; Heap sends no body."""
    if 200 <= status < 300:
        return Outcome.DELIVERED
    if status in (408, 429) or status >= 500:
        return Outcome.RETRY
    if status in (400, 413, 422):
        return Outcome.SPLIT
    return Outcome.FATAL


def check(response: HeapResponse, *, now: float, secret: str | None = None) -> None:
    """Return for a 2xx; else raise the HeapAPIError that ``response`` means.

    ``now`` is the wall-clock time (epoch seconds), for a Retry-After given as a date.
    """
    outcome = classify(response.status)
    if outcome is Outcome.DELIVERED:
        return
    reason = f"HTTP {response.status}: {error_excerpt(response.text, secret=secret) or 'no message'}"
    if outcome is Outcome.RETRY:
        wait = parse_retry_after(response.retry_after, now=now)
        raise RetriableAPIError(reason, status=response.status, retry_after=wait)
    if outcome is Outcome.SPLIT:
        raise RefusedBatchError(reason, status=response.status)
    raise FatalAPIError(reason, status=response.status)


def parse_retry_after(value: str | None, *, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (seconds or an HTTP date), or None.

    ``now`` is the current wall-clock time (epoch seconds), passed in for testability.
    """
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """Exponential backoff with full jitter, honouring Retry-After up to ``max_retry_after``."""

    max_attempts: int = 6
    base: float = 0.5
    cap: float = 30.0
    max_retry_after: float = 300.0

    def delay(self, attempt: int, *, retry_after: float | None, rng: random.Random) -> float:
        """Seconds to wait before attempt ``attempt + 1`` (``attempt`` counts from 1)."""
        if retry_after is not None:
            return min(retry_after, self.max_retry_after)
        ceiling = min(self.cap, self.base * 2 ** (attempt - 1))
        return rng.uniform(ceiling / 2, ceiling)


def mask_app_id(app_id: str) -> str:
    """Show enough of an app_id to tell environments apart, never all of it."""
    if len(app_id) <= 4:
        return "*" * len(app_id)
    return app_id[:2] + "*" * (len(app_id) - 4) + app_id[-2:]


def error_excerpt(text: str, *, limit: int = 300, secret: str | None = None) -> str:
    """Heap's error text (undocumented format), on one line and bounded.

    ``secret`` (the app_id, which an error page may echo with the request body) is masked.
    """
    if secret:
        text = text.replace(secret, mask_app_id(secret))
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
