"""Snowflake column types: how each column is selected in Snowflake, and what DuckDB then sees.

The warehouse sends the raw columns as Arrow and the in-process DuckDB builds the records
(``heap_dbt.sql``). A ``SnowflakeColumn`` fixes both ends of that trip for one column: the
Snowflake expression that puts it into the Arrow stream (``select``), the DuckDB
expression that reads it back (``restore``), and the ``ColumnType`` the record SQL converts.
The form in the stream is chosen so that it is the same in every batch and on every
Snowflake edition:

- NUMBER(p, 0) with p > 18 goes as text: its values can exceed an int64, and Snowflake then
  switches that batch's Arrow type; DuckDB reads it back as HUGEINT.
- NUMBER(p, s > 0) goes as decimal128(p, s) (the connector's ``arrow_number_to_decimal``).
- TIMESTAMP_NTZ/LTZ/TZ go as epoch microseconds (UTC; NTZ wall-clock time taken as UTC, as
  heap-dbt does everywhere): fakesnow's server mode turns a NULL timestamp in Arrow into
  1970-01-01, which a number does not suffer. Not milliseconds: those are rounded (fakesnow) or
  cut towards 1970, where every other timestamp is cut to its millisecond in the record SQL.
- VARIANT, OBJECT and ARRAY arrive as JSON text. ARRAY becomes a list (joined with ``||``);
  VARIANT and OBJECT become kind "json": an object gives dotted property names, as a struct
  does, and a JSON scalar is its value.
"""

from __future__ import annotations

from dataclasses import dataclass

from heap_dbt.errors import ConfigError
from heap_dbt.sql import ident
from heap_dbt.warehouse import Column, ColumnType

_JSON_TEXT = "CASE WHEN json_type(x) = 'VARCHAR' THEN x->>'$' ELSE CAST(x AS VARCHAR) END"
"""A JSON array element as text: a string without its quotes, anything else as JSON."""
_NAN_ELEMENT = (
    "list_bool_or(list_transform(CAST(CAST({} AS JSON) AS JSON[]), lambda x: json_type(x) = 'DOUBLE' "
    "AND CAST(x AS VARCHAR) IN ('NaN', 'Infinity', '-Infinity')))",
    "holds NaN or infinite",
)
"""An ARRAY's elements are VARIANTs, and go as text: a FLOAT element that is NaN or infinite
(``NaN``, ``Infinity``, ``-Infinity`` in its JSON, where a string would be quoted) is
rejected as in a DOUBLE[]."""


@dataclass(frozen=True)
class SnowflakeColumn:
    """One column on its way from Snowflake (``source``) through Arrow into DuckDB (``name``)."""

    name: str
    """The name heap-dbt uses: Snowflake's folded upper case read as lower case."""
    source: str
    """The column's name in Snowflake, exactly."""
    sf_type: str
    """Snowflake's type, e.g. NUMBER(12,2), for messages."""
    type: ColumnType
    export: str = "{}"
    """Snowflake SQL that puts the column (``{}``) into the stream."""
    restore: str = "{}"
    """DuckDB SQL over the stream's column (``{}``) that gives a value of ``type``."""
    rejects: tuple[str, str] | None = None
    """``Column.rejects``: a value the stream carries that Heap's rules reject."""

    @property
    def select(self) -> str:
        """The column in a Snowflake select list, under its heap-dbt name."""
        return f"{self.export.format(ident(self.source))} AS {ident(self.name)}"

    @property
    def restored(self) -> str:
        """The DuckDB expression over the streamed column."""
        return self.restore.format(ident(self.name))

    def seam(self) -> Column:
        """The column as the record SQL and the dialect see it (``heap_dbt.warehouse.Column``)."""
        return Column(self.name, self.type, self.export, self.restore, self.rejects)


def heap_name(source: str) -> str:
    """An all-upper-case name is Snowflake's fold of an unquoted one: use it in lower case."""
    return source.lower() if source == source.upper() else source


def column(source: str, type_name: str, precision: int | None, scale: int | None) -> SnowflakeColumn:
    """The trip of one column, from the connector's result metadata (type name, precision, scale)."""
    name = heap_name(source)
    kind = type_name.upper()

    def make(
        sf_type: str,
        t: ColumnType,
        export: str = "{}",
        restore: str = "{}",
        rejects: tuple[str, str] | None = None,
    ) -> SnowflakeColumn:
        return SnowflakeColumn(name, source, sf_type, t, export, restore, rejects)

    if kind == "FIXED":
        p, s = precision if precision is not None else 38, scale or 0
        if s == 0 and p <= 18:
            return make(f"NUMBER({p},0)", ColumnType("integer", "BIGINT"))
        if s == 0:
            return make(
                f"NUMBER({p},0)", ColumnType("integer", "HUGEINT"), "TO_VARCHAR({})", "CAST({} AS HUGEINT)"
            )
        return make(f"NUMBER({p},{s})", ColumnType("decimal", f"DECIMAL({p},{s})"))
    if kind == "REAL":
        return make("FLOAT", ColumnType("float", "DOUBLE"))
    if kind == "TEXT":
        return make("VARCHAR", ColumnType("string", "VARCHAR"))
    if kind == "BOOLEAN":
        return make("BOOLEAN", ColumnType("boolean", "BOOLEAN"))
    if kind == "DATE":
        return make("DATE", ColumnType("date", "DATE"))
    if kind in ("TIMESTAMP_NTZ", "TIMESTAMP_LTZ", "TIMESTAMP_TZ", "TIMESTAMP"):
        return make(
            kind, ColumnType("timestamp", "TIMESTAMP"), "DATE_PART(EPOCH_MICROSECOND, {})",
            "make_timestamp(CAST({} AS BIGINT))",
        )  # fmt: skip
    if kind == "TIME":
        return make("TIME", ColumnType("other", "TIME"))
    if kind == "ARRAY":
        element = ColumnType("string", "VARCHAR")
        return make(
            "ARRAY", ColumnType("list", "VARCHAR[]", (("element", element),)), "{}",
            f"list_transform(CAST(CAST({{}} AS JSON) AS JSON[]), lambda x: {_JSON_TEXT})", _NAN_ELEMENT,
        )  # fmt: skip
    if kind in ("VARIANT", "OBJECT"):
        return make(kind, ColumnType("json", "JSON"), "{}", "CAST({} AS JSON)")
    # BINARY, GEOGRAPHY, GEOMETRY, VECTOR, structured MAP and anything newer: no form heap-dbt
    # could pick for the user. Selected as NULL, so that a sync that does not use it still runs.
    return make(kind, ColumnType("unsupported", kind), "NULL")


def refuse(col: SnowflakeColumn, *, model: str) -> None:
    """A column of a type heap-dbt cannot convert is a configuration error that says what to do."""
    if col.type.kind == "unsupported":
        raise ConfigError(unsupported_message(col.source, col.sf_type, model=model))


def unsupported_message(name: str, sf_type: str, *, model: str) -> str:
    return (
        f"Column {name} of model {model} is {sf_type}, which heap-dbt cannot send to Heap; cast it "
        f"in the model (e.g. TO_VARCHAR({name}), or BASE64_ENCODE({name}) for BINARY)."
    )
