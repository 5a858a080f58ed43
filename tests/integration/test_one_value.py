"""One value never fails a model: a value the warehouse cannot hash or convert rejects its own row,
with a reason that names the column, and every other row of the model arrives.

A catalogue per warehouse, written in that warehouse's SQL: each case is one row whose column of
the same name holds the value (every other row holds NULL there), and says what Heap receives for
that row or the exact reason it is rejected. The row ``fine`` holds none of them and must arrive.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from heap_dbt.emulator import run_in_thread
from tests.conftest import APP_ID, dbt, heap_dbt
from tests.warehouses import Warehouse

pytestmark = pytest.mark.integration

YEARS = "outside years 1-9999, which an ISO 8601 date cannot write"


@dataclass(frozen=True)
class Value:
    key: str
    type: str
    """The column's type, in the warehouse's SQL."""
    sql: str
    """The value, in the warehouse's SQL."""
    sent: dict[str, Any] = field(default_factory=dict)
    """The properties Heap holds for the row (besides ``note``)."""
    rejected: str | None = None


def _nan(key: str) -> str:
    return f"property {key!r} holds NaN or infinite"


def _is(key: str, what: str) -> str:
    return f"property {key!r} is {what}"


BAD_JSON = "not JSON that Heap can take (a lone surrogate or a bad escape)"
NAN = "NaN or infinite"
INFINITE = "an infinite date"


POSTGRES = [
    Value("json_nul", "json", """'{"a": "x\\u0000y"}'""", {"json_nul.a": "x\x00y"}),
    Value(
        "json_surrogate",
        "json",
        """'{"a": "\\ud800"}'""",
        rejected=_is("json_surrogate", BAD_JSON),
    ),
    Value(
        "json_control_key",
        "json",
        """'{"a\\u0001b": 1}'""",
        rejected="a key inside JSON property 'json_control_key' holds a control character",
    ),
    Value(
        "jsonb_control_key",
        "jsonb",
        """'{"ok": 1, "a\\u001fb": 1}'""",
        rejected="a key inside JSON property 'jsonb_control_key' holds a control character",
    ),
    Value("json_huge_exponent", "json", """'{"a": [1, 1e400]}'""", rejected=_nan("json_huge_exponent")),
    Value("jsonb_huge_exponent", "jsonb", """'{"a": -1e400}'""", rejected=_nan("jsonb_huge_exponent")),
    Value("numeric_nan", "numeric(10,2)", "'NaN'", rejected=_is("numeric_nan", NAN)),
    Value("numeric_infinity", "numeric", "'Infinity'", rejected=_is("numeric_infinity", NAN)),
    Value("numeric_huge_exponent", "numeric", "'1e400'", {"numeric_huge_exponent": "1" + "0" * 400}),
    Value(
        "numeric_past_heap",
        "numeric",
        "'1e1100'",
        rejected="property 'numeric_past_heap' has 1101 characters of digits; Heap takes at most 1023",
    ),
    Value("float_nan_in_array", "float8[]", "ARRAY[1, 'NaN']", rejected=_nan("float_nan_in_array")),
    Value("date_infinity", "date", "'infinity'", rejected=_is("date_infinity", INFINITE)),
    Value(
        "date_minus_infinity",
        "date",
        "'-infinity'",
        rejected=_is("date_minus_infinity", INFINITE),
    ),
    Value("date_year_10000", "date", "'10000-01-01'", rejected=_is("date_year_10000", YEARS)),
    Value(
        "date_past_timestamps",
        "date",
        "'294277-01-01'",
        rejected=_is("date_past_timestamps", YEARS),
    ),
    Value("date_bc", "date", "'0044-03-15 BC'", rejected=_is("date_bc", YEARS)),
    Value("date_last_iso", "date", "'9999-12-31'", {"date_last_iso": "9999-12-31"}),
    Value(
        "ts_year_10000",
        "timestamp",
        "'10000-01-01 00:00:00'",
        rejected=_is("ts_year_10000", YEARS),
    ),
    Value("ts_first_iso", "timestamp", "'0001-01-01 00:00:00'", {"ts_first_iso": "0001-01-01T00:00:00.000Z"}),
    Value("tstz_bc", "timestamptz", "'0001-12-31 23:00:00+00 BC'", rejected=_is("tstz_bc", YEARS)),
    Value(
        "dates_in_array",
        "date[]",
        "ARRAY['2024-01-01', '10000-01-01']::date[]",
        rejected=f"property 'dates_in_array' holds a date {YEARS}",
    ),
]

DUCKDB = [
    Value(
        "struct_nan",
        "STRUCT(a STRUCT(b DOUBLE))",
        "{'a': {'b': 'nan'::DOUBLE}}",
        rejected=_is("struct_nan.a.b", NAN),
    ),
    Value(
        "structs_nan",
        "STRUCT(d DOUBLE)[]",
        "[{'d': 1.5}, {'d': '-inf'::DOUBLE}]",
        rejected=_nan("structs_nan"),
    ),
    Value(
        "map_nan",
        "MAP(VARCHAR, DOUBLE)",
        "MAP {'a': 'nan'::DOUBLE}",
        rejected="a value of map property 'map_nan' is invalid (NaN, infinite, or over 1023 characters)",
    ),
    Value("json_huge_exponent", "JSON", """'{"a": 1e400}'""", rejected=_nan("json_huge_exponent")),
    Value(
        "json_control_key",
        "JSON",
        """'{"a\\u0001b": 1}'""",
        rejected="a key inside JSON property 'json_control_key' holds a control character",
    ),
    Value("json_flat", "JSON", """'{"a": {"b": 1, "c": "x"}}'""", {"json_flat.a.b": 1, "json_flat.a.c": "x"}),
    Value("date_infinity", "DATE", "'infinity'", rejected=_is("date_infinity", INFINITE)),
    Value("date_year_10000", "DATE", "'10000-01-01'", rejected=_is("date_year_10000", YEARS)),
    Value("date_bc", "DATE", "'0044-03-15 (BC)'", rejected=_is("date_bc", YEARS)),
    Value(
        "ts_year_10000",
        "TIMESTAMP",
        "'10000-01-01 00:00:00'",
        rejected=_is("ts_year_10000", YEARS),
    ),
    Value(
        "tstz_year_10000",
        "TIMESTAMPTZ",
        "'9999-12-31 23:00:00-05'",
        rejected=_is("tstz_year_10000", YEARS),
    ),
    Value("ts_first_iso", "TIMESTAMP", "'0001-01-01 00:00:00'", {"ts_first_iso": "0001-01-01T00:00:00.000Z"}),
    Value(
        "dates_in_map",
        "MAP(VARCHAR, DATE)",
        "MAP {'a': DATE '10000-01-01'}",
        rejected=_is("dates_in_map.<key>", YEARS),
    ),
]

SNOWFLAKE = [
    # fakesnow stands in for Snowflake: its VARIANT is DuckDB's JSON, which keeps 1e400 as text.
    Value(
        "variant_huge_exponent",
        "VARIANT",
        """PARSE_JSON('{"a": 1e400}')""",
        rejected=_nan("variant_huge_exponent"),
    ),
    Value(
        "array_nan",
        "ARRAY",
        "ARRAY_CONSTRUCT(1, 'NaN'::FLOAT)",
        rejected="property 'array_nan' holds NaN or infinite",
    ),
    Value("float_inf", "FLOAT", "'inf'::FLOAT", rejected=_is("float_inf", NAN)),
    # Snowflake's years end at 9999 too (and fakesnow cannot hold later ones in a timestamp
    # that travels as epoch milliseconds): the last ISO date stands in.
    Value("date_last_iso", "DATE", "'9999-12-31'::DATE", {"date_last_iso": "9999-12-31"}),
]

CATALOGUE = {"duckdb": DUCKDB, "postgres": POSTGRES, "snowflake": SNOWFLAKE}
TEXT = {"duckdb": "VARCHAR", "postgres": "text", "snowflake": "VARCHAR"}


def _model(warehouse: Warehouse) -> str:
    cases = CATALOGUE[warehouse.name]
    text = TEXT[warehouse.name]
    rows = []
    for row in [None, *cases]:
        key = "fine" if row is None else row.key
        cols = [f"CAST('{key}' AS {text}) AS id", f"CAST('kept' AS {text}) AS note"]
        for case in cases:
            value = case.sql if case is row else "NULL"
            cols.append(f"CAST({value} AS {case.type}) AS {case.key}")
        rows.append("SELECT " + ", ".join(cols))
    return "\nUNION ALL\n".join(rows) + "\n"


SCHEMA = """
version: 2
models:
  - name: one_value
    config:
      meta:
        heap: {object: user, key: id}
"""


def test_a_value_that_cannot_be_converted_rejects_its_row_and_the_rest_arrive(
    warehouse: Warehouse, wh_project: Path
) -> None:
    models = wh_project / "models" / "one_value"
    models.mkdir()
    (models / "one_value.sql").write_text(_model(warehouse), encoding="utf-8")
    (models / "schema.yml").write_text(SCHEMA)
    dbt(wh_project, "run", "-s", "one_value", "--quiet")

    with run_in_thread() as running:
        proc = heap_dbt(wh_project, "sync", "-s", "one_value", base_url=running.url)
        held = running.emulator.snapshot()
    report = json.loads((wh_project / "target" / "heap_sync_results.json").read_text())
    (sync,) = report["syncs"]
    cases = CATALOGUE[warehouse.name]
    rejected = {c.key: c.rejected for c in cases if c.rejected is not None}
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert {r["key"]: r["reason"] for r in sync["rejections"]} == rejected
    want = {"fine": {"note": "kept"}} | {
        c.key: {"note": "kept", **c.sent} for c in cases if c.rejected is None
    }
    assert held["users"][APP_ID] == want
    assert (sync["read"], sync["sent"], sync["rejected"], sync["failed"]) == (
        len(cases) + 1,
        len(want),
        len(rejected),
        0,
    )
