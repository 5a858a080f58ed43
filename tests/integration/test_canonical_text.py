"""Keys and values are canonical text, whatever the session: the real `heap-dbt sync` under the
session settings a user's environment can carry (a process time zone, PGTZ, PGDATESTYLE,
PGOPTIONS) sends the same identities and the same properties as under the default session.

A key's text is what Heap sees as the identity (users), and what an event's idempotency key and
the sync state are derived from: an upgrade must not change it either. ``PINNED`` holds the key
text of each key type as heap-dbt rendered it before it set its own session settings, under the
default session (UTC, ISO); a change there would duplicate events in Heap.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from heap_dbt.emulator import run_in_thread
from tests.conftest import dbt, heap_dbt
from tests.warehouses import Warehouse

pytestmark = pytest.mark.integration

KEYS: dict[str, tuple[str, list[Any]]] = {
    "ts": ("TIMESTAMP", ["2024-03-10 12:00:00", "1999-12-31 23:59:59.5", "2024-07-01 01:02:03.123456"]),
    "tstz": ("TIMESTAMPTZ", ["2024-03-10 12:00:00+00", "2024-07-01 01:02:03.123456+05:45"]),
    "date": ("DATE", ["2024-03-10", "1900-01-01"]),
    "int": ("BIGINT", [42, -9007199254740993]),
    "dbl": ("DOUBLE", [0.1, -1.5, 1e20, 123456.789, 0.30000000000000004]),
    "real": ("REAL", [0.1, 3.5]),
    "dec": ("DECIMAL(18,3)", ["1.5", "-0.001"]),
    "uuid": ("UUID", ["A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11"]),
    "text": ("VARCHAR", ["Straße", "Red"]),
}
"""Key models: name -> (the key column's type in DuckDB's spelling, its values)."""

STAND_INS = {
    "snowflake": {
        "UUID": ("VARCHAR", "Snowflake has no UUID type; a VARCHAR holds the same text"),
        "REAL": ("DOUBLE", "Snowflake's REAL is its FLOAT, a double"),
    },
}
"""Per warehouse: a type it cannot hold -> the type that stands in, and why."""

PINNED: dict[str, set[str]] = {
    "ts": {"2024-03-10 12:00:00", "1999-12-31 23:59:59.5", "2024-07-01 01:02:03.123456"},
    "tstz": {"2024-03-10 12:00:00+00", "2024-06-30 19:17:03.123456+00"},
    "date": {"2024-03-10", "1900-01-01"},
    "int": {"42", "-9007199254740993"},
    "dbl": {"0.1", "-1.5", "1e+20", "123456.789", "0.30000000000000004"},
    "real": {"0.1", "3.5"},
    "dec": {"1.500", "-0.001"},
    "uuid": {"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"},
    "text": {"Straße", "Red"},
}
"""Per key model: the identities Heap received under the default session (UTC, ISO) from the
release before heap-dbt set its session settings, the same on DuckDB, Postgres and fakesnow."""
PINNED_ELSEWHERE = {"snowflake": {"uuid": {"A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11"}}}
"""Where a stand-in type keeps the text as written (Snowflake's VARCHAR for a UUID)."""

SESSIONS: dict[str, dict[str, dict[str, str]]] = {
    "duckdb": {
        "default": {"TZ": "UTC"},
        "TZ=Asia/Kathmandu": {"TZ": "Asia/Kathmandu"},
        "TZ=America/St_Johns": {"TZ": "America/St_Johns"},
    },
    "postgres": {
        "default": {"TZ": "UTC"},
        "PGTZ=Asia/Kathmandu": {"PGTZ": "Asia/Kathmandu"},
        "PGDATESTYLE=SQL, DMY": {"PGDATESTYLE": "SQL, DMY"},
        "PGOPTIONS": {
            "PGOPTIONS": "-c TimeZone=America/St_Johns -c DateStyle=German -c extra_float_digits=-3 "
            "-c IntervalStyle=sql_standard",
            "TZ": "Asia/Kathmandu",
        },
    },
    # fakesnow does not honour Snowflake's session parameters (TIMEZONE, *_OUTPUT_FORMAT): it
    # formats as DuckDB does. heap-dbt sets them at login (``connection.SESSION_PARAMETERS``);
    # here the process time zone, which the in-process DuckDB that builds records would follow.
    "snowflake": {
        "default": {"TZ": "UTC"},
        "TZ=Asia/Kathmandu": {"TZ": "Asia/Kathmandu"},
    },
}


def _type(warehouse: Warehouse, t: str) -> str:
    return STAND_INS.get(warehouse.name, {}).get(t, (t, ""))[0]


def _app(name: str) -> str:
    """An app_id per key model: the same text in two models (0.1) is one identity in one app."""
    return str(1000 + list(KEYS).index(name))


def _schema() -> str:
    models = [
        f"  - name: keys_{name}\n    config:\n      meta:\n"
        f"        heap: {{object: user, key: k, app_id: '{_app(name)}'}}\n"
        for name in KEYS
    ]
    return "version: 2\nmodels:\n" + "".join(models)


@pytest.fixture(scope="module")
def keys_project(
    warehouse: Warehouse, wh_built_sample: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    project = warehouse.copy(wh_built_sample, tmp_path_factory.mktemp("canonical") / "heap_demo")
    models = project / "models" / "canonical"
    models.mkdir()
    for name, (t, values) in KEYS.items():
        rows = [f"SELECT {warehouse.value_sql(v, _type(warehouse, t))} AS k" for v in values]
        (models / f"keys_{name}.sql").write_text("\nUNION ALL\n".join(rows) + "\n", encoding="utf-8")
    (models / "schema.yml").write_text(_schema())
    dbt(project, "run", "-s", "canonical", "--quiet")
    return project


def _sync(project: Path, env: dict[str, str], state: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    with run_in_thread() as running:
        proc = heap_dbt(
            project, "sync", "-s", "canonical", "--state-path", str(state), base_url=running.url, **env
        )
        held = running.emulator.snapshot()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads((project / "target" / "heap_sync_results.json").read_text())
    return held, report


def test_key_text_is_pinned_and_the_same_under_every_session(
    warehouse: Warehouse, keys_project: Path, tmp_path: Path
) -> None:
    pinned = {**PINNED, **PINNED_ELSEWHERE.get(warehouse.name, {})}
    for n, (session, env) in enumerate(SESSIONS[warehouse.name].items()):
        held, report = _sync(keys_project, env, tmp_path / f"state-{n}.duckdb")
        for sync in report["syncs"]:
            assert (sync["read"], sync["rejected"], sync["failed"]) == (sync["sent"], 0, 0), (session, sync)
        got = {name: set(held["users"].get(_app(name), {})) for name in KEYS}
        assert got == pinned, session
