"""Unusual data end to end: a real `dbt run`, the real `heap-dbt sync`, and exactly what Heap received.

One user model holds a row per oddity (scripts, invisible characters, the 1,023/1,024
character limit, numbers past a double, far dates, NaN, odd lists, deep structs) and one
event model holds far timestamps. Each case sits in one table with its SQL and the value
Heap must receive, or the reason the row is rejected; every row read must be accounted for.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from heap_dbt.emulator import run_in_thread
from tests.conftest import APP_ID, dbt, heap_dbt
from tests.warehouses import Warehouse

pytestmark = pytest.mark.integration

TOO_LONG = "property 'text' is 1024 characters; Heap takes at most 1023 (set truncate: true to cut it)"
NESTED = "STRUCT(l1 STRUCT(l2 STRUCT(l3 VARCHAR, n BIGINT, d DOUBLE), x INTEGER), top BOOLEAN)"
COLUMNS = {
    "text": "VARCHAR",
    "n_int": "INTEGER",
    "n_big": "BIGINT",
    "n_huge": "HUGEINT",
    "dec": "DECIMAL(38,10)",
    "dbl": "DOUBLE",
    "dbls": "DOUBLE[]",
    "ts": "TIMESTAMPTZ",
    "ts_naive": "TIMESTAMP",
    "d": "DATE",
    "tags": "VARCHAR[]",
    "nums": "BIGINT[]",
    "nested": NESTED,
}

EMOJI = "😀 👍🏽 🇯🇵 👨\u200d👩\u200d👧 🧑🏿\u200d🚀"
ZERO_WIDTH = "a\u200bb\u200cc\u200dd\ufeffe\u2060f"  # ZWSP, ZWNJ, ZWJ, BOM, word joiner
MIXED = "Latin Ελληνικά Кириллица 日本語 한국어 हिन्दी ไทย"
RTL = "שלום \u202eolleh\u202c مرحبا \u200fend"  # Hebrew, a right-to-left override, Arabic, RLM
AT_LIMIT = "ü" + "x" * 1021 + "ß"  # 1,023 characters, 1,025 bytes


@dataclass(frozen=True)
class Elsewhere:
    """What a warehouse holds instead of a case's values where it cannot hold them, and why."""

    why: str
    values: dict[str, Any] | None = None
    """None: the warehouse cannot hold the row at all; it is left out of that warehouse's model."""
    sent: dict[str, Any] = field(default_factory=dict)
    rejected: str | None = None


@dataclass(frozen=True)
class Case:
    key: str
    values: dict[str, Any]
    """Column -> Python value (``Warehouse.value_sql`` writes it in the warehouse's SQL); the
    other columns are NULL."""
    sent: dict[str, Any] = field(default_factory=dict)
    """The properties Heap must hold for this key (values and their JSON types)."""
    rejected: str | None = None
    elsewhere: dict[str, Elsewhere] = field(default_factory=dict)
    """Per warehouse name, where it cannot hold ``values``."""


def in_warehouse(cases: list[Case], warehouse: str) -> list[Case]:
    """The cases as ``warehouse`` holds them: a case it cannot hold as written is replaced by
    its ``elsewhere`` entry, or left out where that says the row cannot exist there."""
    out = []
    for case in cases:
        other = case.elsewhere.get(warehouse)
        if other is None:
            out.append(case)
        elif other.values is not None:
            out.append(Case(case.key, other.values, other.sent, other.rejected))
    return out


HUGE = 2**127 - 1
USERS = [
    Case("emoji", {"text": EMOJI}, {"text": EMOJI}),
    Case("zero-width", {"text": ZERO_WIDTH}, {"text": ZERO_WIDTH}),
    Case("mixed-scripts", {"text": MIXED}, {"text": MIXED}),
    Case("right-to-left", {"text": RTL}, {"text": RTL}),
    Case("len-1023", {"text": AT_LIMIT}, {"text": AT_LIMIT}),
    Case("len-1024", {"text": "y" * 1024}, rejected=TOO_LONG),
    Case(
        "negative",
        {"n_int": -42, "n_big": -9007199254740991, "dbl": -1.5, "dec": Decimal("-0.0000000001")},
        {"n_int": -42, "n_big": -9007199254740991, "dbl": -1.5, "dec": -1e-10},
    ),
    Case(
        "huge",
        {
            "n_big": 9223372036854775807,
            "n_huge": HUGE,
            "dec": Decimal("1234567890123456789012345678.0123456789"),
            "dbl": 1.7976931348623157e308,
        },
        {
            "n_big": "9223372036854775807",
            "n_huge": str(HUGE),
            "dec": "1234567890123456789012345678.0123456789",
            "dbl": 1.7976931348623157e308,
        },
        elsewhere={
            "snowflake": Elsewhere(
                "Snowflake's widest integer, NUMBER(38, 0), has 38 digits and 2^127 - 1 has 39; "
                "fakesnow, which the tests run on, keeps NUMBER(p, 0) in a BIGINT: the largest "
                "value both hold stands in (it still travels the NUMBER(38, 0) path, as text)",
                {
                    "n_big": 9223372036854775807,
                    "n_huge": 2**63 - 1,
                    "dec": Decimal("1234567890123456789012345678.0123456789"),
                    "dbl": 1.7976931348623157e308,
                },
                {
                    "n_big": "9223372036854775807",
                    "n_huge": str(2**63 - 1),
                    "dec": "1234567890123456789012345678.0123456789",
                    "dbl": 1.7976931348623157e308,
                },
            )
        },
    ),
    Case("past-2^53", {"n_big": 9007199254740993}, {"n_big": "9007199254740993"}),
    Case("minus-past-2^53", {"n_big": -9007199254740993}, {"n_big": "-9007199254740993"}),
    Case(
        "tiny",
        {"dbl": 5e-324, "dec": Decimal("0.0000000001"), "n_huge": 1},
        {"dbl": 5e-324, "dec": 1e-10, "n_huge": 1},
    ),
    Case("negative-zero", {"dbl": -0.0}, {"dbl": -0.0}),
    Case(
        "tz-east",
        {"ts": "2024-03-31 02:30:00.123+05:45"},
        {"ts": "2024-03-30T20:45:00.123Z"},
    ),
    Case(
        "tz-west-next-year",
        {"ts": "2023-12-31 23:59:59.999-10:00"},
        {"ts": "2024-01-01T09:59:59.999Z"},
    ),
    Case(
        "before-1970",
        {"ts": "1969-07-20 20:17:40.5+00:00", "ts_naive": "1969-12-31 23:59:59.999", "d": "1900-01-01"},
        {"ts": "1969-07-20T20:17:40.500Z", "ts_naive": "1969-12-31T23:59:59.999Z", "d": "1900-01-01"},
    ),
    Case(
        "after-2100",
        {"ts": "2150-06-15 12:00:00+01:00", "ts_naive": "2100-03-01 00:00:00", "d": "2199-12-31"},
        {"ts": "2150-06-15T11:00:00.000Z", "ts_naive": "2100-03-01T00:00:00.000Z", "d": "2199-12-31"},
    ),
    Case("not-a-number", {"dbl": math.nan}, rejected="property 'dbl' is NaN or infinite"),
    Case("infinity", {"dbl": math.inf}, rejected="property 'dbl' is NaN or infinite"),
    Case("minus-infinity", {"dbl": -math.inf}, rejected="property 'dbl' is NaN or infinite"),
    Case("nan-in-list", {"dbls": [1.5, math.nan]}, rejected="property 'dbls' holds NaN or infinite"),
    Case("empty-list", {"tags": [], "nums": []}, {"tags": "", "nums": ""}),
    Case(
        "list-with-nulls",
        {"tags": ["a", None, "b"], "nums": [9007199254740993, None, -1], "dbls": [None, -0.0]},
        {"tags": "a||b", "nums": "9007199254740993||-1", "dbls": "-0.0"},
    ),
    # array_to_string of only NULLs is NULL, and a NULL property is left out.
    Case("only-nulls", {"tags": [None], "text": "kept"}, {"text": "kept"}),
    Case(
        "nested-three-levels",
        {"nested": {"l1": {"l2": {"l3": "deep", "n": 9007199254740993, "d": -0.0}, "x": 1}, "top": True}},
        {
            "nested.l1.l2.l3": "deep",
            "nested.l1.l2.n": "9007199254740993",
            "nested.l1.l2.d": -0.0,
            "nested.l1.x": 1,
            "nested.top": "true",
        },
    ),
]

EVENT_IDENTITIES = {"moon": "😀 émoji user", "future": "שלום", "never": "someone"}
EVENTS = [
    Case("moon", {"at": "1969-07-20 20:17:40+00:00"}, {"timestamp": "1969-07-20T20:17:40.000Z"}),
    Case("future", {"at": "2150-01-01 00:00:00-08:00"}, {"timestamp": "2150-01-01T08:00:00.000Z"}),
    Case(
        "never",
        {"at": "infinity"},
        rejected="event timestamp is infinite",
        elsewhere={"snowflake": Elsewhere("Snowflake's timestamps have no infinity")},
    ),
]

SCHEMA = """
version: 2
models:
  - name: unusual_users
    config:
      meta:
        heap: {object: user, key: id}
  - name: unusual_events
    config:
      meta:
        heap: {object: event, key: id, identity: who, event_name: Unusual, timestamp: at}
"""


def model_sql(
    warehouse: Warehouse, cases: list[Case], columns: dict[str, str], extra: dict[str, dict[str, Any]]
) -> str:
    """One SELECT per case, every column of its type in the warehouse, joined by UNION ALL."""
    rows = []
    for case in cases:
        values = {**extra.get(case.key, {}), **case.values}
        cols = ", ".join(f"{warehouse.value_sql(values.get(c), t)} AS {c}" for c, t in columns.items())
        rows.append(f"SELECT {warehouse.value_sql(case.key, 'VARCHAR')} AS id, {cols}")
    return "\nUNION ALL\n".join(rows) + "\n"


def typed(value: Any) -> Any:
    """A value with its JSON type spelled out, so 1 != 1.0, "1" != 1 and -0.0 != 0.0."""
    if isinstance(value, dict):
        return {k: typed(v) for k, v in value.items()}
    return (type(value).__name__, repr(value))


Synced = tuple[int, dict[str, Any], dict[str, Any], list[Case], list[Case]]


@pytest.fixture(scope="module")
def synced(warehouse: Warehouse, wh_built_sample: Path, tmp_path_factory: pytest.TempPathFactory) -> Synced:
    """One dbt run and one sync of both models in ``warehouse``, shared by the tests that read its
    outcome; with the user and event cases as that warehouse holds them."""
    users, events = in_warehouse(USERS, warehouse.name), in_warehouse(EVENTS, warehouse.name)
    project = warehouse.copy(wh_built_sample, tmp_path_factory.mktemp("unusual") / "heap_demo")
    models = project / "models" / "unusual"
    models.mkdir()
    (models / "unusual_users.sql").write_text(model_sql(warehouse, users, COLUMNS, {}), encoding="utf-8")
    identities = {k: {"who": v} for k, v in EVENT_IDENTITIES.items()}
    (models / "unusual_events.sql").write_text(
        model_sql(warehouse, events, {"who": "VARCHAR", "at": "TIMESTAMPTZ"}, identities), encoding="utf-8"
    )
    (models / "schema.yml").write_text(SCHEMA)
    dbt(project, "run", "-s", "unusual_users", "unusual_events", "--quiet")

    with run_in_thread() as running:
        proc = heap_dbt(project, "sync", "-s", "unusual_users unusual_events", base_url=running.url)
        state = running.emulator.snapshot()
    assert (project / "target" / "heap_sync_results.json").exists(), proc.stdout + proc.stderr
    report = json.loads((project / "target" / "heap_sync_results.json").read_text())
    return proc.returncode, report, state, users, events


def test_a_case_a_warehouse_cannot_hold_says_why() -> None:
    for case in USERS + EVENTS:
        assert all(other.why for other in case.elsewhere.values()), case.key


def test_unusual_user_values_arrive_exactly_or_are_rejected_with_their_reason(
    synced: Synced,
) -> None:
    returncode, report, state, users, _ = synced

    assert returncode == 1  # some rows are rejected
    want = {c.key: c.sent for c in users if c.rejected is None}
    assert typed(state["users"][APP_ID]) == typed(want)
    sync = next(s for s in report["syncs"] if s["model"] == "unusual_users")
    assert {r["key"]: r["reason"] for r in sync["rejections"]} == {
        c.key: c.rejected for c in users if c.rejected is not None
    }


def test_unusual_event_timestamps_and_identities_arrive_exactly(
    synced: Synced,
) -> None:
    _, report, state, _, events = synced

    got = {(e["identity"], e["event"], e["timestamp"]) for e in state["events"]}
    assert got == {
        (EVENT_IDENTITIES[c.key], "Unusual", c.sent["timestamp"]) for c in events if c.rejected is None
    }
    assert all(e["properties"] == {} for e in state["events"])
    sync = next(s for s in report["syncs"] if s["model"] == "unusual_events")
    assert [(r["key"], r["reason"]) for r in sync["rejections"]] == [
        (c.key, c.rejected) for c in events if c.rejected is not None
    ]


def test_every_row_read_is_sent_or_rejected(synced: Synced) -> None:
    _, report, state, users, events = synced

    counts = {s["model"]: (s["read"], s["sent"], s["rejected"], s["failed"]) for s in report["syncs"]}
    rejected_users = sum(c.rejected is not None for c in users)
    rejected_events = sum(c.rejected is not None for c in events)
    assert counts == {
        "unusual_users": (len(users), len(users) - rejected_users, rejected_users, 0),
        "unusual_events": (len(events), len(events) - rejected_events, rejected_events, 0),
    }
    # What the emulator took in, request by request, is what the report says was sent.
    assert state["records"] == {
        "/api/add_user_properties": len(users) - rejected_users,
        "/api/track": len(events) - rejected_events,
    }
    assert all(entry["status"] == 200 for entry in state["request_log"])
