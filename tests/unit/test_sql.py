"""Records built by the warehouse: ``sql.record_query`` run over real DuckDB tables.

Most tests write a small table into a DuckDB file, read it back through ``DuckDBReader``
as the engine does, and check the exact JSON Heap would receive, or the exact reason a
row is rejected. The numbers section at the end checks exact JSON text on one in-memory
connection, because it has many cases.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pytest

from heap_dbt import sql
from heap_dbt.config import SyncSpec, parse_specs, resolve_columns
from heap_dbt.manifest import ModelNode
from heap_dbt.plan import SyncOptions, prepare
from heap_dbt.warehouse import ColumnType
from heap_dbt.warehouse.duckdb import DuckDBReader
from heap_dbt.warehouse.duckdb.dialect import DuckDBDialect
from tests.unit.records import MAX_SAFE_INTEGER as SAFE
from tests.unit.records import Records, assert_heap_reads

USER = {"object": "user", "key": "id"}
ACCOUNT = {"object": "account", "key": "id"}
EVENT = {"object": "event", "key": "id", "identity": "who", "event_name": "Signup"}
EVENT_BY_COLUMN = {"object": "event", "key": "id", "identity": "who", "event_name_column": "ev"}


@dataclass(frozen=True)
class Row:
    key: str | None
    reason: str | None
    record: dict[str, Any] | None  # None for a rejected row
    truncated: int
    identity: str | None


class Warehouse:
    """A DuckDB file in tmp_path; ``rows`` builds a table, plans a sync on it and runs its query."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.readers: list[DuckDBReader] = []

    def model(self, table: str, heap: Any) -> ModelNode:
        return ModelNode(
            unique_id=f"model.demo.{table}",
            name=table,
            relation_name=f'"{self.path.stem}"."main"."{table}"',
            materialized="table",
            meta={"heap": heap},
            tags=(),
            fqn=("demo", table),
            original_file_path=f"models/{table}.sql",
        )

    def create(self, table: str, select: str) -> None:
        self.close()  # DuckDB lets one process attach a file once
        con = duckdb.connect(str(self.path))
        try:
            con.execute(f'CREATE OR REPLACE TABLE "{table}" AS {select}')
        finally:
            con.close()

    def close(self) -> None:
        while self.readers:
            self.readers.pop().close()

    def reader(self) -> DuckDBReader:
        reader = DuckDBReader(self.path)
        self.readers.append(reader)
        return reader

    def spec(self, reader: DuckDBReader, table: str, heap: Any) -> tuple[SyncSpec, list[Any]]:
        problems: list[str] = []
        (spec,) = parse_specs([self.model(table, heap)], problems)
        assert spec.model.relation_name is not None
        columns = reader.columns(spec.model.relation_name)
        resolved = resolve_columns(spec, [c.name for c in columns], problems)
        assert problems == []
        return resolved, columns

    def rows(self, select: str, heap: Any, *, table: str = "t", label: str | None = None) -> list[Row]:
        self.create(table, select)
        reader = self.reader()
        spec, columns = self.spec(reader, table, heap)
        seed = label or table
        query = sql.record_query(spec, columns, key_seed=seed, definition_seed=seed, dialect=DuckDBDialect())
        return run(reader, query)


def without_separator(record: str) -> str:
    """A record's JSON: the SQL ends each one with exactly one SEPARATOR, for framing bodies."""
    assert record.endswith(sql.SEPARATOR), record
    return record[: -len(sql.SEPARATOR)]


def run(reader: DuckDBReader, query: sql.RecordQuery) -> list[Row]:
    out: list[Row] = []
    for batch in reader.stream(query.sql, batch_rows=1000):
        for r in batch.to_pylist():
            out.append(
                Row(
                    key=r[sql.KEY],
                    reason=r[sql.REASON],
                    # A rejected row's record is never sent, and may not be JSON (a NULL key).
                    record=json.loads(without_separator(r[sql.RECORD])) if r[sql.REASON] is None else None,
                    truncated=r[sql.TRUNCATED],
                    identity=r.get(sql.IDENTITY),
                )
            )
    return sorted(out, key=lambda row: (row.key is None, row.key or ""))


@pytest.fixture
def wh(tmp_path: Path) -> Iterator[Warehouse]:
    warehouse = Warehouse(tmp_path / "wh.duckdb")
    yield warehouse
    warehouse.close()


def one(wh: Warehouse, select: str, heap: Any = USER, **kwargs: Any) -> Row:
    (row,) = wh.rows(select, heap, **kwargs)
    return row


def properties(wh: Warehouse, columns: str, heap: Any = USER) -> dict[str, Any]:
    """The properties of one valid user row ``SELECT 'u1' AS id, <columns>``."""
    row = one(wh, f"SELECT 'u1' AS id, {columns}", heap)
    assert row.reason is None, row.reason
    assert row.record["identity"] == "u1"
    props: dict[str, Any] = row.record["properties"]
    return props


# --- value conversion -------------------------------------------------------------------------

VALUES = [
    pytest.param("'plain' AS v", "plain", id="string"),
    pytest.param("'say \"hi\"' AS v", 'say "hi"', id="double-quotes"),
    pytest.param("'it''s' AS v", "it's", id="single-quote"),
    pytest.param("'back\\slash' AS v", "back\\slash", id="backslash"),
    pytest.param("'line1' || chr(10) || 'line2' || chr(9) AS v", "line1\nline2\t", id="newline-tab"),
    pytest.param("'héllo ✓ 😀 日本' AS v", "héllo ✓ 😀 日本", id="unicode"),
    pytest.param("chr(1) AS v", "\x01", id="control-char"),
    pytest.param("'' AS v", "", id="empty-string"),
    pytest.param("'00123' AS v", "00123", id="numeric-looking-string"),
    pytest.param("42 AS v", 42, id="integer"),
    pytest.param("-7::TINYINT AS v", -7, id="tinyint"),
    pytest.param("9007199254740993::BIGINT AS v", "9007199254740993", id="bigint-past-2^53"),
    pytest.param("1.5::DOUBLE AS v", 1.5, id="double"),
    # A REAL goes as the shortest decimal that reads back as the same float32, not as a double.
    pytest.param("0.1::FLOAT AS v", 0.1, id="float32"),
    pytest.param("123456789::FLOAT AS v", 123456790.0, id="float32-rounded"),
    pytest.param("'1e-40'::FLOAT AS v", 1e-40, id="float32-subnormal"),
    pytest.param("'-0.0'::FLOAT AS v", -0.0, id="float32-negative-zero"),
    pytest.param("[0.1::FLOAT, 2.5::FLOAT] AS v", "0.1||2.5", id="float32-list"),
    pytest.param("1e300::DOUBLE AS v", 1e300, id="double-exponent"),
    pytest.param("12.34::DECIMAL(10,2) AS v", 12.34, id="decimal"),
    pytest.param("-0.5::DECIMAL(4,1) AS v", -0.5, id="negative-decimal"),
    pytest.param("true AS v", "true", id="true"),
    pytest.param("false AS v", "false", id="false"),
    pytest.param("DATE '2024-02-29' AS v", "2024-02-29", id="date"),
    pytest.param(
        "TIMESTAMP '2024-01-02 03:04:05.123456' AS v", "2024-01-02T03:04:05.123Z", id="timestamp-micros-to-ms"
    ),
    pytest.param(
        "TIMESTAMP '2024-01-02 03:04:05' AS v", "2024-01-02T03:04:05.000Z", id="timestamp-whole-second"
    ),
    pytest.param("TIMESTAMP_S '2024-01-02 03:04:05' AS v", "2024-01-02T03:04:05.000Z", id="timestamp-s"),
    pytest.param(
        "TIMESTAMP_NS '2024-01-02 03:04:05.987654321' AS v", "2024-01-02T03:04:05.987Z", id="timestamp-ns"
    ),
    pytest.param(
        "TIMESTAMPTZ '2024-01-02 03:04:05.5+02:00' AS v", "2024-01-02T01:04:05.500Z", id="timestamptz-east"
    ),
    pytest.param(
        "TIMESTAMPTZ '2024-01-01 23:30:00-07:30' AS v",
        "2024-01-02T07:00:00.000Z",
        id="timestamptz-west-next-day",
    ),
    pytest.param("['a', 'b', 'c'] AS v", "a||b||c", id="string-list"),
    pytest.param("[1, 2, 3] AS v", "1||2||3", id="int-list"),
    pytest.param("[true, false] AS v", "true||false", id="bool-list"),
    pytest.param("[DATE '2024-01-01', DATE '2024-12-31'] AS v", "2024-01-01||2024-12-31", id="date-list"),
    pytest.param("[1.5, NULL, -2.25::DOUBLE] AS v", "1.5||-2.25", id="double-list"),
    pytest.param("['a', NULL, 'b'] AS v", "a||b", id="list-skips-nulls"),
    pytest.param("['x|y', 'z\"'] AS v", 'x|y||z"', id="list-escaping"),
    pytest.param(
        "'3f2504e0-4f89-11d3-9a0c-0305e82c3301'::UUID AS v", "3f2504e0-4f89-11d3-9a0c-0305e82c3301", id="uuid"
    ),
]


def test_a_float32_in_a_struct_is_its_shortest_decimal(wh: Warehouse) -> None:
    assert properties(wh, "{'r': 0.1::FLOAT} AS v") == {"v.r": 0.1}


@pytest.mark.parametrize(("column", "expected"), VALUES)
def test_value_is_converted_to_heap_json(wh: Warehouse, column: str, expected: Any) -> None:
    props = properties(wh, column)
    assert props == {"v": expected}
    assert type(props["v"]) is type(expected)


@pytest.mark.parametrize(
    ("column", "expected_text"),
    [
        pytest.param("42 AS v", '"v":42', id="int"),
        pytest.param("12.30::DECIMAL(10,2) AS v", '"v":12.30', id="decimal-keeps-scale"),
        pytest.param("true AS v", '"v":"true"', id="bool-as-string"),
    ],
)
def test_numbers_are_json_numbers_and_booleans_strings(
    wh: Warehouse, column: str, expected_text: str
) -> None:
    wh.create("t", f"SELECT 'u1' AS id, {column}")
    reader = wh.reader()
    spec, columns = wh.spec(reader, "t", USER)
    query = sql.record_query(spec, columns, key_seed="t", definition_seed="t", dialect=DuckDBDialect())
    (batch,) = list(reader.stream(query.sql, batch_rows=10))
    assert expected_text in without_separator(batch.column(sql.RECORD)[0].as_py())


def test_struct_flattens_to_dotted_names_two_levels_deep(wh: Warehouse) -> None:
    props = properties(wh, "{'a': {'b': 1, 'c': 'z'}, 'e': true, 'n': NULL::INTEGER} AS s")
    assert props == {"s.a.b": 1, "s.a.c": "z", "s.e": "true"}


def test_struct_field_names_are_escaped(wh: Warehouse) -> None:
    props = properties(wh, """{'we"ird': 1, 'it''s': 'x'} AS s""")
    assert props == {'s.we"ird': 1, "s.it's": "x"}


@pytest.mark.parametrize(
    ("column", "expected"),
    [
        pytest.param("MAP {'k1': 1, 'k2': NULL, 'k3': 3} AS m", {"m.k1": 1, "m.k3": 3}, id="string-keys"),
        pytest.param("MAP {1: 2.5, 2: -1.0} AS m", {"m.1": 2.5, "m.2": -1.0}, id="integer-keys"),
        pytest.param("MAP {'a': true} AS m", {"m.a": "true"}, id="boolean-values"),
        pytest.param("MAP {'a': NULL::INTEGER} AS m", {}, id="all-null-values"),
    ],
)
def test_map_becomes_dotted_properties(wh: Warehouse, column: str, expected: dict[str, Any]) -> None:
    assert properties(wh, column) == expected


def test_map_of_strings_is_truncated_when_asked(wh: Warehouse) -> None:
    heap = {**USER, "truncate": True}
    row = one(wh, "SELECT 'u1' AS id, MAP {'k1': 'v1', 'k2': NULL, 'k3': repeat('z', 1100)} AS m", heap)
    assert row.reason is None
    assert row.record["properties"] == {"m.k1": "v1", "m.k3": "z" * 1023}
    assert row.truncated == 1


def test_map_of_strings_without_truncate(wh: Warehouse) -> None:
    assert properties(wh, "MAP {'k1': 'v1', 'k2': NULL} AS m") == {"m.k1": "v1"}


def test_null_values_are_left_out_whatever_their_type(wh: Warehouse) -> None:
    props = properties(
        wh,
        "NULL::VARCHAR AS s, NULL::INTEGER AS i, NULL::DOUBLE AS f, NULL::DECIMAL(9,2) AS d, "
        "NULL::BOOLEAN AS b, NULL::DATE AS dt, NULL::TIMESTAMP AS ts, NULL::TIMESTAMPTZ AS tz, "
        "NULL::VARCHAR[] AS l, NULL::STRUCT(a INTEGER) AS st, NULL::MAP(VARCHAR, INTEGER) AS m, "
        "'kept' AS k",
    )
    assert props == {"k": "kept"}


def test_record_without_properties_has_an_empty_object(wh: Warehouse) -> None:
    row = one(wh, "SELECT 'u1' AS id, NULL::VARCHAR AS plan")
    assert row.record == {"identity": "u1", "properties": {}}


def test_fields_rename_properties(wh: Warehouse) -> None:
    heap = {**USER, "fields": {"Plan name": "plan", 'Quote "q"': "plan"}}
    props = properties(wh, "'pro' AS plan, 'x' AS other", heap)
    assert props == {"Plan name": "pro", 'Quote "q"': "pro"}


@pytest.mark.parametrize(
    ("heap", "select", "expected"),
    [
        pytest.param(
            USER,
            "SELECT 'a@x.com' AS id, 'pro' AS plan",
            {"identity": "a@x.com", "properties": {"plan": "pro"}},
            id="user",
        ),
        pytest.param(
            USER,
            "SELECT 42 AS id, 'pro' AS plan",
            {"identity": "42", "properties": {"plan": "pro"}},
            id="user-integer-key",
        ),
        pytest.param(
            ACCOUNT,
            "SELECT 'acme' AS id, 10 AS seats",
            {"account_id": "acme", "properties": {"seats": 10}},
            id="account",
        ),
    ],
)
def test_record_shape(wh: Warehouse, heap: Any, select: str, expected: dict[str, Any]) -> None:
    row = one(wh, select, heap)
    assert row.reason is None
    assert row.record == expected
    assert row.identity is None


# --- events -----------------------------------------------------------------------------------


def test_event_record_has_identity_event_timestamp_and_idempotency_key(wh: Warehouse) -> None:
    heap = {**EVENT, "timestamp": "at"}
    row = one(wh, "SELECT 1 AS id, 'u1' AS who, TIMESTAMP '2024-01-02 03:04:05.5' AS at, 'pro' AS plan", heap)
    assert row.reason is None
    key = row.record.pop("idempotency_key")
    assert row.record == {
        "identity": "u1",
        "event": "Signup",
        "timestamp": "2024-01-02T03:04:05.500Z",
        "properties": {"plan": "pro"},
    }
    assert len(key) == 32
    assert int(key, 16) >= 0
    assert (row.key, row.identity) == ("1", "u1")


@pytest.mark.parametrize(
    ("column", "expected"),
    [
        pytest.param("TIMESTAMPTZ '2024-01-02 03:04:05+05:00'", "2024-01-01T22:04:05.000Z", id="timestamptz"),
        # An event's time is an instant: a DATE is its midnight, UTC, in the same ISO form.
        pytest.param("DATE '2024-01-02'", "2024-01-02T00:00:00.000Z", id="date-is-midnight-utc"),
        pytest.param("TIMESTAMP_NS '2024-01-02 03:04:05.999999999'", "2024-01-02T03:04:05.999Z", id="ns"),
    ],
)
def test_event_timestamp_types(wh: Warehouse, column: str, expected: str) -> None:
    row = one(wh, f"SELECT 1 AS id, 'u1' AS who, {column} AS at", {**EVENT, "timestamp": "at"})
    assert row.record["timestamp"] == expected


@pytest.mark.parametrize(
    "column",
    [
        pytest.param("DATE '10000-01-01'", id="date-year-10000"),
        pytest.param("TIMESTAMP '0001-01-01 00:00:00' - INTERVAL 1 SECOND", id="timestamp-bc"),
        pytest.param("TIMESTAMPTZ '9999-12-31 23:30:00-01:00'", id="timestamptz-year-10000-in-utc"),
    ],
)
def test_an_event_timestamp_outside_iso_years_is_rejected_with_its_own_reason(
    wh: Warehouse, column: str
) -> None:
    row = one(wh, f"SELECT 1 AS id, 'u1' AS who, {column} AS at", {**EVENT, "timestamp": "at"})
    assert row.reason == f"event timestamp is {sql.YEARS}"


def test_event_without_timestamp_leaves_it_to_heap(wh: Warehouse) -> None:
    row = one(wh, "SELECT 1 AS id, 'u1' AS who", EVENT)
    assert "timestamp" not in row.record


def test_event_name_from_a_column(wh: Warehouse) -> None:
    rows = wh.rows(
        "SELECT * FROM (VALUES (1, 'u1', 'Signup'), (2, 'u1', 'Paid \"pro\"')) v(id, who, ev)",
        EVENT_BY_COLUMN,
    )
    assert [(r.record["event"], r.record["properties"]) for r in rows] == [
        ("Signup", {}),
        ('Paid "pro"', {}),
    ]


def test_fixed_event_name_is_escaped(wh: Warehouse) -> None:
    heap = {**EVENT, "event_name": 'It\'s "quoted"'}
    row = one(wh, "SELECT 1 AS id, 'u1' AS who", heap)
    assert row.record["event"] == 'It\'s "quoted"'


def test_integer_identity_is_sent_as_a_string(wh: Warehouse) -> None:
    row = one(wh, "SELECT 1 AS id, 42 AS who", EVENT)
    assert (row.record["identity"], row.identity) == ("42", "42")


def idempotency_keys(wh: Warehouse, select: str, *, label: str) -> dict[str | None, str]:
    return {r.key: r.record["idempotency_key"] for r in wh.rows(select, EVENT, label=label)}


TWO_EVENTS = "SELECT * FROM (VALUES (1, 'u1'), (2, 'u1')) v(id, who)"


def test_idempotency_key_is_deterministic_across_runs(wh: Warehouse) -> None:
    first = idempotency_keys(wh, TWO_EVENTS, label="events")
    second = idempotency_keys(wh, TWO_EVENTS, label="events")
    assert first == second
    assert first["1"] != first["2"]


def test_idempotency_key_differs_across_models(wh: Warehouse) -> None:
    a = idempotency_keys(wh, TWO_EVENTS, label="fct_signups")
    b = idempotency_keys(wh, TWO_EVENTS, label="fct_payments")
    assert a["1"] != b["1"]
    assert a["2"] != b["2"]


def test_idempotency_key_ignores_property_values(wh: Warehouse) -> None:
    before = one(wh, "SELECT 1 AS id, 'u1' AS who, 'a' AS plan", EVENT)
    after = one(wh, "SELECT 1 AS id, 'u1' AS who, 'b' AS plan", EVENT)
    assert before.record["idempotency_key"] == after.record["idempotency_key"]


def test_two_event_blocks_of_one_model_get_distinct_idempotency_keys(wh: Warehouse) -> None:
    wh.create("t", "SELECT 1 AS id, 'u1' AS who")
    blocks = [{**EVENT, "event_name": "Signup"}, {**EVENT, "event_name": "Activated"}]
    problems: list[str] = []
    specs = parse_specs([wh.model("t", blocks)], problems)
    reader = wh.reader()
    plan = prepare(specs, reader, SyncOptions(app_id="1"), problems)
    assert problems == []
    (signup,), (activated,) = (run(reader, p.query) for p in plan)
    assert {signup.record["event"], activated.record["event"]} == {"Signup", "Activated"}
    assert signup.record["idempotency_key"] != activated.record["idempotency_key"]


# --- rejections -------------------------------------------------------------------------------

REJECTIONS = [
    pytest.param(USER, "SELECT NULL::VARCHAR AS id", "identity (id) is NULL", id="user-null-key"),
    pytest.param(USER, "SELECT '' AS id", "identity (id) is empty or whitespace", id="user-empty-key"),
    pytest.param(
        USER, "SELECT '   ' AS id", "identity (id) is empty or whitespace", id="user-whitespace-key"
    ),
    pytest.param(ACCOUNT, "SELECT NULL::VARCHAR AS id", "account ID (id) is NULL", id="account-null-key"),
    pytest.param(
        ACCOUNT, "SELECT '  ' AS id", "account ID (id) is empty or whitespace", id="account-whitespace-key"
    ),
    pytest.param(
        EVENT, "SELECT NULL::INTEGER AS id, 'u1' AS who", "Insert ID (id) is NULL", id="event-null-key"
    ),
    pytest.param(
        USER,
        "SELECT repeat('x', 256) AS id",
        "identity (id) is longer than 255 characters",
        id="identity-256",
    ),
    pytest.param(
        USER,
        "SELECT 'null' AS id",
        "identity (id) is a placeholder (null), not a real identity",
        id="placeholder-null",
    ),
    pytest.param(
        USER,
        "SELECT 'Undefined' AS id",
        "identity (id) is a placeholder (Undefined), not a real identity",
        id="placeholder-Undefined",
    ),
    pytest.param(
        USER,
        "SELECT 'NONE' AS id",
        "identity (id) is a placeholder (NONE), not a real identity",
        id="placeholder-NONE",
    ),
    pytest.param(
        USER,
        "SELECT 'nan' AS id",
        "identity (id) is a placeholder (nan), not a real identity",
        id="placeholder-nan",
    ),
    pytest.param(
        USER,
        "SELECT ' null ' AS id",
        "identity (id) is a placeholder ( null ), not a real identity",
        id="placeholder-padded",
    ),
    pytest.param(
        USER,
        "SELECT 'u1' AS id, repeat('s', 1024) AS v",
        "property 'v' is 1024 characters; Heap takes at most 1023 (set truncate: true to cut it)",
        id="string-1024",
    ),
    pytest.param(
        USER,
        "SELECT 'u1' AS id, repeat('é', 1024) AS v",
        "property 'v' is 1024 characters; Heap takes at most 1023 (set truncate: true to cut it)",
        id="string-1024-multibyte",
    ),
    pytest.param(
        USER,
        "SELECT 'u1' AS id, [repeat('a', 600), repeat('b', 600)] AS v",
        "property 'v' is 1202 characters; Heap takes at most 1023 (set truncate: true to cut it)",
        id="list-joined-too-long",
    ),
    pytest.param(
        USER,
        "SELECT 'u1' AS id, {'a': {'b': repeat('s', 2000)}} AS v",
        "property 'v.a.b' is 2000 characters; Heap takes at most 1023 (set truncate: true to cut it)",
        id="struct-field-too-long",
    ),
    pytest.param(USER, "SELECT 'u1' AS id, 'nan'::DOUBLE AS v", "property 'v' is NaN or infinite", id="nan"),
    pytest.param(
        USER, "SELECT 'u1' AS id, 'inf'::DOUBLE AS v", "property 'v' is NaN or infinite", id="plus-inf"
    ),
    pytest.param(
        USER, "SELECT 'u1' AS id, '-inf'::DOUBLE AS v", "property 'v' is NaN or infinite", id="minus-inf"
    ),
    pytest.param(
        USER, "SELECT 'u1' AS id, 'nan'::FLOAT AS v", "property 'v' is NaN or infinite", id="nan-float32"
    ),
    pytest.param(
        USER,
        "SELECT 'u1' AS id, MAP {'a': 'inf'::DOUBLE} AS v",
        "a value of map property 'v' is invalid (NaN, infinite, or over 1023 characters)",
        id="map-inf",
    ),
    pytest.param(
        USER,
        "SELECT 'u1' AS id, 'infinity'::DATE AS v",
        "property 'v' is an infinite date",
        id="infinite-date",
    ),
    pytest.param(
        USER,
        "SELECT 'u1' AS id, [1.5, 'nan'::DOUBLE] AS v",
        "property 'v' holds NaN or infinite",
        id="list-nan",
    ),
    pytest.param(
        USER,
        "SELECT 'u1' AS id, [NULL, '-inf'::FLOAT] AS v",
        "property 'v' holds NaN or infinite",
        id="list-inf",
    ),
    pytest.param(
        USER,
        "SELECT 'u1' AS id, [DATE '2026-01-01', 'infinity'::DATE] AS v",
        "property 'v' holds an infinite date",
        id="list-infinite-date",
    ),
    pytest.param(
        USER,
        "SELECT 'u1' AS id, '-infinity'::TIMESTAMP AS v",
        "property 'v' is an infinite date",
        id="infinite-timestamp",
    ),
    pytest.param(
        EVENT,
        "SELECT 1 AS id, NULL::VARCHAR AS who",
        "event identity (who) is NULL",
        id="event-null-identity",
    ),
    pytest.param(
        EVENT,
        "SELECT 1 AS id, '' AS who",
        "event identity (who) is empty or whitespace",
        id="event-empty-identity",
    ),
    pytest.param(
        EVENT,
        "SELECT 1 AS id, repeat('w', 256) AS who",
        "event identity (who) is longer than 255 characters",
        id="event-identity-256",
    ),
    pytest.param(
        EVENT,
        "SELECT 1 AS id, 'Undefined' AS who",
        "event identity (who) is a placeholder (Undefined), not a real identity",
        id="event-placeholder-identity",
    ),
    pytest.param(
        EVENT_BY_COLUMN,
        "SELECT 1 AS id, 'u1' AS who, NULL::VARCHAR AS ev",
        "event name (ev) is NULL",
        id="event-null-name",
    ),
    pytest.param(
        EVENT_BY_COLUMN,
        "SELECT 1 AS id, 'u1' AS who, '' AS ev",
        "event name (ev) is empty or whitespace",
        id="event-empty-name",
    ),
    pytest.param(
        EVENT_BY_COLUMN,
        "SELECT 1 AS id, 'u1' AS who, '   ' AS ev",
        "event name (ev) is empty or whitespace",
        id="event-whitespace-name",
    ),
    pytest.param(
        EVENT_BY_COLUMN,
        "SELECT 1 AS id, 'u1' AS who, repeat('e', 1025) AS ev",
        "event name is longer than 1024 characters",
        id="event-name-1025",
    ),
    pytest.param(
        {**EVENT, "timestamp": "at"},
        "SELECT 1 AS id, 'u1' AS who, 'infinity'::TIMESTAMP AS at",
        "event timestamp is infinite",
        id="event-infinite-timestamp",
    ),
]


@pytest.mark.parametrize(("heap", "select", "reason"), REJECTIONS)
def test_row_is_rejected_with_its_reason(wh: Warehouse, heap: Any, select: str, reason: str) -> None:
    assert one(wh, select, heap).reason == reason


ACCEPTED = [
    pytest.param(USER, "SELECT repeat('x', 255) AS id", id="identity-255"),
    pytest.param(USER, "SELECT 'nullable' AS id", id="identity-containing-null"),
    pytest.param(USER, "SELECT 'u1' AS id, repeat('s', 1023) AS v", id="string-1023"),
    pytest.param(USER, "SELECT 'u1' AS id, repeat('é', 1023) AS v", id="string-1023-multibyte"),
    pytest.param(ACCOUNT, "SELECT 'null' AS id", id="account-id-null-text"),
    pytest.param(
        EVENT_BY_COLUMN, "SELECT 1 AS id, 'u1' AS who, repeat('e', 1024) AS ev", id="event-name-1024"
    ),
    pytest.param(USER, "SELECT 'u1' AS id, 1e308::DOUBLE AS v", id="huge-finite-double"),
]


@pytest.mark.parametrize(("heap", "select"), ACCEPTED)
def test_row_at_the_limit_is_accepted(wh: Warehouse, heap: Any, select: str) -> None:
    assert one(wh, select, heap).reason is None


@pytest.mark.parametrize(
    ("heap", "select"),
    [
        pytest.param(USER, "SELECT chr(9) AS id", id="user-tab"),
        pytest.param(ACCOUNT, "SELECT chr(10) || ' ' AS id", id="account-newline"),
        pytest.param(EVENT, "SELECT 1 AS id, chr(13) || chr(10) AS who", id="event-identity-crlf"),
    ],
)
def test_key_of_tabs_or_newlines_is_rejected(wh: Warehouse, heap: Any, select: str) -> None:
    assert one(wh, select, heap).reason is not None


def test_string_of_1023_characters_is_sent_whole(wh: Warehouse) -> None:
    row = one(wh, "SELECT 'u1' AS id, repeat('s', 1023) AS v")
    assert row.record["properties"]["v"] == "s" * 1023
    assert row.truncated == 0


def test_truncate_cuts_values_to_1023_and_counts_them(wh: Warehouse) -> None:
    heap = {**USER, "truncate": True}
    row = one(
        wh,
        "SELECT 'u1' AS id, repeat('é', 1024) AS a, ['x', repeat('y', 1500)] AS b, "
        "{'c': repeat('z', 5000)} AS s, repeat('k', 1023) AS whole",
        heap,
    )
    assert row.reason is None
    props = row.record["properties"]
    assert props == {
        "a": "é" * 1023,
        "b": ("x||" + "y" * 1500)[:1023],
        "s.c": "z" * 1023,
        "whole": "k" * 1023,
    }
    assert row.truncated == 3


def test_truncate_counts_per_row(wh: Warehouse) -> None:
    heap = {**USER, "truncate": True}
    rows = wh.rows(
        "SELECT * FROM (VALUES ('u1', repeat('a', 2000)), ('u2', 'short'), ('u3', NULL)) v(id, s)", heap
    )
    assert [(r.key, r.truncated, r.reason) for r in rows] == [
        ("u1", 1, None),
        ("u2", 0, None),
        ("u3", 0, None),
    ]


def test_truncate_does_not_touch_the_identity_limit(wh: Warehouse) -> None:
    heap = {**USER, "truncate": True}
    assert (
        one(wh, "SELECT repeat('x', 300) AS id", heap).reason == "identity (id) is longer than 255 characters"
    )


def test_first_failing_check_gives_the_reason(wh: Warehouse) -> None:
    row = one(wh, "SELECT 'null' AS id, 'nan'::DOUBLE AS v")
    assert row.reason == "identity (id) is a placeholder (null), not a real identity"


@pytest.mark.parametrize(
    ("heap", "select"),
    [
        pytest.param(
            USER,
            "SELECT * FROM (VALUES ('a', 1), ('b', 2), ('a', 3), ('c', 4), ('a', 5)) v(id, n)",
            id="user",
        ),
        pytest.param(
            EVENT,
            "SELECT * FROM (VALUES ('a', 'u1'), ('b', 'u1'), ('a', 'u2'), ('c', 'u3'), ('a', 'u4')) "
            "v(id, who)",
            id="event",
        ),
    ],
)
def test_duplicate_keys_reject_every_row_that_shares_them(wh: Warehouse, heap: Any, select: str) -> None:
    rows = wh.rows(select, heap)
    assert sorted((r.key, r.reason) for r in rows) == [
        ("a", "duplicate key: 3 rows share it, so none of them is sent"),
        ("a", "duplicate key: 3 rows share it, so none of them is sent"),
        ("a", "duplicate key: 3 rows share it, so none of them is sent"),
        ("b", None),
        ("c", None),
    ]


def test_null_keys_are_not_duplicates_of_each_other(wh: Warehouse) -> None:
    rows = wh.rows("SELECT * FROM (VALUES (NULL, 1), (NULL, 2), ('u1', 3)) v(id, n)", USER)
    assert [(r.key, r.reason) for r in rows] == [
        ("u1", None),
        (None, "identity (id) is NULL"),
        (None, "identity (id) is NULL"),
    ]


def test_keys_differing_only_by_case_are_not_duplicates(wh: Warehouse) -> None:
    rows = wh.rows("SELECT * FROM (VALUES ('Ann', 1), ('ann', 2)) v(id, n)", USER)
    assert [(r.key, r.reason) for r in rows] == [("Ann", None), ("ann", None)]


# --- identifiers are quoted -------------------------------------------------------------------


def test_column_names_with_quotes_and_sql_text_are_quoted(wh: Warehouse) -> None:
    heap = {"object": "user", "key": 'a"b', "fields": {"Drop": "x; drop table t", "it's": "it's"}}
    rows = wh.rows(
        """SELECT 'u1' AS "a""b", 'v' AS "x; drop table t", 1 AS "it's", 2 AS "-- comment" """,
        heap,
        table="t",
    )
    (row,) = rows
    assert row.reason is None
    assert row.record == {"identity": "u1", "properties": {"Drop": "v", "it's": 1}}


def test_odd_column_names_as_default_properties(wh: Warehouse) -> None:
    props = properties(wh, """1 AS "a""b", 'v' AS "x; drop table t", 2 AS "select" """)
    assert props == {'a"b': 1, "x; drop table t": "v", "select": 2}


def test_odd_table_name_is_read(wh: Warehouse) -> None:
    row = one(wh, "SELECT 'u1' AS id, 1 AS n", table="my table; --")
    assert row.record == {"identity": "u1", "properties": {"n": 1}}


def test_records_of_many_rows_are_each_valid_json(wh: Warehouse) -> None:
    rows = wh.rows("SELECT 'u' || i AS id, i AS n, 'x' || i AS s FROM range(2500) r(i)", USER)
    assert len(rows) == 2500
    assert all(r.reason is None for r in rows)
    assert {r.record["identity"] for r in rows} == {f"u{i}" for i in range(2500)}
    assert all(r.record["properties"] == {"n": int(r.key[1:]), "s": "x" + r.key[1:]} for r in rows if r.key)


def test_ident_and_lit_double_their_quotes() -> None:
    assert sql.ident('a"b') == '"a""b"'
    assert sql.lit("it's") == "'it''s'"


@pytest.mark.parametrize(
    "select",
    [
        pytest.param("SELECT * FROM (VALUES ('a', 1), ('b', 2), ('a', 3), ('a', 5)) v(id, n)", id="repeats"),
        pytest.param("SELECT * FROM (VALUES (NULL, 1), (NULL, 2), ('u1', 3)) v(id, n)", id="null-keys"),
        pytest.param("SELECT * FROM (VALUES (7, 1), (7, 2), (8, 3)) v(id, n)", id="integer-key"),
        pytest.param("SELECT 'x' AS id, 1 AS n LIMIT 0", id="empty"),
    ],
)
def test_one_scan_probe_gives_what_the_two_probes_give(wh: Warehouse, select: str) -> None:
    """A first sync probes once: fingerprint and repeated keys must match the separate queries."""
    wh.create("t", select)
    reader = wh.reader()
    spec, columns = wh.spec(reader, "t", USER)
    query = sql.record_query(spec, columns, key_seed="t", definition_seed="t", dialect=DuckDBDialect())
    merged = reader.fetch_one(query.probe_duplicates_sql)
    assert merged == (*reader.fetch_one(query.probe_sql), *reader.fetch_one(query.duplicates_sql))


def fingerprint(wh: Warehouse, select: str, heap: Any) -> str:
    wh.create("t", select)
    reader = wh.reader()
    spec, columns = wh.spec(reader, "t", heap)
    query = sql.record_query(spec, columns, key_seed="t", definition_seed="t", dialect=DuckDBDialect())
    return query.fingerprint(reader.fetch_one(query.probe_sql))


@pytest.mark.parametrize(
    ("changed", "same"),
    [
        pytest.param(
            "SELECT * FROM (VALUES ('a', 1, 'x'), ('b', 2, 'z')) v(id, n, note)", True, id="unmapped"
        ),
        pytest.param(
            "SELECT * FROM (VALUES ('a', 1, 'x'), ('b', 3, 'y')) v(id, n, note)", False, id="mapped"
        ),
        pytest.param("SELECT * FROM (VALUES ('a', 1, 'x'), ('c', 2, 'y')) v(id, n, note)", False, id="key"),
        pytest.param("SELECT * FROM (VALUES ('a', 1, 'x')) v(id, n, note)", False, id="row-removed"),
    ],
)
def test_the_fingerprint_follows_the_mapped_columns_only(wh: Warehouse, changed: str, same: bool) -> None:
    """The no-op shortcut: a change to a column no property reads changes no record."""
    heap = {**USER, "fields": {"n": "n"}}
    before = fingerprint(wh, "SELECT * FROM (VALUES ('a', 1, 'x'), ('b', 2, 'y')) v(id, n, note)", heap)
    after = fingerprint(wh, changed, heap)
    assert (before == after) is same


def test_width_counts_the_columns_read_with_struct_fields_one_by_one(wh: Warehouse) -> None:
    wh.create("t", "SELECT 'a' AS id, 1 AS n, {'x': 1, 'y': {'z': 2}} AS s, [1, 2] AS l, 'no' AS unused")
    reader = wh.reader()
    spec, columns = wh.spec(reader, "t", {**USER, "fields": {"n": "n", "s": "s", "l": "l"}})
    query = sql.record_query(spec, columns, key_seed="t", definition_seed="t", dialect=DuckDBDialect())
    assert query.width == 1 + 1 + 2 + 1  # id, n, s.x and s.y.z, l


# --- numbers: a JSON number wherever a double keeps the value, else its exact digits as a string ---
# Heap keeps every number as a double. Each case builds one record in DuckDB (one in-memory
# connection for the module, tests/unit/records.py) and checks the exact JSON text of its property,
# so a value that would change on the way (2^53 + 1, a 34-digit decimal) fails here rather than
# changing silently in Heap.


@pytest.fixture(scope="module")
def records() -> Iterator[Records]:
    built = Records()
    yield built
    built.close()


def sent(records: Records, column: str) -> str:
    """The JSON text of property ``v`` in the record of ``SELECT 'u1' AS id, <column> AS v``."""
    record = records.one(f"SELECT 'u1' AS id, {column} AS v")
    assert record.reason is None, record.reason
    prefix, suffix = '{"identity":"u1","properties":{"v":', "}}"
    assert record.text is not None and record.text.startswith(prefix) and record.text.endswith(suffix)
    return record.text[len(prefix) : -len(suffix)]


NUMBERS = [
    # integers: numbers within +-(2^53 - 1), exact strings beyond
    pytest.param("42", "42", id="integer"),
    pytest.param("2147483647::INTEGER", "2147483647", id="integer-max"),
    pytest.param("4294967295::UINTEGER", "4294967295", id="uinteger-max"),
    pytest.param(f"{SAFE}::BIGINT", "9007199254740991", id="bigint-2^53-1"),
    pytest.param(f"-{SAFE}::BIGINT", "-9007199254740991", id="bigint-minus-2^53-1"),
    pytest.param(f"{SAFE + 1}::BIGINT", '"9007199254740992"', id="bigint-2^53"),
    pytest.param(f"{SAFE + 2}::BIGINT", '"9007199254740993"', id="bigint-2^53+1"),
    pytest.param(f"(-{SAFE} - 1)::BIGINT", '"-9007199254740992"', id="bigint-minus-2^53"),
    pytest.param("9223372036854775807::BIGINT", '"9223372036854775807"', id="bigint-max"),
    pytest.param("(-9223372036854775807 - 1)::BIGINT", '"-9223372036854775808"', id="bigint-min"),
    pytest.param("7::HUGEINT", "7", id="hugeint-small"),
    pytest.param(
        "170141183460469231731687303715884105727::HUGEINT",
        '"170141183460469231731687303715884105727"',
        id="hugeint-max",
    ),
    pytest.param(
        "CAST('-170141183460469231731687303715884105728' AS HUGEINT)",
        '"-170141183460469231731687303715884105728"',
        id="hugeint-min",
    ),
    pytest.param("7::UBIGINT", "7", id="ubigint-small"),
    pytest.param("18446744073709551615::UBIGINT", '"18446744073709551615"', id="ubigint-max"),
    pytest.param(
        "340282366920938463463374607431768211455::UHUGEINT",
        '"340282366920938463463374607431768211455"',
        id="uhugeint-max",
    ),
    # decimals: up to 15 digits always numbers; wider ones per value
    pytest.param("9999999999999.99::DECIMAL(15,2)", "9999999999999.99", id="decimal-15-digits"),
    pytest.param("123.450::DECIMAL(18,3)", "123.450", id="decimal-18-3-everyday"),
    pytest.param("-0.001::DECIMAL(18,3)", "-0.001", id="decimal-18-3-negative"),
    pytest.param(
        "1234567890123.456::DECIMAL(18,3)", "1234567890123.456", id="decimal-16-digits-a-double-keeps"
    ),
    pytest.param(
        "12345678901234.567::DECIMAL(18,3)", '"12345678901234.567"', id="decimal-17-digits-a-double-alters"
    ),
    pytest.param("999999999999999.999::DECIMAL(18,3)", '"999999999999999.999"', id="decimal-18-3-max"),
    pytest.param("0.1::DECIMAL(38,10)", "0.1000000000", id="decimal-38-10-tenth"),
    pytest.param("0.0000000001::DECIMAL(38,10)", "0.0000000001", id="decimal-38-10-tiny"),
    pytest.param(
        "0.1000000000000000055::DECIMAL(38,19)", '"0.1000000000000000055"', id="decimal-beyond-a-double"
    ),
    pytest.param("12345::DECIMAL(38,0)", "12345", id="decimal-38-0-small"),
    pytest.param(f"{SAFE + 2}::DECIMAL(38,0)", '"9007199254740993"', id="decimal-38-0-2^53+1"),
    pytest.param("100000000000000000000::DECIMAL(38,0)", '"100000000000000000000"', id="decimal-beyond-2^53"),
    pytest.param(
        "-12345678901234567.89::DECIMAL(20,2)", '"-12345678901234567.89"', id="decimal-negative-wide"
    ),
    pytest.param(
        "CAST('99999999999999999999999999999999999999' AS DECIMAL(38,0))",
        '"99999999999999999999999999999999999999"',
        id="decimal-38-max",
    ),
    # a decimal of scale = precision, which DuckDB prints without its leading 0 (".5000")
    pytest.param("0.5::DECIMAL(4,4)", "0.5000", id="decimal-4-4"),
    pytest.param("-0.5::DECIMAL(4,4)", "-0.5000", id="decimal-4-4-negative"),
    pytest.param("0::DECIMAL(4,4)", "0.0000", id="decimal-4-4-zero"),
    pytest.param(
        "-0.0001::DECIMAL(38,38)", "-0.00010000000000000000000000000000000000", id="decimal-38-38-negative"
    ),
    pytest.param(
        "CAST('0.12345678901234567890' AS DECIMAL(20,20))",
        '"0.12345678901234567890"',
        id="decimal-20-20-wide",
    ),
    pytest.param(
        "CAST('0.0000000000000001' AS DECIMAL(16,16))", "0.0000000000000001", id="decimal-16-16-1e-16"
    ),
    pytest.param(
        "CAST('0.00000000000000000001' AS DECIMAL(38,38))",
        "0.00000000000000000001000000000000000000",
        id="decimal-38-38-1e-20",
    ),
    # doubles: the shortest text that reads back as the same double
    pytest.param("(0.1::DOUBLE + 0.2::DOUBLE)", "0.30000000000000004", id="double-shortest-round-trip"),
    pytest.param("-0.0::DOUBLE", "-0.0", id="double-negative-zero"),
    pytest.param("5e-324::DOUBLE", "5e-324", id="double-smallest-subnormal"),
    pytest.param("2.2250738585072014e-308::DOUBLE", "2.2250738585072014e-308", id="double-smallest-normal"),
    pytest.param("1.7976931348623157e308::DOUBLE", "1.7976931348623157e308", id="double-max"),
    pytest.param("-1.5e-7::DOUBLE", "-1.5e-7", id="double-negative-tiny"),
    pytest.param("9007199254740993::DOUBLE", "9007199254740992.0", id="double-is-already-a-double"),
]


@pytest.mark.parametrize(("column", "expected"), NUMBERS)
def test_number_is_sent_as_a_number_only_where_a_double_keeps_it(
    records: Records, column: str, expected: str
) -> None:
    assert sent(records, column) == expected


@pytest.mark.parametrize(("column", "expected"), NUMBERS)
def test_every_number_sent_reads_back_as_its_source_value(
    records: Records, column: str, expected: str
) -> None:
    """What Heap reads (a double for a number, the digits for a string) is the warehouse's value."""
    (source,) = records.con.execute(f"SELECT {column}").fetchone() or ()
    assert_heap_reads(sent(records, column), source)


def test_decimal_38_38_with_a_38th_decimal_goes_as_its_exact_digits(records: Records) -> None:
    """DuckDB reads a double's text back at 37 decimals at most: digits go where a number would do."""
    column = "CAST('0.00000000000000000000000000000000000015' AS DECIMAL(38,38))"
    assert sent(records, column) == '"0.00000000000000000000000000000000000015"'


LISTS = [
    pytest.param(f"[1, {SAFE + 2}, NULL, -5]::BIGINT[]", "1||9007199254740993||-5", id="bigint-list"),
    pytest.param(
        "[170141183460469231731687303715884105727]::HUGEINT[]",
        "170141183460469231731687303715884105727",
        id="hugeint-list",
    ),
    pytest.param("[18446744073709551615]::UBIGINT[]", "18446744073709551615", id="ubigint-list"),
    pytest.param(
        "[0.1000000000000000055, 1.5]::DECIMAL(38,19)[]",
        "0.1000000000000000055||1.5000000000000000000",
        id="decimal-list",
    ),
    pytest.param("[0.5, -0.25]::DECIMAL(4,4)[]", "0.5000||-0.2500", id="decimal-4-4-list"),
    pytest.param(
        "[-0.0::DOUBLE, 0.1::DOUBLE + 0.2::DOUBLE, 5e-324::DOUBLE]",
        "-0.0||0.30000000000000004||5e-324",
        id="double-list",
    ),
]


@pytest.mark.parametrize(("column", "expected"), LISTS)
def test_list_elements_keep_every_digit(records: Records, column: str, expected: str) -> None:
    assert json.loads(sent(records, column)) == expected


@pytest.mark.parametrize(
    ("column", "expected"),
    [
        pytest.param(
            f"{{'a': {{'b': {SAFE + 2}::BIGINT, 'c': 3::BIGINT}}}}",
            {"v.a.b": "9007199254740993", "v.a.c": 3},
            id="struct-fields",
        ),
        pytest.param(
            f"MAP {{'big': {SAFE + 2}::BIGINT, 'small': 3::BIGINT}}",
            {"v.big": "9007199254740993", "v.small": 3},
            id="map-values",
        ),
        pytest.param(
            "MAP {'wide': 0.1000000000000000055::DECIMAL(38,19), 'ok': 0.5::DECIMAL(38,19)}",
            {"v.wide": "0.1000000000000000055", "v.ok": 0.5},
            id="map-decimal-values",
        ),
    ],
)
def test_struct_fields_and_map_values_follow_the_same_rule(
    records: Records, column: str, expected: dict[str, object]
) -> None:
    assert records.one(f"SELECT 'u1' AS id, {column} AS v").properties == expected


@pytest.mark.parametrize(
    "column",
    ["NULL::BIGINT", "NULL::HUGEINT", "NULL::UBIGINT", "NULL::DECIMAL(38,10)", "NULL::DECIMAL(18,3)"],
)
def test_null_wide_number_is_left_out(records: Records, column: str) -> None:
    assert records.one(f"SELECT 'u1' AS id, {column} AS v").properties == {}


def test_rule_is_per_value_within_one_column(records: Records) -> None:
    """One DECIMAL(18,3) column: the amounts a double keeps stay numbers, the one it would alter does not."""
    rows = records.build(
        "SELECT id, CAST(amount AS DECIMAL(18,3)) AS amount FROM (VALUES "
        "('a', '19.990'), ('b', '12345678901234.567'), ('c', NULL)) v(id, amount) ORDER BY id"
    )
    assert [r.text for r in rows] == [
        '{"identity":"a","properties":{"amount":19.990}}',
        '{"identity":"b","properties":{"amount":"12345678901234.567"}}',
        '{"identity":"c","properties":{}}',
    ]


# --- property names: what the columns show colliding (``sql.name_collisions``) ----------------

TEXT = ColumnType("string", "VARCHAR")
JSON_T = ColumnType("json", "JSON")
CITY = ColumnType("struct", "STRUCT(city VARCHAR)", (("city", TEXT),))
MAP_T = ColumnType("map", "MAP(VARCHAR, VARCHAR)", (("key", TEXT), ("value", TEXT)))
FIX = "; rename one of the columns in the model, or map it to another property name in `fields`."


@pytest.mark.parametrize(
    ("columns", "fields", "problems"),
    [
        pytest.param(
            {"address": CITY, "address.city": TEXT}, None,
            ["property 'address.city' would come from both column 'address' (a struct, flattened) and "
             "column 'address.city'"],
            id="struct-field-vs-column",
        ),
        pytest.param(
            {"a": ColumnType("struct", "", (("b", CITY),)), "a.b.city": TEXT}, None,
            ["property 'a.b.city' would come from both column 'a' (a struct, flattened) and column "
             "'a.b.city'"],
            id="nested-struct-field-vs-column",
        ),
        pytest.param(
            {"city": TEXT, "address": CITY}, {"address.city": "city", "address": "address"},
            ["property 'address.city' would come from both column 'city' (as 'address.city') and column "
             "'address' (a struct, flattened)"],
            id="mapped-onto-struct-field",
        ),
        pytest.param(
            {"attributes": MAP_T, "attributes.color": TEXT}, None,
            ["property 'attributes.color' would come from both column 'attributes' (a map, flattened) and "
             "column 'attributes.color'"],
            id="map-vs-column",
        ),
        pytest.param(
            {"payload": JSON_T, "x": TEXT}, {"payload.x": "x", "payload": "payload"}, [],
            id="json-keys-are-checked-per-row",
        ),
        pytest.param(
            {"payload": JSON_T, "payload.extra": JSON_T}, None,
            ["property 'payload.extra.<key>' would come from both column 'payload' (JSON, flattened) and "
             "column 'payload.extra' (JSON, flattened)"],
            id="json-prefixes-meet",
        ),
        pytest.param(
            {"m": MAP_T, "m.sub": JSON_T}, None,
            ["property 'm.sub.<key>' would come from both column 'm' (a map, flattened) and column 'm.sub' "
             "(JSON, flattened)"],
            id="map-and-json-prefixes-meet",
        ),
        pytest.param({"address": CITY, "address_city": TEXT, "addressx": MAP_T}, None, [], id="no-collision"),
    ],
)  # fmt: skip
def test_names_the_columns_show_colliding_are_configuration_errors_naming_both_sources(
    columns: dict[str, ColumnType], fields: dict[str, str] | None, problems: list[str]
) -> None:
    model = ModelNode(
        unique_id="model.demo.users", name="users", relation_name='"db"."main"."users"', materialized="table",
        meta={}, tags=(), fqn=("demo", "users"), original_file_path="models/users.sql",
    )  # fmt: skip
    found: list[str] = []
    spec = resolve_columns(SyncSpec(model, "config.meta.heap", "user", "id", fields), ["id", *columns], found)
    assert found == []

    assert sql.name_collisions(spec, {"id": TEXT, **columns}) == [
        f"model users, config.meta.heap: {p}{FIX}" for p in problems
    ]
