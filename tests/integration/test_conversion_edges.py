"""The conversion table of the README holds at its edges, on every warehouse and under every session
setting of ``test_canonical_text.SESSIONS``: a REAL is its shortest decimal, sub-millisecond
precision is cut the same way for every timestamp type (before 1970 too), a TIMESTAMPTZ inside a
list of structs is UTC, and a DATE event timestamp is its midnight UTC as an ISO instant.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from heap_dbt.emulator import run_in_thread
from tests.conftest import APP_ID, dbt, heap_dbt
from tests.integration.test_canonical_text import SESSIONS
from tests.warehouses import Warehouse

pytestmark = pytest.mark.integration

COLUMNS = {
    "r": ("REAL", 0.1, 0.1),
    "r_rounded": ("REAL", 123456789.0, 123456790.0),
    "ts_sub_ms": ("TIMESTAMP", "2024-01-02 03:04:05.999999", "2024-01-02T03:04:05.999Z"),
    "ts_before_1970": ("TIMESTAMP", "1969-12-31 23:59:59.9995", "1969-12-31T23:59:59.999Z"),
    "tstz_before_1970": ("TIMESTAMPTZ", "1970-01-01 05:44:59.9995+05:45", "1969-12-31T23:59:59.999Z"),
    "tstz_east": ("TIMESTAMPTZ", "2024-07-01 01:02:03.123456+05:45", "2024-06-30T19:17:03.123Z"),
    "d": ("DATE", "2024-03-10", "2024-03-10"),
}
"""Column -> (type in DuckDB's spelling, value, what Heap receives)."""

STAND_INS: dict[str, dict[str, tuple[str, Any, Any, str]]] = {
    "snowflake": {
        "r": ("DOUBLE", 0.1, 0.1, "Snowflake's REAL is its FLOAT, a double"),
        "r_rounded": ("DOUBLE", 123456789.0, 123456789.0, "Snowflake's REAL is its FLOAT, a double"),
    },
}
"""Per warehouse, a column it cannot hold as written: (type, value, received, why)."""

NESTED = {
    "duckdb": (
        "STRUCT(seen TIMESTAMPTZ)[]",
        [{"seen": "2024-07-01 01:02:03.123456+05:45"}],
        '{"seen":"2024-06-30 19:17:03.123456+00"}',
    ),
}
"""A TIMESTAMPTZ inside a list of structs: only DuckDB has lists of structs (Postgres' nested data
is JSON text and Snowflake's ARRAY holds VARIANTs, neither with a time zone to follow)."""

SCHEMA = """
version: 2
models:
  - name: edge_users
    config:
      meta:
        heap: {object: user, key: id}
  - name: edge_events
    config:
      meta:
        heap: {object: event, key: id, identity: who, event_name: Edge, timestamp: on_day}
"""


def _columns(warehouse: Warehouse) -> dict[str, tuple[str, Any, Any]]:
    cols = dict(COLUMNS)
    for name, (t, value, sent, _) in STAND_INS.get(warehouse.name, {}).items():
        cols[name] = (t, value, sent)
    if warehouse.name in NESTED:
        cols["nested"] = NESTED[warehouse.name]
    return cols


@pytest.fixture(scope="module")
def edges_project(
    warehouse: Warehouse, wh_built_sample: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    project = warehouse.copy(wh_built_sample, tmp_path_factory.mktemp("edges") / "heap_demo")
    models = project / "models" / "edges"
    models.mkdir()
    cols = ", ".join(f"{warehouse.value_sql(v, t)} AS {n}" for n, (t, v, _) in _columns(warehouse).items())
    (models / "edge_users.sql").write_text(f"SELECT {warehouse.value_sql('u1', 'VARCHAR')} AS id, {cols}\n")
    event = ["e1", "u1", "2024-03-10"]
    e1, u1, day = (
        warehouse.value_sql(v, t) for v, t in zip(event, ["VARCHAR", "VARCHAR", "DATE"], strict=True)
    )
    (models / "edge_events.sql").write_text(f"SELECT {e1} AS id, {u1} AS who, {day} AS on_day\n")
    (models / "schema.yml").write_text(SCHEMA)
    dbt(project, "run", "-s", "edges", "--quiet")
    return project


def test_a_case_a_warehouse_cannot_hold_says_why() -> None:
    assert all(why for stand_ins in STAND_INS.values() for *_, why in stand_ins.values())


def test_values_at_the_edges_arrive_as_the_readme_says_under_every_session(
    warehouse: Warehouse, edges_project: Path, tmp_path: Path
) -> None:
    want = {n: sent for n, (_, _, sent) in _columns(warehouse).items()}
    for n, (session, env) in enumerate(SESSIONS[warehouse.name].items()):
        with run_in_thread() as running:
            proc = heap_dbt(
                edges_project,
                "sync",
                "-s",
                "edges",
                "--state-path",
                str(tmp_path / f"state-{n}.duckdb"),
                base_url=running.url,
                **env,
            )
            held = running.emulator.snapshot()
        assert proc.returncode == 0, (session, proc.stdout + proc.stderr)
        got = held["users"][APP_ID]["u1"]
        assert {k: (type(v).__name__, repr(v)) for k, v in got.items()} == {
            k: (type(v).__name__, repr(v)) for k, v in want.items()
        }, session
        (event,) = held["events"]
        assert event["timestamp"] == "2024-03-10T00:00:00.000Z", session
    report = json.loads((edges_project / "target" / "heap_sync_results.json").read_text())
    assert all(s["rejected"] == 0 for s in report["syncs"])
