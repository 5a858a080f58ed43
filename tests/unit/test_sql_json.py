"""JSON values (Snowflake's VARIANT and OBJECT): objects flatten to dotted names, scalars are their value."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from heap_dbt import sql
from heap_dbt.config import parse_specs, resolve_columns
from heap_dbt.manifest import ModelNode
from heap_dbt.warehouse import Column, ColumnType
from heap_dbt.warehouse.duckdb.dialect import DuckDBDialect
from tests.unit.records import Records

JSON = ColumnType("json", "JSON")
ID = ColumnType("string", "VARCHAR")


class JsonRecords(Records):
    """Records of a table (id, j) whose j the record SQL reads as kind json."""

    def properties(self, value: str | None, *, truncate: bool = False) -> tuple[str | None, dict[str, Any]]:
        self.con.execute("CREATE OR REPLACE TABLE t AS SELECT 'u1' AS id, CAST(? AS JSON) AS j", [value])
        heap = {"object": "user", "key": "id", "fields": {"meta": "j"}, "truncate": truncate}
        model = ModelNode(
            unique_id="model.demo.t", name="t", relation_name='"memory"."main"."t"',
            materialized="table", meta={"heap": heap}, tags=(), fqn=("demo", "t"),
            original_file_path="models/t.sql",
        )  # fmt: skip
        problems: list[str] = []
        (spec,) = parse_specs([model], problems)
        columns = [Column("id", ID), Column("j", JSON)]
        spec = resolve_columns(spec, ["id", "j"], problems)
        assert problems == []
        query = sql.record_query(spec, columns, key_seed="t", definition_seed="t", dialect=DuckDBDialect())
        cur = self.con.execute(query.sql)
        names = [d[0] for d in cur.description]
        (row,) = cur.fetchall()
        r = dict(zip(names, row, strict=True))
        if r[sql.REASON]:
            return r[sql.REASON], {}
        text = r[sql.RECORD][: -len(sql.SEPARATOR)]
        return None, json.loads(text)["properties"]


@pytest.fixture(scope="module")
def records() -> Iterator[JsonRecords]:
    r = JsonRecords()
    yield r
    r.close()


NESTED = {
    "a": 1, "b": {"c": "x", "d.e": [1, "two", None, True], "gone": None, "x y": {"z": [{"w": 1}]}},
    "t": True, "s": "str", "f": 1.5, "big": 9007199254740993, "neg": -7, "u": "é\n",
}  # fmt: skip


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (NESTED, {
            "meta.a": 1, "meta.b.c": "x", "meta.b.d.e": "1||two||true", "meta.b.x y.z": '{"w":1}',
            "meta.t": "true", "meta.s": "str", "meta.f": 1.5, "meta.big": "9007199254740993",
            "meta.neg": -7, "meta.u": "é\n",
        }),
        ("scalar", {"meta": "scalar"}),
        (42, {"meta": 42}),
        (12.5, {"meta": 12.5}),
        (False, {"meta": "false"}),
        ([1, "a", None], {"meta": "1||a"}),
        ({}, {}),
        (None, {}),
        ({'q"k': 1, "dot.ted": {"in": 2}}, {'meta.q"k': 1, "meta.dot.ted.in": 2}),
    ],
    ids=["nested-object", "string", "integer", "float", "boolean", "array", "empty-object", "json-null",
         "quoted-keys"],
)  # fmt: skip
def test_json_objects_flatten_to_dotted_names_and_scalars_are_their_value(
    records: JsonRecords, value: Any, expected: dict[str, Any]
) -> None:
    reason, props = records.properties(json.dumps(value))
    assert reason is None
    assert props == expected


def test_sql_null_sends_no_property(records: JsonRecords) -> None:
    assert records.properties(None) == (None, {})


def test_a_long_json_string_is_rejected_or_truncated_as_any_string(records: JsonRecords) -> None:
    value = json.dumps({"note": "x" * 1100})
    reason, _ = records.properties(value)
    assert reason is not None and "JSON property 'meta'" in reason and "1023" in reason
    reason, props = records.properties(value, truncate=True)
    assert reason is None and props == {"meta.note": "x" * sql.MAX_VALUE}


@pytest.mark.parametrize(
    "value",
    ['{"a": {"b": NaN}}', "[1, Infinity]", "-Infinity", '{"list": [1.5, NaN]}'],
    ids=["nan-in-object", "infinity-in-array", "minus-infinity-scalar", "nan-in-nested-array"],
)
@pytest.mark.parametrize("truncate", [False, True], ids=["strict", "truncate"])
def test_nan_or_infinity_anywhere_in_json_is_rejected_as_a_doubles_is(
    records: JsonRecords, value: str, truncate: bool
) -> None:
    # DuckDB's JSON reads them, and Snowflake writes them so in a VARIANT; no JSON carries them to Heap.
    assert records.properties(value, truncate=truncate) == ("property 'meta' holds NaN or infinite", {})


def test_a_string_that_reads_nan_is_a_string(records: JsonRecords) -> None:
    assert records.properties('{"a": "NaN", "b": ["Infinity"]}') == (
        None,
        {"meta.a": "NaN", "meta.b": "Infinity"},
    )
