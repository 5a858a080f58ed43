"""The PostgreSQL fingerprint, on the real server: an unchanged model gives the same one, and any
change to a value heap-dbt sends gives another, whatever the column's type.

The fingerprint lets a no-op sync skip a model without a diff, so a change it missed would be a
change never sent. It is the sum of the row hashes, which hash each value with its type's own
hash function (``PostgresDialect``): the same hashes find the changed rows in the diff, and a
first sync adds the fingerprint up from the rows it streams.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from heap_dbt import sql
from heap_dbt.config import parse_specs, resolve_columns
from heap_dbt.manifest import ModelNode
from heap_dbt.warehouse import hash_sum
from heap_dbt.warehouse.postgres.profile import parse_profile
from heap_dbt.warehouse.postgres.reader import PostgresReader
from tests.warehouses import PG_HOST, PG_PORT, PG_USER, Postgres, postgres_or_skip

pytestmark = pytest.mark.integration

# One column per kind the fingerprint hashes its own way, and the types that share a kind.
COLUMNS = {
    "i2": ("smallint", "1", "2"),
    "i4": ("integer", "1", "2"),
    "i8": ("bigint", "9007199254740993", "9007199254740992"),
    "f4": ("real", "1.5", "2.5"),
    "f8": ("double precision", "0.1", "0.30000000000000004"),
    "f8_nan": ("double precision", "'NaN'", "'Infinity'"),
    "num": ("numeric(12, 2)", "1.10", "1.11"),
    "num_loose": ("numeric", "1.5", "1.50001"),
    "flag": ("boolean", "true", "false"),
    "day": ("date", "'2026-03-01'", "'2026-03-02'"),
    "day_inf": ("date", "'infinity'", "'-infinity'"),
    "at": ("timestamp", "'2026-03-01 12:00:00.001'", "'2026-03-01 12:00:00.002'"),
    "at_tz": ("timestamptz", "'2026-11-01 01:30:00-04'", "'2026-11-01 01:30:00-05'"),
    "txt": ("text", "'a'", "'b'"),
    "vc": ("varchar(8)", "'a'", "'A'"),
    "ch": ("char(3)", "'ab'", "'ac'"),
    "uid": ("uuid", "'2d3c2f5e-3b1a-4c6e-9f00-1a2b3c4d5e6f'", "'2d3c2f5e-3b1a-4c6e-9f00-1a2b3c4d5e70'"),
    "doc": ("jsonb", """'{"a": 1}'""", """'{"a": 2}'"""),
    "js": ("json", """'{"a": [1, 2]}'""", """'{"a": [2, 1]}'"""),
    "tags": ("text[]", "array['x', 'y']", "array['y', 'x']"),
    "nums": ("numeric[]", "array[1.5]", "array[1.50]"),
}
TYPES = ", ".join(f"{name} {t}" for name, (t, _, _) in COLUMNS.items())


def values(**changed: str) -> str:
    return ", ".join(changed.get(name, before) for name, (_, before, _) in COLUMNS.items())


@pytest.fixture(scope="module")
def pg() -> Iterator[Postgres]:
    wh = postgres_or_skip()
    yield wh
    wh.close()


@pytest.fixture(scope="module")
def reader(pg: Postgres) -> Iterator[PostgresReader]:
    database = pg._create()
    creds = {"type": "postgres", "host": PG_HOST, "port": PG_PORT, "user": PG_USER, "dbname": database}
    opened = PostgresReader(parse_profile("pg", creds), writable=True)
    yield opened
    opened.close()


def build(reader: PostgresReader, *rows: str) -> sql.RecordQuery:
    """Rebuild table t from ``rows`` (a fresh table, as dbt's table materialization makes) and
    return the record query of a user sync keyed on ``id``."""
    for statement in (
        "DROP TABLE IF EXISTS t",
        f"CREATE TABLE t (id text, {TYPES})",
        *(f"INSERT INTO t VALUES ({row})" for row in rows),
    ):
        reader._cursor_run(statement)
    node = ModelNode(
        unique_id="model.demo.t", name="t", relation_name='"public"."t"', materialized="table",
        meta={"heap": {"object": "user", "key": "id"}}, tags=(), fqn=("demo", "t"),
        original_file_path="models/t.sql",
    )  # fmt: skip
    problems: list[str] = []
    (spec,) = parse_specs([node], problems)
    columns = reader.columns('"public"."t"')
    query = sql.record_query(
        resolve_columns(spec, [c.name for c in columns], problems), columns,
        key_seed="t", definition_seed="t", dialect=reader.dialect,
    )  # fmt: skip
    assert problems == []
    return query


def fingerprint(reader: PostgresReader, *rows: str) -> tuple[str, tuple[Any, ...]]:
    """Rebuild table t from ``rows`` and return its fingerprint, and the one-statement probe."""
    query = build(reader, *rows)
    probe = reader.fetch_one(query.probe_sql)
    both = reader.fetch_one(query.probe_duplicates_sql)
    assert both[:2] == probe
    return query.fingerprint(probe), both


def row_hashes(reader: PostgresReader, *rows: str) -> dict[str | None, int]:
    """Rebuild table t from ``rows`` and return each key's row hash, as a first sync streams it."""
    query = build(reader, *rows)
    hashes: dict[str | None, int] = {}
    for batch in reader.records(query, batch_rows=1000):
        keys, row_hash = batch.column(sql.KEY).to_pylist(), batch.column(sql.HASH).to_pylist()
        hashes |= dict(zip(keys, row_hash, strict=True))
    return hashes


BASE = ("'u1', " + values(), "'u2', " + values(i4="7", txt="'z'"))


def test_the_same_rows_in_a_rebuilt_table_give_the_same_fingerprint(reader: PostgresReader) -> None:
    first, _ = fingerprint(reader, *BASE)
    again, _ = fingerprint(reader, *reversed(BASE))
    assert first == again


@pytest.mark.parametrize("column", list(COLUMNS))
def test_a_changed_value_of_any_type_changes_the_fingerprint(reader: PostgresReader, column: str) -> None:
    before, _ = fingerprint(reader, *BASE)
    after, _ = fingerprint(reader, "'u1', " + values(**{column: COLUMNS[column][2]}), BASE[1])
    assert before != after


@pytest.mark.parametrize("column", list(COLUMNS))
def test_a_value_becoming_null_changes_the_fingerprint(reader: PostgresReader, column: str) -> None:
    before, _ = fingerprint(reader, *BASE)
    after, _ = fingerprint(reader, "'u1', " + values(**{column: "NULL"}), BASE[1])
    assert before != after


def test_values_moved_between_rows_or_columns_change_the_fingerprint(reader: PostgresReader) -> None:
    before, _ = fingerprint(reader, *BASE)
    # Row u1 takes u2's txt and u2 takes u1's: the same multiset of values per column.
    swapped_rows, _ = fingerprint(reader, "'u1', " + values(txt="'z'"), "'u2', " + values(i4="7"))
    # Within row u1, text and varchar trade values of one kind.
    swapped_columns, _ = fingerprint(reader, "'u1', " + values(txt="'a'", vc="'b'"), BASE[1])
    moved, _ = fingerprint(reader, "'u1', " + values(txt="'b'", vc="'a'"), BASE[1])
    assert before != swapped_rows
    assert swapped_columns != moved


def test_the_first_sync_probe_counts_repeated_keys(reader: PostgresReader) -> None:
    _, probe = fingerprint(reader, *BASE, "'u1', " + values(), "NULL, " + values(), "NULL, " + values())
    assert probe[0] == 5
    assert probe[2] == 1  # u1 twice; NULL keys are not repeats


def test_the_fingerprint_is_the_sum_of_the_streamed_row_hashes(reader: PostgresReader) -> None:
    # What a first sync relies on to skip the probe: the rows it streams add up to the fingerprint.
    rows = [*BASE, "'u3', " + values(**{c: "NULL" for c in COLUMNS}), "NULL, " + values(txt="'q'")]
    query = build(reader, *rows)
    probe = reader.fetch_one(query.probe_sql)
    streamed, total = 0, 0
    for batch in reader.records(query, batch_rows=2):
        streamed += batch.num_rows
        total += hash_sum(batch.column(sql.HASH))
    assert (streamed, str(total)) == (probe[0], probe[1])
    assert streamed == len(rows)


@pytest.mark.parametrize("column", list(COLUMNS))
def test_a_changed_value_of_any_type_changes_that_rows_hash_only(reader: PostgresReader, column: str) -> None:
    before = row_hashes(reader, *BASE)
    after = row_hashes(reader, "'u1', " + values(**{column: COLUMNS[column][2]}), BASE[1])
    nulled = row_hashes(reader, "'u1', " + values(**{column: "NULL"}), BASE[1])
    assert before["u1"] != after["u1"] != nulled["u1"] != before["u1"]
    assert before["u2"] == after["u2"] == nulled["u2"]
