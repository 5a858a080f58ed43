"""Validation of the emulator's request bodies: decoded JSON to typed items, or a 400 reason.

Pure functions that check a body the way Heap documents it (see ``heap-api.md``), all-or-nothing,
naming the first offending field. It imports nothing from ``heap_dbt``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

USERS_PATH = "/api/add_user_properties"
ACCOUNTS_PATH = "/api/add_account_properties"
TRACK_PATH = "/api/track"
INGEST_PATHS = (USERS_PATH, ACCOUNTS_PATH, TRACK_PATH)

MAX_BATCH_ITEMS = 1000
MAX_IDENTITY_CHARS = 255
MAX_EVENT_NAME_CHARS = 1024
MAX_PROPERTY_CHARS = 1023  # Heap: "fewer than 1024 characters"

PropertyValue = str | int | float
Properties = dict[str, PropertyValue]

_TIMESTAMP_RE = re.compile(
    r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.(?P<fraction>\d+))?(?:Z|[+-]\d{2}:?\d{2})$"
)


class PayloadRejectedError(Exception):
    """A request body Heap would answer with 400; the message is the plain-text reason."""


@dataclass(frozen=True)
class UserUpdate:
    identity: str
    properties: Properties


@dataclass(frozen=True)
class AccountUpdate:
    account_id: str
    properties: Properties


@dataclass(frozen=True)
class TrackedEvent:
    identity: str
    event: str
    timestamp: str | None
    idempotency_key: str | None
    properties: Properties


@dataclass(frozen=True)
class ValidRequest:
    """A request that passed validation; ``app_id`` is normalised to a string."""

    path: str
    app_id: str
    items: list[UserUpdate] | list[AccountUpdate] | list[TrackedEvent]


def parse_request(path: str, body: object) -> ValidRequest:
    """Validate a decoded body for one of the ingestion paths, all-or-nothing.

    Raises PayloadRejectedError naming the first offending field, e.g.
    ``users[3].properties.ID: reserved property name``.
    """
    if not isinstance(body, dict):
        raise PayloadRejectedError("body: must be a JSON object")
    app_id = _app_id(body.get("app_id"))
    if path == USERS_PATH:
        users = [_user(item, where) for where, item in _items(body, "users", single_key="identity")]
        return ValidRequest(path, app_id, users)
    if path == ACCOUNTS_PATH:
        accounts = [
            _account(item, where) for where, item in _items(body, "accounts", single_key="account_id")
        ]
        return ValidRequest(path, app_id, accounts)
    if path == TRACK_PATH:
        events = [_event(item, where) for where, item in _items(body, "events", single_key="event")]
        return ValidRequest(path, app_id, events)
    raise PayloadRejectedError(f"unknown path {path}")


def _app_id(value: object) -> str:
    if isinstance(value, bool) or value is None:
        raise PayloadRejectedError("app_id: required, a non-empty string")
    if isinstance(value, int):
        return str(value)
    if not isinstance(value, str) or not value:
        raise PayloadRejectedError("app_id: required, a non-empty string")
    return value


def _items(body: dict[str, Any], array_key: str, *, single_key: str) -> list[tuple[str, object]]:
    """(error prefix, item) pairs for the bulk form, or the body itself for the single form."""
    if array_key not in body:
        if single_key in body or "identity" in body:
            return [("", body)]
        raise PayloadRejectedError(f"{array_key}: required, a list of 1..{MAX_BATCH_ITEMS} items")
    array = body[array_key]
    if not isinstance(array, list):
        raise PayloadRejectedError(f"{array_key}: must be a list")
    if not 1 <= len(array) <= MAX_BATCH_ITEMS:
        raise PayloadRejectedError(f"{array_key}: has {len(array)} items, must have 1..{MAX_BATCH_ITEMS}")
    return [(f"{array_key}[{index}].", item) for index, item in enumerate(array)]


def _user(item: object, where: str) -> UserUpdate:
    item = _object(item, where)
    return UserUpdate(
        identity=_name(item.get("identity"), f"{where}identity", MAX_IDENTITY_CHARS),
        properties=_properties(item.get("properties"), f"{where}properties"),
    )


def _account(item: object, where: str) -> AccountUpdate:
    item = _object(item, where)
    return AccountUpdate(
        account_id=_name(item.get("account_id"), f"{where}account_id", MAX_IDENTITY_CHARS),
        properties=_properties(item.get("properties"), f"{where}properties"),
    )


def _event(item: object, where: str) -> TrackedEvent:
    item = _object(item, where)
    if "user_id" in item:
        raise PayloadRejectedError(f"{where}user_id: not supported by the emulator; send identity instead")
    key = item.get("idempotency_key")
    if key is not None and (not isinstance(key, str) or not key):
        raise PayloadRejectedError(f"{where}idempotency_key: must be a non-empty string")
    return TrackedEvent(
        identity=_name(item.get("identity"), f"{where}identity", MAX_IDENTITY_CHARS),
        event=_name(item.get("event"), f"{where}event", MAX_EVENT_NAME_CHARS),
        timestamp=_timestamp(item.get("timestamp"), f"{where}timestamp"),
        idempotency_key=key,
        properties=_properties(item.get("properties"), f"{where}properties"),
    )


def _object(item: object, where: str) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise PayloadRejectedError(f"{where.rstrip('.') or 'body'}: must be a JSON object")
    return item


def _name(value: object, where: str, max_chars: int) -> str:
    if not isinstance(value, str) or not value:
        raise PayloadRejectedError(f"{where}: required, a non-empty string")
    if len(value) > max_chars:
        raise PayloadRejectedError(f"{where}: {len(value)} characters, limit is {max_chars}")
    return value


def _timestamp(value: object, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise PayloadRejectedError(f"{where}: must be an ISO 8601 string")
    match = _TIMESTAMP_RE.match(value)
    if match is None:
        raise PayloadRejectedError(
            f"{where}: {value!r} is not ISO 8601 with a UTC offset (e.g. 2026-11-01T12:00:00Z)"
        )
    fraction = match.group("fraction")
    if fraction is not None and len(fraction) > 3:
        raise PayloadRejectedError(f"{where}: {value!r} has sub-millisecond precision")
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise PayloadRejectedError(f"{where}: {value!r} is not a valid date-time ({exc})") from None
    return value


def _properties(value: object, where: str) -> Properties:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise PayloadRejectedError(f"{where}: must be a JSON object")
    properties: Properties = {}
    for key, prop in value.items():
        if not key:
            raise PayloadRejectedError(f"{where}: empty property name")
        if len(key) > MAX_PROPERTY_CHARS:
            raise PayloadRejectedError(
                f"{where}.{key[:40]}...: property name is {len(key)} characters, "
                f"limit is {MAX_PROPERTY_CHARS}"
            )
        if key.lower() == "id":
            raise PayloadRejectedError(f"{where}.{key}: reserved property name")
        properties[key] = _property_value(prop, f"{where}.{key}")
    return properties


def _property_value(value: object, where: str) -> PropertyValue:
    if isinstance(value, bool) or value is None or isinstance(value, list | dict):
        kind = "null" if value is None else type(value).__name__
        raise PayloadRejectedError(f"{where}: {kind} value, must be a string or a number")
    if isinstance(value, int | float):
        return value
    if isinstance(value, str):
        if len(value) > MAX_PROPERTY_CHARS:
            raise PayloadRejectedError(
                f"{where}: value is {len(value)} characters, limit is {MAX_PROPERTY_CHARS}"
            )
        return value
    raise PayloadRejectedError(f"{where}: must be a string or a number")


def _reject_json_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON")


def _unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    """An object whose keys are all different: with a key twice, which value Heap keeps is chance."""
    out: dict[str, object] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"key {key!r} appears twice in one object")
        out[key] = value
    return out


def decode_json(raw: bytes) -> object:
    """Decode strict JSON (no NaN/Infinity, no key twice in an object); raises PayloadRejectedError."""
    try:
        return json.loads(
            raw.decode("utf-8"), parse_constant=_reject_json_constant, object_pairs_hook=_unique_keys
        )
    except (UnicodeDecodeError, ValueError) as exc:
        raise PayloadRejectedError(f"body: invalid JSON ({exc})") from None
