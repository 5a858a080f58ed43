"""The diff compares what is sent, byte for byte: a change in case, in the sign of a zero or in
trailing zeros is sent exactly when it changes the record, whatever the column's collation, and
two keys that differ in case are two identities (Heap's identities are case-sensitive).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import duckdb
import pytest

from heap_dbt.emulator import run_in_thread
from heap_dbt.warehouse import KEY_HASH_1, KEY_HASH_2, ROW_HASH, Column, ColumnType, FilterSpec
from heap_dbt.warehouse.duckdb.dialect import DuckDBDialect
from heap_dbt.warehouse.postgres.dialect import PostgresDialect
from tests.conftest import APP_ID, dbt, heap_dbt
from tests.warehouses import Warehouse, _pg, postgres_or_skip

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


# --- an upgrade resends nothing ordinary ----------------------------------------------------------

_STRING = ColumnType("string", "VARCHAR")
_COLUMNS = [
    Column("id", _STRING),
    Column("name", _STRING),
    Column("n", ColumnType("integer", "BIGINT")),
    Column("d", ColumnType("float", "DOUBLE")),
    Column("dec", ColumnType("decimal", "DECIMAL(12,2)")),
    Column("ts", ColumnType("timestamp", "TIMESTAMP")),
    Column("day", ColumnType("date", "DATE")),
    Column("tags", ColumnType("list", "VARCHAR[]", (("element", _STRING),))),
]
_ROWS = (
    "SELECT 'u1' AS id, 'Ada' AS name, CAST(7 AS {bigint}) AS n, CAST(1.5 AS {double}) AS d, "
    "CAST(12.30 AS {decimal}) AS dec, TIMESTAMP '2024-01-02 03:04:05.123' AS ts, DATE '2024-03-10' AS day, "
    "{tags} AS tags{extra} UNION ALL SELECT 'u2', NULL, NULL, 0.0, NULL, NULL, NULL, NULL{null}"
)
PREVIOUS_RELEASE = {
    "duckdb": [
        ("u1", 13718085291888536295, 15346552684769186138, 5649548813572444541),
        ("u2", 15498852812627116087, 10663663928685860905, 8539924849038628808),
    ],
    "postgres": [
        ("u1", -8912818469469534968, -7712415981798569750, 8952745411047256177),
        ("u2", 3864618819059095058, -4098408609948481326, -1510677117226692180),
    ],
}
"""Row hash and key hashes (k1, k2) of two ordinary rows, as the release before byte-exact hashing
computed them (seed 42): the same here, so an upgrade resends none of them."""


def _hashes(sql: str) -> str:
    return f'SELECT id, "{ROW_HASH}", "{KEY_HASH_1}", "{KEY_HASH_2}" FROM ({sql}) AS s ORDER BY id'


def test_ordinary_rows_hash_as_the_previous_release_hashed_them_on_duckdb() -> None:
    f = FilterSpec(relation="t", key=_COLUMNS[0], columns=tuple(_COLUMNS), seed="42", compare_hashes=True)
    con = duckdb.connect()
    rows = _ROWS.format(
        bigint="BIGINT", double="DOUBLE", decimal="DECIMAL(12,2)", tags="['a', 'b']", extra="", null=""
    )
    con.execute(f"CREATE TABLE t AS {rows}")
    sql = DuckDBDialect().candidates_sql(f, previous=None, duplicates=True, duplicates_table=None)
    assert con.sql(_hashes(sql)).fetchall() == PREVIOUS_RELEASE["duckdb"]


def test_ordinary_rows_hash_as_the_previous_release_hashed_them_on_postgres() -> None:
    postgres_or_skip()
    columns = [*_COLUMNS[:7], Column("tags", ColumnType("list", "text[]", (("element", _STRING),)))]
    columns.append(Column("num", ColumnType("decimal", "NUMERIC")))  # 7.5: no trailing zero
    f = FilterSpec(
        relation="pg_temp.t", key=columns[0], columns=tuple(columns), seed="42", compare_hashes=True
    )
    rows = _ROWS.format(
        bigint="bigint",
        double="float8",
        decimal="numeric(12,2)",
        tags="ARRAY['a', 'b']",
        extra=", 7.5::numeric AS num",
        null=", NULL",
    )
    con = _pg()
    try:
        with con.cursor() as cur:
            cur.execute(f"CREATE TEMPORARY TABLE t AS {rows}")
            cur.execute(
                _hashes(
                    PostgresDialect().candidates_sql(f, previous=None, duplicates=True, duplicates_table=None)
                )
            )
            assert cur.fetchall() == PREVIOUS_RELEASE["postgres"]
    finally:
        con.close()
