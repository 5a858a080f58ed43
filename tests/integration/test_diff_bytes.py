"""The diff compares what is sent, byte for byte: a change in case, in the sign of a zero or in
trailing zeros is sent exactly when it changes the record, whatever the column's collation, and
two keys that differ in case are two identities (Heap's identities are case-sensitive).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from heap_dbt.emulator import run_in_thread
from tests.conftest import APP_ID, dbt, heap_dbt
from tests.warehouses import Warehouse

pytestmark = pytest.mark.integration

CASE_INSENSITIVE = {
    "duckdb": "CAST({} AS VARCHAR) COLLATE NOCASE",
    "postgres": "CAST({} AS text) COLLATE ci",
}
"""A case-insensitive column. Snowflake's COLLATE 'en-ci' is not supported by fakesnow, where the
tests run: there the columns are plain VARCHAR (the case and zero changes still apply)."""
CI_COLLATION = (
    "CREATE COLLATION IF NOT EXISTS public.ci (provider = icu, locale = 'und-u-ks-level2', "
    "deterministic = false)"
)
EXACT = {"duckdb": "DECIMAL(38,10)", "postgres": "numeric", "snowflake": "NUMBER(38,10)"}
"""Only Postgres' unconstrained numeric holds 1234567890123456 and 1234567890123456.0 apart;
a fixed-scale decimal elsewhere prints both alike, so the case is the same value there."""


def _text(warehouse: Warehouse, value: str) -> str:
    literal = "'" + value + "'"
    return CASE_INSENSITIVE.get(warehouse.name, "CAST({} AS VARCHAR)").format(literal)


RED: dict[str, Any] = {"color": "Red", "dbl": "0.0", "num": "1234567890123456", "dbls": [1.5, 0.0]}
"""The row of key ``Red`` before the changes; key ``red`` holds color blue, 1.5, 1 and [1.5]."""


def _model(warehouse: Warehouse, red: dict[str, Any]) -> str:
    double = "FLOAT" if warehouse.name == "snowflake" else "DOUBLE PRECISION"
    rows = [
        f"SELECT {_text(warehouse, k)} AS id, {_text(warehouse, c)} AS color, "
        f"CAST('{d}' AS {double}) AS dbl, CAST('{n}' AS {EXACT[warehouse.name]}) AS num, "
        f"{warehouse.value_sql(ds, 'DOUBLE[]')} AS dbls"
        for k, c, d, n, ds in [
            ("Red", red["color"], red["dbl"], red["num"], red["dbls"]),
            ("red", "blue", "1.5", "1", [1.5]),
        ]
    ]
    return "\nUNION ALL\n".join(rows) + "\n"


def _build(project: Path, warehouse: Warehouse, red: dict[str, Any]) -> None:
    """Rebuild the model with ``red`` (a table, rebuilt by dbt: fakesnow's UPDATE loses -0.0)."""
    (project / "models" / "bytes" / "bytes_users.sql").write_text(_model(warehouse, red))
    dbt(project, "run", "-s", "bytes_users", "--quiet")


DBLS = {
    "duckdb": ("1.5||0.0", "1.5||-0.0"),
    "postgres": ("1.5||0.0", "1.5||-0.0"),
    "snowflake": ("1.5||0.0", "1.5||-0.0"),
}
"""A list of doubles before and after one element's zero turns negative, as Heap receives it."""

SCHEMA = """
version: 2
models:
  - name: bytes_users
    config:
      meta:
        heap: {object: user, key: id}
"""


def _sync(project: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    with run_in_thread() as running:
        proc = heap_dbt(project, "sync", "-s", "bytes_users", base_url=running.url)
        held = running.emulator.snapshot()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads((project / "target" / "heap_sync_results.json").read_text())
    (sync,) = report["syncs"]
    return held, sync


def _numbers(held: dict[str, Any]) -> dict[str, Any]:
    return {
        k: (v["color"], repr(v["dbl"]), v["num"], v["dbls"]) for k, v in held["users"].get(APP_ID, {}).items()
    }


def test_case_sign_of_zero_and_trailing_zeros_are_sent_exactly_when_the_record_changes(
    warehouse: Warehouse, wh_project: Path
) -> None:
    if warehouse.name == "postgres":
        warehouse.execute(wh_project, CI_COLLATION)
    models = wh_project / "models" / "bytes"
    models.mkdir()
    (models / "schema.yml").write_text(SCHEMA)
    _build(wh_project, warehouse, RED)

    # Two identities that differ in case are two users, not one duplicated key.
    held, sync = _sync(wh_project)
    assert (sync["sent"], sync["rejected"]) == (2, 0), sync
    assert _numbers(held) == {
        "Red": (
            "Red",
            "0.0",
            "1234567890123456" if warehouse.name == "postgres" else 1234567890123456,
            DBLS[warehouse.name][0],
        ),
        "red": ("blue", "1.5", 1, "1.5"),
    }

    red = dict(RED)
    changes: list[tuple[str, Any]] = [("color", "RED"), ("dbl", "-0.0"), ("dbls", [1.5, -0.0])]
    if warehouse.name == "postgres":
        changes.append(("num", "1234567890123456.0"))
    for column, value in changes:
        red[column] = value
        _build(wh_project, warehouse, red)
        held, sync = _sync(wh_project)
        assert (sync["sent"], sync["unchanged"]) == (1, 1), (column, sync)
        assert set(held["users"][APP_ID]) == {"Red"}, column
    held_red = held["users"][APP_ID]["Red"]
    assert (held_red["color"], repr(held_red["dbl"]), held_red["dbls"]) == (
        "RED",
        "-0.0",
        DBLS[warehouse.name][1],
    )
    if warehouse.name == "postgres":
        assert held_red["num"] == "1234567890123456.0"

    # Nothing changed: nothing is sent.
    _build(wh_project, warehouse, red)
    _, sync = _sync(wh_project)
    assert sync["sent"] == 0, sync
