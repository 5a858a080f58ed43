"""Each Snowflake type on fakesnow's server: the Arrow the connector gives, and what DuckDB reads back."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from heap_dbt.errors import ConfigError, MissingRelationError
from heap_dbt.profiles import Target
from heap_dbt.warehouse.snowflake.reader import SnowflakeSession
from heap_dbt.warehouse.snowflake.types import refuse
from tests.fakesnow_server import FakeSnow

COLUMNS = {
    "N": "NUMBER(12,2)", "I": "INT", "F": "FLOAT", "V": "VARCHAR", "C": "CHAR(3)", "S": "STRING",
    "B": "BOOLEAN", "D": "DATE", "TNTZ": "TIMESTAMP_NTZ", "TTZ": "TIMESTAMP_TZ", "TLTZ": "TIMESTAMP_LTZ",
    "A": "ARRAY", "VA": "VARIANT", "O": "OBJECT", "BIN": "BINARY",
}  # fmt: skip
ROW = (
    "1234567890.25, 9007199254740993, 1.25, 'x', 'abc', 'str', true, '2024-01-02', "
    "'2024-01-02 03:04:05.123456', '2024-01-02 03:04:05.123+02:00', '2024-01-02 03:04:05.123', "
    'array_construct(1, \'a\'), parse_json(\'{"a": 1, "b": {"c": "x"}}\'), '
    "object_construct('k', 1), to_binary('ab', 'HEX')"
)


@pytest.fixture(scope="module")
def session(fakesnow: FakeSnow) -> Iterator[SnowflakeSession]:
    creds = {"type": "snowflake", **fakesnow.connect_args(), "database": "types_db", "schema": "s"}
    target = Target(profile="p", name="fake", type="snowflake", credentials=creds, profiles_dir=Path("."))
    s = SnowflakeSession.from_target(target)
    s.execute("CREATE DATABASE IF NOT EXISTS types_db").close()
    s.execute("CREATE SCHEMA IF NOT EXISTS types_db.s").close()
    cols = ", ".join(f"{n} {t}" for n, t in COLUMNS.items())
    s.execute(f"CREATE OR REPLACE TABLE types_db.s.t ({cols})").close()
    s.execute(f"INSERT INTO types_db.s.t SELECT {ROW}").close()
    s.execute(
        f"INSERT INTO types_db.s.t ({', '.join(COLUMNS)}) SELECT {', '.join(['NULL'] * len(COLUMNS))}"
    ).close()
    yield s
    s.close()


def test_each_type_reaches_duckdb_as_its_column_type_with_nulls_kept(session: SnowflakeSession) -> None:
    cols = session.describe("types_db.s.t")
    assert [c.source for c in cols] == list(COLUMNS)
    usable = [c for c in cols if c.type.kind != "unsupported"]
    select = ", ".join(c.select for c in usable)
    batches = list(session.arrow(f"SELECT {select} FROM types_db.s.t ORDER BY I NULLS LAST", batch_rows=10))
    import pyarrow as pa

    arrow = pa.Table.from_batches(batches)
    con = duckdb.connect()
    con.register("stream", arrow)
    restore = ", ".join(f"{c.restored} AS {c.name}" for c in usable)
    rel = con.sql(f"SELECT {restore} FROM stream")
    assert {n: str(t) for n, t in zip(rel.columns, rel.types, strict=True)} == {
        c.name: c.type.sql for c in usable
    }
    full, empty = rel.fetchall()
    got = dict(zip(rel.columns, full, strict=True))
    assert got["n"] == Decimal("1234567890.25")
    assert got["i"] == 9007199254740993
    assert got["f"] == 1.25
    assert (got["v"], got["c"], got["s"], got["b"]) == ("x", "abc", "str", True)
    assert got["d"] == dt.date(2024, 1, 2)
    # UTC, microseconds (the record SQL cuts them to milliseconds): NTZ is taken as UTC, TZ
    # converted from +02:00.
    assert got["tntz"] == dt.datetime(2024, 1, 2, 3, 4, 5, 123456)
    assert got["ttz"] == dt.datetime(2024, 1, 2, 1, 4, 5, 123000)
    assert got["tltz"] == dt.datetime(2024, 1, 2, 3, 4, 5, 123000)  # the session's zone is UTC
    # fakesnow reports an ARRAY column as VARIANT (real Snowflake: ARRAY, read as a list); as
    # JSON the array is still joined with || (tests/unit/test_sql_json.py), so Heap gets the same.
    (array,) = [c for c in usable if c.name == "a"]
    assert got["a"] == (["1", "a"] if array.type.kind == "list" else '[1,"a"]')
    assert got["va"] == '{"a":1,"b":{"c":"x"}}'
    assert got["o"] == '{"k":1}'
    # fakesnow's Arrow gives a NULL TIMESTAMP as 1970-01-01; epoch microseconds keep it NULL.
    assert empty == (None,) * len(usable)


def test_binary_is_refused_naming_the_column(session: SnowflakeSession) -> None:
    (binary,) = [c for c in session.describe("types_db.s.t") if c.source == "BIN"]
    with pytest.raises(ConfigError, match=r"Column BIN of model t is BINARY.*cast it in the model"):
        refuse(binary, model="t")


def test_a_missing_relation_is_missing(session: SnowflakeSession) -> None:
    with pytest.raises(MissingRelationError):
        session.describe("types_db.s.nope")
