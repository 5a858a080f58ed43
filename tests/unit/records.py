"""Build Heap records from one in-memory DuckDB table: ``sql.record_query`` run as the engine runs it.

Shared by the unit tests of value conversion; one connection serves many tables, so that
property tests can run hundreds of examples in seconds.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import duckdb
import pytest

from heap_dbt import sql
from heap_dbt.config import parse_specs, resolve_columns
from heap_dbt.manifest import ModelNode
from heap_dbt.warehouse import Column
from heap_dbt.warehouse.duckdb.dialect import DuckDBDialect
from heap_dbt.warehouse.duckdb.reader import column_type

USER = {"object": "user", "key": "id"}


@dataclass(frozen=True)
class Record:
    reason: str | None
    text: str | None
    """The record's exact JSON text as sent (without the separator), None when rejected."""

    @property
    def properties(self) -> dict[str, Any]:
        assert self.text is not None, self.reason
        props: dict[str, Any] = json.loads(self.text)["properties"]
        return props


class Records:
    """Run record SQL over ``SELECT ...`` tables in one in-memory DuckDB."""

    def __init__(self) -> None:
        self.con = duckdb.connect()

    def close(self) -> None:
        self.con.close()

    def build(self, select: str, params: list[Any] | None = None, *, heap: Any = USER) -> list[Record]:
        self.con.execute(f"CREATE OR REPLACE TABLE t AS {select}", params or [])
        model = ModelNode(
            unique_id="model.demo.t",
            name="t",
            relation_name='"memory"."main"."t"',
            materialized="table",
            meta={"heap": heap},
            tags=(),
            fqn=("demo", "t"),
            original_file_path="models/t.sql",
        )
        problems: list[str] = []
        (spec,) = parse_specs([model], problems)
        rel = self.con.sql('SELECT * FROM "memory"."main"."t" LIMIT 0')
        columns = [Column(n, column_type(t)) for n, t in zip(rel.columns, rel.types, strict=True)]
        spec = resolve_columns(spec, [c.name for c in columns], problems)
        assert problems == []
        query = sql.record_query(spec, columns, key_seed="t", definition_seed="t", dialect=DuckDBDialect())
        cur = self.con.execute(query.sql)
        names = [d[0] for d in cur.description]
        out = []
        for row in cur.fetchall():
            r = dict(zip(names, row, strict=True))
            text = r[sql.RECORD]
            assert text.endswith(sql.SEPARATOR)
            out.append(Record(r[sql.REASON], None if r[sql.REASON] else text[: -len(sql.SEPARATOR)]))
        return out

    def one(self, select: str, params: list[Any] | None = None, *, heap: Any = USER) -> Record:
        (record,) = self.build(select, params, heap=heap)
        return record


MAX_SAFE_INTEGER = 2**53 - 1


def double_keeps(value: int | Decimal) -> bool:
    """Whether a double holds ``value``: within +-(2^53 - 1), and the same printed back in fewest digits."""
    return -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER and Decimal(repr(float(value))) == value


def assert_heap_reads(text: str, source: object) -> None:
    """The JSON ``text`` sent for ``source`` reads back, in Heap's doubles, as exactly ``source``.

    Integers and decimals go as numbers exactly when a double keeps them, else as strings
    of their digits; doubles go as finite numbers equal to the source, sign of zero included.
    """
    value = json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} sent: {text}"))
    if isinstance(source, float):
        assert isinstance(value, int | float) and math.isfinite(value), text
        assert float(value) == source and math.copysign(1, float(value)) == math.copysign(1, source), text
        return
    assert isinstance(source, int | Decimal) and not isinstance(source, bool)
    if double_keeps(source):
        assert isinstance(value, int | float), f"{source} could go as a number, not {text}"
        assert Decimal(repr(float(value))) == source, text  # what a double reads, printed back
        assert Decimal(text) == source, text  # the digits sent are the source's own
    else:
        assert isinstance(value, str), f"a double would alter {source}, yet {text} was sent"
        assert Decimal(value) == source, text
