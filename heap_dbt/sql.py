"""Generate the DuckDB SQL that turns a model's rows into Heap records.

For each sync one query yields, per row: the sync key, the reason the row is rejected (or
NULL), the record's JSON text as Heap wants it, and how many values were truncated. Value
conversion and every row-level check run here, as SQL, so Python only moves bytes. The query
reads the rows the warehouse chose to send (``heap_dbt.warehouse.Dialect.candidates_sql``):
the warehouse filters, DuckDB formats, whatever the warehouse.

Every column name is quoted as an identifier and every name from meta is a quoted
literal: no text from meta is pasted into SQL as is.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

from heap_dbt.config import SyncSpec
from heap_dbt.warehouse import (
    CANDIDATES,
    DUPS,
    IS_NEW,
    KEY_HASH_1,
    KEY_HASH_2,
    ROW_HASH,
    Column,
    ColumnType,
    Dialect,
    FilterSpec,
    stream_names,
)  # fmt: skip
from heap_dbt.warehouse import KEY as KEY

MAX_IDENTITY = 255
MAX_VALUE = 1023  # Heap: strings "fewer than 1024 characters"
MAX_EVENT_NAME = 1024
PLACEHOLDER_IDENTITIES = ("null", "undefined", "none", "nan")
MAX_SAFE_INTEGER = 2**53 - 1
"""Beyond this a double, the form in which Heap keeps a number, no longer tells integers apart."""
DOUBLE_DIGITS = 15
"""Significant decimal digits a double always keeps: any 15-digit decimal reads back unchanged."""
_SMALL_INTEGERS = ("TINYINT", "SMALLINT", "INTEGER", "UTINYINT", "USMALLINT", "UINTEGER")
_UNSIGNED = ("UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT", "UHUGEINT")

ISO_MS = "%Y-%m-%dT%H:%M:%S.%gZ"
WHITESPACE = "' ' || chr(9) || chr(10) || chr(11) || chr(12) || chr(13)"
WHITESPACE_CODES = "(9, 10, 11, 12, 13, 32)"

REASON, RECORD, TRUNCATED, IDENTITY = "__reason", "__record", "__truncated", "__identity"
NULLS = "__nulls"
"""How many of a user's or account's properties are NULL, and so leave Heap's value in place."""
ARRIVED_BAD = "__heap_rejects_"
"""Prefix of the column that holds a ``Column.rejects`` check of the column it names."""
SEPARATOR = ","
"""Ends every record in the RECORD column: a bulk body is then one slice of the Arrow buffer."""
HASH, NEW, K1, K2 = "__hash", "__new", "k1", "k2"


def ident(name: str) -> str:
    """Quote ``name`` as an SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def lit(text: str) -> str:
    """Quote ``text`` as an SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def _json_key(name: str) -> str:
    """The SQL literal of ``"name":`` as JSON text."""
    return lit(json.dumps(name, ensure_ascii=False) + ":")


@dataclass
class _Entry:
    """One property: its JSON fragment and the checks it contributes."""

    fragment: str
    reasons: list[tuple[str, str]]  # (condition, message SQL)
    truncations: list[str]  # conditions
    late: list[tuple[str, str]] = field(default_factory=list)
    """Checks that reject rows the record could never carry, left out of the record definition
    (``RecordQuery.definition``): adding them resends no row that was sent before."""
    name: str = ""
    """The property name, or for ``shape`` map and json the prefix of the names it makes."""
    shape: str = "exact"
    """``exact``: one property, ``name``; ``map``: ``name.<key>`` per entry; ``json``: ``name``
    for a JSON scalar, else ``name.<path>`` per leaf (known only from each row's value)."""
    source: str = ""
    """Where the property comes from, for messages: ``column 'address' (a struct, flattened)``."""
    expr: str = ""
    """The value's SQL: for a ``json`` entry's checks of its names, and an ``exact`` one's NULL."""


def _year(expr: str, t: ColumnType) -> str:
    """The year of a date or timestamp value, in UTC; NULL for +-infinity."""
    return f"year(timezone('UTC', {expr}))" if t.kind == "timestamptz" else f"year({expr})"


def _beyond_iso(expr: str, t: ColumnType) -> str:
    """True for an instant that ISO 8601's four-digit years cannot write (before 1 AD, after 9999)."""
    return f"NOT ({_year(expr, t)} BETWEEN 1 AND 9999)"


YEARS = "outside years 1-9999, which an ISO 8601 date cannot write"


def _scalar_text(expr: str, t: ColumnType) -> str | None:
    """SQL giving the string form of a scalar value sent as a Heap string, or None for numbers."""
    if t.kind == "string":
        return expr if t.sql == "VARCHAR" else f"CAST({expr} AS VARCHAR)"
    if t.kind == "boolean":
        return f"CASE {expr} WHEN true THEN 'true' WHEN false THEN 'false' END"
    if t.kind == "date":
        return f"strftime({expr}, '%Y-%m-%d')"
    if t.kind == "timestamp":
        # A cast to TIMESTAMP would round nanoseconds (05.999999999 to 06.000000): sub-millisecond
        # precision is cut, as strftime cuts it for every other timestamp type.
        if t.sql == "TIMESTAMP_NS":
            return f"strftime({expr}, '{ISO_MS}')"
        return f"strftime(CAST({expr} AS TIMESTAMP), '{ISO_MS}')"
    if t.kind == "timestamptz":
        return f"strftime(timezone('UTC', {expr}), '{ISO_MS}')"
    if t.kind in ("integer", "float", "decimal"):
        return None
    if t.kind in ("list", "struct", "map"):
        return f"CAST(to_json({expr}) AS VARCHAR)"
    return f"CAST({expr} AS VARCHAR)"


def _decimal_shape(t: ColumnType) -> tuple[int, int | None]:
    """A DECIMAL's precision and scale from its SQL type; the widest precision if it is unreadable."""
    found = re.fullmatch(r"DECIMAL\((\d+),\s*(\d+)\)", t.sql)
    return (int(found.group(1)), int(found.group(2))) if found else (38, None)


def _number(expr: str, t: ColumnType) -> str:
    """The JSON text of an integer or decimal: a number where a double keeps it, else its exact digits.

    Heap keeps numbers as doubles, so a JSON number that a double cannot hold would change
    silently. A value goes as a JSON number when it is within +-(2^53 - 1) and, read as a
    double and printed back in the fewest digits, it is the same decimal; otherwise it goes
    as a string of its exact digits (``"9007199254740993"``, ``"0.1000000000000000055"``).

    Integers take the safe-integer range, as Heap's own ``user_id`` does: past 2^53 a
    double no longer tells neighbouring integers apart, so even 2^53 goes as a string.
    Decimals are judged per value, not per column. A double keeps any decimal of 15
    significant digits (DBL_DIG), so DECIMAL(p, s) with p <= 15 is always a number. Past
    that, some values survive (1234567890123.456) and some do not (12345678901234.567).
    Sending a whole wide column as strings would make the amounts of DuckDB's default
    DECIMAL(18,3) text that Heap cannot sum. The cost of the per-value rule is that such a
    column can reach Heap as numbers with the odd string, which is visible, where a
    changed digit is not. The round trip runs only where it can fail: a decimal of at most
    15 digits (``abs(x) < 10^(15 - s)``) skips it, so most rows of a wide column cost
    nothing extra.
    """
    text = f"CAST({expr} AS VARCHAR)"
    as_string = f"'\"' || {text} || '\"'"
    if t.sql == "NUMERIC":
        # Exact decimal text of any precision (Postgres' unconstrained numeric): a number when
        # its digits are at most DOUBLE_DIGITS, which a double always keeps (trailing zeros
        # counted: stricter, never wrong); else its exact digits as a string.
        digits = f"length(ltrim(replace(replace({expr}, '-', ''), '.', ''), '0'))"
        return f"CASE WHEN {digits} <= {DOUBLE_DIGITS} THEN {expr} ELSE {as_string} END"
    if t.kind == "integer":
        if t.sql in _SMALL_INTEGERS:
            return text
        low = "" if t.sql in _UNSIGNED else f"{expr} >= -{MAX_SAFE_INTEGER} AND "
        return f"CASE WHEN {low}{expr} <= {MAX_SAFE_INTEGER} THEN {text} ELSE {as_string} END"
    precision, scale = _decimal_shape(t)
    text = _decimal_text(expr, t)
    as_string = f"'\"' || {text} || '\"'"
    if precision <= DOUBLE_DIGITS:
        return text
    # DuckDB reads a double's text (1e-16) back as a decimal only with an integer digit to
    # spare, so the comparison reads it as DECIMAL(38, s), or (38, 37) for a DECIMAL(38, 38),
    # where the rounding cannot make a different value compare equal.
    wide = "DECIMAL(38, 37)" if scale is None or scale > 37 else f"DECIMAL(38, {scale})"
    keeps = f"TRY_CAST(CAST(CAST({expr} AS DOUBLE) AS VARCHAR) AS {wide}) = {expr}"
    if scale is None or precision - scale > DOUBLE_DIGITS:
        keeps = f"abs({expr}) <= {MAX_SAFE_INTEGER} AND {keeps}"
    if scale is not None and scale <= DOUBLE_DIGITS:
        keeps = f"abs({expr}) < {10 ** (DOUBLE_DIGITS - scale)} OR ({keeps})"
    return f"CASE WHEN {keeps} THEN {text} ELSE {as_string} END"


def _decimal_text(expr: str, t: ColumnType) -> str:
    """A decimal's exact digits; DuckDB prints DECIMAL(p, p) without the leading 0 (``.50``)."""
    text = f"CAST({expr} AS VARCHAR)"
    precision, scale = _decimal_shape(t)
    if scale != precision:
        return text
    return f"CASE WHEN {expr} < 0 THEN '-0' || substr({text}, 2) ELSE '0' || {text} END"


def _element_text(expr: str, t: ColumnType) -> str:
    """An element of a list, or an identity, as text; a number keeps all its digits (no double)."""
    text = _scalar_text(expr, t)
    if text is not None:
        return text
    return _decimal_text(expr, t) if t.kind == "decimal" else f"CAST({expr} AS VARCHAR)"


def _value(expr: str, t: ColumnType, label: str, *, truncate: bool) -> _Entry:
    """The JSON value of a scalar or list column, with its checks."""
    reasons: list[tuple[str, str]] = []
    truncations: list[str] = []
    late: list[tuple[str, str]] = []
    if t.kind in ("integer", "decimal"):
        if t.sql == "NUMERIC":
            # Postgres' text says NaN and Infinity; ADBC's binary COPY reader says nan and inf.
            reasons.append(
                (
                    f"lower(ltrim({expr}, '+-')) IN ('nan', 'inf', 'infinity')",
                    lit(f"property {label!r} is NaN or infinite"),
                )
            )
            # Its exact digits go as a string, which Heap takes up to MAX_VALUE characters (1e1100).
            late.append(
                (
                    _longer_than(expr, MAX_VALUE),
                    f"{lit(f'property {label!r} has ')} || length({expr}) || "
                    f"{lit(f' characters of digits; Heap takes at most {MAX_VALUE}')}",
                )
            )
        return _Entry(_number(expr, t), reasons, truncations, late)
    if t.kind == "float":
        # to_json prints the shortest text that reads back as the same double, -0.0 included; a
        # FLOAT (REAL) as a double would be 0.10000000149011612, so it is printed as itself: the
        # shortest text that reads back as the same float (0.1).
        reasons.append((f"(isnan({expr}) OR isinf({expr}))", lit(f"property {label!r} is NaN or infinite")))
        text = f"CAST({expr} AS VARCHAR)" if t.sql == "FLOAT" else f"CAST(to_json({expr}) AS VARCHAR)"
        return _Entry(text, reasons, truncations)
    if t.kind == "list":
        ((_, elem),) = t.children
        element = _element_text("x", elem)
        # A list of VARCHAR needs no per-element conversion (the lambda would cost 30% more).
        items = expr if element == "x" else f"list_transform({expr}, lambda x: {element})"
        text = f"array_to_string({items}, '||')"
        # An element is a value too: NaN, infinity or an infinite date is rejected as it is alone.
        if elem.kind == "float":
            bad, what = "isnan(x) OR isinf(x)", "NaN or infinite"
        elif elem.kind in ("date", "timestamp", "timestamptz"):
            bad, what = "isinf(x)", "an infinite date"
        else:
            bad = what = ""
        if bad:
            reasons.append(
                (
                    f"list_bool_or(list_transform({expr}, lambda x: {bad}))",
                    lit(f"property {label!r} holds {what}"),
                )
            )
        if elem.kind in ("struct", "list", "map") and _holds_float(elem):
            # Nested elements go as their JSON text, where NaN and +-Infinity are bare words.
            late.append(
                (
                    "(SELECT coalesce(bool_or(n.type = 'DOUBLE' AND CAST(n.value AS VARCHAR) IN "
                    f"('NaN', 'Infinity', '-Infinity')), false) FROM json_tree(to_json({expr})) AS n)",
                    lit(f"property {label!r} holds NaN or infinite"),
                )
            )
        if elem.kind in ("date", "timestamp", "timestamptz"):
            late.append(
                (
                    f"list_bool_or(list_transform({expr}, lambda x: {_beyond_iso('x', elem)}))",
                    lit(f"property {label!r} holds a date {YEARS}"),
                )
            )
    else:
        text = _scalar_text(expr, t) or f"CAST({expr} AS VARCHAR)"
    if t.kind in ("date", "timestamp", "timestamptz"):
        reasons.append((f"isinf({expr})", lit(f"property {label!r} is an infinite date")))
        late.append((_beyond_iso(expr, t), lit(f"property {label!r} is {YEARS}")))
    if t.kind in ("string", "list", "other", "struct", "map"):
        too_long = _longer_than(text, MAX_VALUE)
        if truncate:
            truncations.append(too_long)
            text = f"left({text}, {MAX_VALUE})"
        else:
            reasons.append(
                (
                    too_long,
                    f"{lit(f'property {label!r} is ')} || length({text}) || "
                    f"{lit(f' characters; Heap takes at most {MAX_VALUE} (set truncate: true to cut it)')}",
                )
            )
    if t.kind in ("date", "timestamp", "timestamptz"):
        return _Entry(f"'\"' || {text} || '\"'", reasons, truncations, late)
    return _Entry(f"CAST(to_json({text}) AS VARCHAR)", reasons, truncations, late)


def _holds_float(t: ColumnType) -> bool:
    """Whether a value of type ``t`` can hold a float anywhere inside it."""
    return t.kind == "float" or any(_holds_float(child) for _, child in t.children)


def _map_fragment(expr: str, t: ColumnType, prefix: str, *, truncate: bool) -> _Entry:
    """Dynamic ``prefix.key`` properties from a MAP column."""
    (_, _key_t), (_, val_t) = t.children
    inner = _value("e.value", val_t, f"{prefix}.<key>", truncate=truncate)
    pair = (
        f"CAST(to_json({lit(prefix + '.')} || CAST(e.key AS VARCHAR)) AS VARCHAR) || ':' || {inner.fragment}"
    )
    fragment = (
        f"NULLIF(array_to_string(list_transform("
        f"list_filter(map_entries({expr}), lambda e: e.value IS NOT NULL), lambda e: {pair}), ','), '')"
    )
    # The messages of ``inner`` refer to ``e``, which only exists inside the lambda.
    reasons = [
        (
            f"list_bool_or(list_transform(map_entries({expr}), lambda e: coalesce({cond}, false)))",
            lit(
                f"a value of map property {prefix!r} is invalid "
                f"(NaN, infinite, or over {MAX_VALUE} characters)"
            ),
        )
        for cond, _msg in inner.reasons
    ]
    # A message that is one literal ("property 'm.<key>' is outside years ...") reads as it is.
    late = [
        (
            f"list_bool_or(list_transform(map_entries({expr}), lambda e: coalesce({cond}, false)))",
            msg if "||" not in msg else lit(f"a value of map property {prefix!r} cannot be sent"),
        )
        for cond, msg in inner.late
    ]
    truncs = [
        f"list_bool_or(list_transform(map_entries({expr}), lambda e: coalesce({cond}, false)))"
        for cond in inner.truncations
    ]
    return _Entry(fragment, reasons, truncs, late)


_JSON_SEGMENTS = r"""regexp_extract_all(n.fullkey, '\.("(?:[^"\\]|\\.)*"|[^."\[]+)', 1)"""
"""The keys of a json_tree node's path ``$.a."b.c"``, quoted where DuckDB quotes them."""
_JSON_LEAF = (
    "n.type NOT IN ('OBJECT', 'NULL') AND (n.id = 0 OR NOT contains("
    r"""regexp_replace(n.fullkey, '"(?:[^"\\]|\\.)*"', '', 'g'), '['))"""
)
"""A node that is a property: not an object, not JSON null, and not inside an array."""
_JSON_ELEMENT = "CASE WHEN json_type(x) = 'VARCHAR' THEN x->>'$' ELSE CAST(x AS VARCHAR) END"
"""An array element as text: a string without its quotes, anything else as its JSON."""


def _json_name(prefix: str) -> str:
    """The property name of json_tree node ``n``: ``prefix``, or ``prefix.`` and its dotted path."""
    return (
        f"CASE WHEN n.id = 0 THEN {lit(prefix)} ELSE {lit(prefix + '.')} || array_to_string("
        f"list_transform({_JSON_SEGMENTS}, lambda s: CASE WHEN s[1] = '\"' THEN TRY_CAST(s AS JSON)->>'$' "
        "ELSE s END), '.') END"
    )


def _json_clashes(entry: _Entry, others: list[_Entry]) -> list[tuple[str, str]]:
    """Rejections of a row whose JSON value (``entry``) names a property twice: two of its
    leaves that flatten to one name (``{"a.b": 1, "a": {"b": 2}}``, or a key repeated in a
    Postgres ``json``), or a leaf named as another property of the record (``others``)."""
    name = _json_name(entry.name)
    nodes = f"FROM json_tree({entry.expr}) AS n WHERE {_JSON_LEAF}"
    twice = (
        f"(SELECT {lit('property ')} || CAST(to_json(d.name) AS VARCHAR) || "
        f"{lit(f' comes twice from {entry.source}, at ')} || d.paths FROM (SELECT {name} AS name, "
        f"string_agg(n.fullkey, ' and ' ORDER BY n.id) AS paths, min(n.id) AS first {nodes} "
        "GROUP BY 1 HAVING count(*) > 1) AS d ORDER BY d.first LIMIT 1)"
    )
    reasons = [(f"{twice} IS NOT NULL", twice)]
    below = entry.name + "."
    clashing = {o.name: o.source for o in others if o.shape == "exact" and o.name.startswith(below)}
    if clashing:
        whens = " ".join(f"WHEN {lit(k)} THEN {lit(v)}" for k, v in clashing.items())
        source = f"CASE d.name {whens} END"
        both = (
            f"(SELECT {lit('property ')} || CAST(to_json(d.name) AS VARCHAR) || "
            f"{lit(f' comes from both {entry.source} and ')} || {source} FROM (SELECT {name} AS name, "
            f"n.id {nodes}) AS d WHERE d.name IN ({', '.join(lit(k) for k in clashing)}) "
            "ORDER BY d.id LIMIT 1)"
        )
        reasons.append((f"{both} IS NOT NULL", both))
    return reasons


def _json_entry(expr: str, prefix: str, *, truncate: bool) -> _Entry:
    """Properties from a JSON value: an object's leaves as dotted names (as a struct's fields),
    a scalar as ``prefix`` itself; an array (anywhere) is its elements joined with ``||``.

    Numbers are what DuckDB's JSON reader makes of them: integers exactly (as a string past
    +-(2^53 - 1), as elsewhere), other numbers as doubles, which is what Heap keeps.

    A value DuckDB cannot read as JSON (Postgres' json keeps a lone surrogate ``\\ud800``), or
    whose object keys hold a control character, rejects its row instead of failing the query:
    the tree is read only from valid JSON, and a key that cannot be named is NULL, not an error.
    """
    valid = f"json_valid({expr})"
    expr = f"(CASE WHEN {valid} THEN {expr} END)"
    name = _json_name(prefix)
    text = (
        "CASE n.type WHEN 'VARCHAR' THEN n.value->>'$' WHEN 'ARRAY' THEN array_to_string("
        f"list_transform(CAST(n.value AS JSON[]), lambda x: {_JSON_ELEMENT}), '||') "
        "ELSE CAST(n.value AS VARCHAR) END"
    )
    is_text = "n.type IN ('VARCHAR', 'ARRAY', 'BOOLEAN')"
    too_long = f"({is_text} AND length({text}) > {MAX_VALUE})"
    shown = f"left({text}, {MAX_VALUE})" if truncate else text
    integral = r"regexp_full_match(CAST(n.value AS VARCHAR), '-?[0-9]+')"
    unsafe = f"{integral} AND abs(CAST(n.value AS DOUBLE)) > {MAX_SAFE_INTEGER}"
    value = (
        f"CASE WHEN {is_text} THEN CAST(to_json({shown}) AS VARCHAR) "
        f"WHEN {unsafe} THEN '\"' || CAST(n.value AS VARCHAR) || '\"' ELSE CAST(n.value AS VARCHAR) END"
    )
    nodes = f"FROM json_tree({expr}) AS n WHERE {_JSON_LEAF}"
    fragment = (
        f"(SELECT NULLIF(string_agg(CAST(to_json({name}) AS VARCHAR) || ':' || {value}, ',' "
        f"ORDER BY n.id), '') {nodes})"
    )
    over = f"(SELECT coalesce(bool_or({too_long}), false) {nodes})"
    # DuckDB's JSON reads NaN and +-Infinity (Snowflake writes them so in a VARIANT): no JSON
    # can carry them to Heap, so they are rejected as a DOUBLE's are, wherever they sit.
    # So is a number too large for a double (1e400), which DuckDB keeps as its text.
    nan = (
        "(SELECT coalesce(bool_or(n.type = 'DOUBLE' AND (CAST(n.value AS VARCHAR) IN "
        "('NaN', 'Infinity', '-Infinity') OR isinf(TRY_CAST(CAST(n.value AS VARCHAR) AS DOUBLE)))), "
        f"false) FROM json_tree({expr}) AS n)"
    )
    not_a_number = (nan, lit(f"property {prefix!r} holds NaN or infinite"))
    control = (
        "(SELECT coalesce(bool_or(regexp_matches(n.key, '[\\x00-\\x1f]')), false) "
        f"FROM json_tree({expr}) AS n)"
    )
    late = [
        (
            f"NOT {valid}",
            lit(f"property {prefix!r} is not JSON that Heap can take (a lone surrogate or a bad escape)"),
        ),
        (control, lit(f"a key inside JSON property {prefix!r} holds a control character")),
    ]
    if truncate:
        return _Entry(fragment, [not_a_number], [over], late)
    reason = lit(
        f"a value of JSON property {prefix!r} is over {MAX_VALUE} characters; Heap takes at most "
        f"{MAX_VALUE} (set truncate: true to cut it)"
    )
    return _Entry(fragment, [not_a_number, (over, reason)], [], late)


_IN_STRUCT = " (a struct, flattened)"


def _entries(name: str, expr: str, t: ColumnType, *, truncate: bool, source: str = "") -> list[_Entry]:
    """The property entries of one mapped column; structs and JSON objects flatten to dotted names."""
    if t.kind == "json":
        entry = _json_entry(expr, name, truncate=truncate)
        entry.name, entry.shape, entry.source = name, "json", f"{source} (JSON, flattened)"
        entry.expr = f"(CASE WHEN json_valid({expr}) THEN {expr} END)"  # as _json_entry reads it
        return [entry]
    if t.kind == "struct":
        out: list[_Entry] = []
        for child, child_t in t.children:
            out += _entries(
                f"{name}.{child}", f"{expr}.{ident(child)}", child_t, truncate=truncate,
                source=source if source.endswith(_IN_STRUCT) else source + _IN_STRUCT,
            )  # fmt: skip
        return out
    if t.kind == "map" and t.children[0][1].kind in ("string", "integer"):
        entry = _map_fragment(expr, t, name, truncate=truncate)
        entry.name, entry.shape, entry.source = name, "map", f"{source} (a map, flattened)"
        return [entry]
    value = _value(expr, t, name, truncate=truncate)
    value.fragment = f"{_json_key(name)} || {value.fragment}"
    value.name, value.source, value.expr = name, source, expr
    return [value]


def _column_source(prop: str, col: str) -> str:
    return f"column {col!r}" if prop == col else f"column {col!r} (as {prop!r})"


def _overlap(a: _Entry, b: _Entry) -> str | None:
    """The property name (or name pattern) that ``a`` and ``b`` can both produce, or None."""
    if a.shape == "exact" and b.shape == "exact":
        return a.name if a.name == b.name else None
    if a.shape == "exact" or b.shape == "exact":
        fixed, spread = (a, b) if a.shape == "exact" else (b, a)
        if spread.shape == "json" and fixed.name == spread.name:
            return fixed.name  # a JSON scalar is sent under the column's own name
        if spread.shape == "map" and fixed.name.startswith(spread.name + "."):
            return fixed.name
        return None
    if a.name == b.name or a.name.startswith(b.name + ".") or b.name.startswith(a.name + "."):
        longer = max(a.name, b.name, key=len)
        return f"{longer}.<key>"
    return None


def name_collisions(spec: SyncSpec, types: dict[str, ColumnType]) -> list[str]:
    """Property names that two sources of ``spec`` produce, as the columns show them: a
    configuration error, since Heap would keep one of the two by chance.

    A column name against a struct's flattened field, a map's prefix or a JSON column's own
    name, and two maps or JSON values whose dotted names can meet. A JSON object's keys
    meeting another property's name are known only per row: ``record_query`` rejects such rows.
    """
    entries: list[_Entry] = []
    for prop, col in spec.properties.items():
        if col in types:
            source = _column_source(prop, col)
            entries += _entries(prop, ident(col), types[col], truncate=False, source=source)
    where = f"model {spec.model.name}, {spec.meta_path}"
    problems = []
    for i, a in enumerate(entries):
        for b in entries[i + 1 :]:
            if (a.shape, b.shape) in (("json", "exact"), ("exact", "json")) and a.name != b.name:
                continue  # per row, as above
            name = _overlap(a, b)
            if name is not None:
                problems.append(
                    f"{where}: property {name!r} would come from both {a.source} and {b.source}; "
                    "rename one of the columns in the model, or map it to another property name in "
                    "`fields`."
                )
    return problems


def _longer_than(expr: str, limit: int) -> str:
    """``length(expr) > limit``, counting characters only where the bytes could exceed it."""
    return f"CASE WHEN strlen({expr}) > {limit} THEN length({expr}) > {limit} ELSE false END"


def _padded(expr: str) -> str:
    """True where ``expr`` starts or ends with whitespace: trim() can change only those."""
    return f"(ascii({expr}) IN {WHITESPACE_CODES} OR ascii(right({expr}, 1)) IN {WHITESPACE_CODES})"


def _identity_checks(expr: str, what: str) -> list[tuple[str, str]]:
    placeholders = ", ".join(lit(p) for p in PLACEHOLDER_IDENTITIES)
    longest = max(len(p) for p in PLACEHOLDER_IDENTITIES)
    # trim() is costly; only short or padded values can trim down to a placeholder.
    placeholder = (
        f"CASE WHEN strlen({expr}) <= {longest} OR {_padded(expr)} "
        f"THEN lower(trim({expr}, {WHITESPACE})) IN ({placeholders}) ELSE false END"
    )
    return [
        (_longer_than(expr, MAX_IDENTITY), lit(f"{what} is longer than {MAX_IDENTITY} characters")),
        (placeholder, f"{lit(what + ' is a placeholder (')} || {expr} || {lit('), not a real identity')}"),
    ]


def _empty_checks(expr: str, what: str) -> list[tuple[str, str]]:
    blank = f"CASE WHEN {expr} = '' OR {_padded(expr)} THEN trim({expr}, {WHITESPACE}) = '' ELSE false END"
    return [
        (f"{expr} IS NULL", lit(f"{what} is NULL")),
        (blank, lit(f"{what} is empty or whitespace")),
    ]


@dataclass(frozen=True)
class RecordQuery:
    """The statements of one sync and what their result columns mean.

    ``candidates_sql`` and the probes run in the warehouse, in its dialect; ``format_sql``
    runs in DuckDB over the candidates (named CANDIDATES) and yields the result columns.
    """

    candidates_sql: str
    format_sql: str
    has_identity: bool
    can_truncate: bool
    """Whether TRUNCATED can be anything but 0 (some property has ``truncate: true``)."""
    counts_nulls: bool
    """Whether NULLS can be anything but 0 (users and accounts with ``nulls: keep``)."""
    keys_sql: str
    """The model's keys, for finding keys that left the model."""
    probe_sql: str
    """One row: the row count and a hash of every row, for the model's fingerprint."""
    duplicates_sql: str
    """One row: how many rows repeat a key already seen."""
    probe_duplicates_sql: str
    """One row: probe_sql's two values, then duplicates_sql's, from one scan."""
    duplicate_keys_sql: str
    """The repeated keys (``dup_key``) and how often each appears (``n``)."""
    definition: str
    """A hash of how records are built; part of the model's fingerprint."""
    width: int
    """How many columns the queries read, struct and map fields counted one by one."""

    @property
    def sql(self) -> str:
        """Both stages as one DuckDB query, for a warehouse that is DuckDB itself."""
        return f"WITH {CANDIDATES} AS ({self.candidates_sql})\n{self.format_sql}"

    def fingerprint(self, probe: tuple[Any, ...]) -> str:
        """The model's fingerprint from the probe row: rows, content and record definition."""
        return f"{probe[0]}:{probe[1]}:{self.definition}"


def record_query(
    spec: SyncSpec,
    columns: list[Column],
    *,
    key_seed: str,
    definition_seed: str,
    dialect: Dialect,
    previous: str | None = None,
    duplicates: bool = True,
    duplicates_table: str | None = None,
    identities: bool = True,
) -> RecordQuery:
    """Build the statements that yield key, reason, record JSON (plus SEPARATOR), truncation
    count and hashes.

    ``columns`` must be the relation's real columns, already checked by
    ``config.resolve_columns``. ``key_seed`` seeds each event's deterministic idempotency key,
    ``definition_seed`` the record definition (so the row hashes and the fingerprint); both come
    from the sync's identity (``heap_dbt.identity``), which refactoring the project keeps.
    ``dialect`` writes the warehouse-side statements. With ``previous`` (SQL yielding
    ``k1, k2, hash`` of what Heap holds), only rows that are new, changed, or rejected come
    out: the diff runs in the warehouse. Events compare keys only, since Heap keeps the first
    event with an idempotency key. ``duplicates=False`` (the probe found no repeated key)
    leaves out the duplicate-key join, a third of the work. ``duplicates_table`` names a
    table (``dup_key``, ``n``) the caller filled from ``duplicate_keys_sql``: joining that
    small table keeps memory flat on huge models. ``identities=False`` leaves out an event's
    IDENTITY column, which only the per-identity rate limit reads.
    """
    types = {c.name: c.type for c in columns}
    by_name = {c.name: c for c in columns}
    src = spec.model.relation_name
    assert src is not None  # parse_specs skips ephemeral models
    key_t = types[spec.key]
    # The key text as the warehouse wrote it (CANDIDATES' KEY): what the definition hashes.
    key_expr = ident(spec.key) if key_t.sql == "VARCHAR" else f"CAST({ident(spec.key)} AS VARCHAR)"
    key_name = {"user": "identity", "account": "account ID", "event": "Insert ID"}[spec.object]
    reasons: list[tuple[str, str]] = _empty_checks("k." + ident(KEY), f"{key_name} ({spec.key})")
    if spec.object == "user":
        reasons += _identity_checks("k." + ident(KEY), f"identity ({spec.key})")

    used = dict.fromkeys([spec.key, *spec.reserved_columns(), *spec.properties.values()])
    streamed = stream_names([by_name[c] for c in used])

    def column(name: str) -> str:
        """The column as the format query reads it from the stream."""
        return "k." + ident(streamed[name])

    entries: list[_Entry] = []
    for prop, col in spec.properties.items():
        entries += _entries(
            prop, column(col), types[col], truncate=spec.truncate, source=_column_source(prop, col)
        )

    # ``fixed``: pieces every valid row has (a NULL there means the row is rejected, so its
    # record is never sent); ``optional``: fragments that concat_ws leaves out when NULL.
    fixed: list[str] = []
    late: list[tuple[str, str]] = []
    optional: list[str] = []
    identity_sql = ""
    if spec.object == "event":
        assert spec.identity is not None  # config guarantees it for events
        id_t = types[spec.identity]
        identity_sql = _element_text(column(spec.identity), id_t)
        reasons += _empty_checks(identity_sql, f"event identity ({spec.identity})")
        reasons += _identity_checks(identity_sql, f"event identity ({spec.identity})")
        if spec.event_name_column:
            name_sql = _element_text(column(spec.event_name_column), types[spec.event_name_column])
            reasons += _empty_checks(name_sql, f"event name ({spec.event_name_column})")
            reasons.append(
                (
                    _longer_than(name_sql, MAX_EVENT_NAME),
                    lit(f"event name is longer than {MAX_EVENT_NAME} characters"),
                )
            )
        else:
            name_sql = lit(spec.event_name or "")
        fixed += [
            lit('"identity":'), f"CAST(to_json({identity_sql}) AS VARCHAR)",
            lit(',"event":'), f"CAST(to_json({name_sql}) AS VARCHAR)",
            lit(',"idempotency_key":"'), f"md5({lit(key_seed + ':')} || k.{ident(KEY)})", lit('"'),
        ]  # fmt: skip
        if spec.timestamp:
            ts_t = types[spec.timestamp]
            ts_text = _scalar_text(column(spec.timestamp), ts_t)
            if ts_t.kind == "date":  # an event's time is an instant: the date's midnight, UTC
                ts_text = f"strftime(CAST({column(spec.timestamp)} AS TIMESTAMP), '{ISO_MS}')"
            optional.append(f"'\"timestamp\":\"' || {ts_text} || '\"'")
            reasons.append((f"isinf({column(spec.timestamp)})", lit("event timestamp is infinite")))
            late.append((_beyond_iso(column(spec.timestamp), ts_t), lit(f"event timestamp is {YEARS}")))
    elif spec.object == "user":
        fixed += [lit('"identity":'), f"CAST(to_json(k.{ident(KEY)}) AS VARCHAR)"]
    else:
        fixed += [lit('"account_id":'), f"CAST(to_json(k.{ident(KEY)}) AS VARCHAR)"]

    dup_reason = (
        f"k.{ident(DUPS)} IS NOT NULL",
        f"{lit('duplicate key: ')} || k.{ident(DUPS)} || {lit(' rows share it, so none of them is sent')}",
    )
    for e in entries:
        reasons += e.reasons
        if e.shape == "json":
            reasons += _json_clashes(e, entries)
        late += e.late
    # A value that arrived but that its DuckDB type cannot hold (``Column.rejects``): its check
    # ran on the arrived value, before the restore (``source`` below).
    rejects = {col: by_name[col].rejects for col in dict.fromkeys(spec.properties.values())}
    for prop, col in spec.properties.items():
        if (check := rejects[col]) is not None:
            reasons.append((f"k.{ident(ARRIVED_BAD + streamed[col])}", lit(f"property {prop!r} {check[1]}")))
    truncations = [t for e in entries for t in e.truncations]
    # A NULL leaves the property out (Heap keeps its old value), or with ``nulls: clear`` sends
    # it as "". Only properties whose names the columns fix can be cleared or counted: a map's
    # or a JSON value's names come from the value itself.
    exact = [e for e in entries if e.shape == "exact"]
    if spec.nulls == "clear":
        for e in exact:
            e.fragment = f"coalesce({e.fragment}, {_json_key(e.name)} || '\"\"')"
    counts_nulls = spec.nulls == "keep" and spec.object != "event" and bool(exact)
    nulls_sql = " + ".join(f"CAST({e.expr} IS NULL AS INTEGER)" for e in exact) if counts_nulls else "0"

    # concat() copies each record once where a chain of || would copy it at every step.
    properties = (
        "concat('\"properties\":{', concat_ws(',', " + ", ".join(e.fragment for e in entries) + "), '}')"
        if entries
        else "'\"properties\":{}'"
    )
    rest = "concat_ws(',', " + ", ".join([*optional, properties]) + ")"
    record_parts = ["'{'", *fixed, "','", rest, "'}'"]
    record = f"concat({', '.join(record_parts)})"
    definition = hash_text("\n".join([definition_seed, key_expr, record, *(c + m for c, m in reasons)]))
    reasons += late
    if duplicates:
        reasons.append(dup_reason)
    reason_sql = "CASE " + " ".join(f"WHEN {cond} THEN {msg}" for cond, msg in reasons) + " END"
    trunc_sql = (
        " + ".join(f"CAST(coalesce({c}, false) AS INTEGER)" for c in truncations) if truncations else "0"
    )
    select = [
        f"k.{ident(KEY)} AS {ident(KEY)}",
        f"{reason_sql} AS {ident(REASON)}",
        f"concat({', '.join([*record_parts, lit(SEPARATOR)])}) AS {ident(RECORD)}",
        f"{trunc_sql} AS {ident(TRUNCATED)}",
        f"{nulls_sql} AS {ident(NULLS)}",
    ]
    if spec.object == "event" and identities:
        select.append(f"{identity_sql} AS {ident(IDENTITY)}")
    select += [
        f"k.{ident(KEY_HASH_1)} AS {K1}",
        f"k.{ident(KEY_HASH_2)} AS {K2}",
        f"k.{ident(ROW_HASH)} AS {ident(HASH)}",
        f"k.{ident(IS_NEW)} AS {ident(NEW)}",
    ]
    # Change detection hashes the source values the record is built from (plus how it is built),
    # so the diff finds changed rows before any JSON is made: records are built for those only.
    f = FilterSpec(
        relation=src,
        key=by_name[spec.key],
        columns=tuple(by_name[c] for c in used),
        seed=str(definition),
        compare_hashes=spec.object != "event",
    )
    restored = [
        f"{c.restore.format(ident(streamed[c.name]))} AS {ident(streamed[c.name])}"
        for c in f.columns
        if c.restore != "{}"
    ]
    checked = [
        f"({check[0].format(ident(streamed[col]))}) AS {ident(ARRIVED_BAD + streamed[col])}"
        for col, check in rejects.items()
        if check is not None
    ]
    replace = f" REPLACE ({', '.join(restored)})" if restored else ""
    source = f"(SELECT *{replace}{''.join(', ' + c for c in checked)} FROM {CANDIDATES})"
    if not restored and not checked:
        source = CANDIDATES
    return RecordQuery(
        candidates_sql=dialect.candidates_sql(
            f, previous=previous, duplicates=duplicates, duplicates_table=duplicates_table
        ),
        format_sql=f"SELECT {', '.join(select)}\nFROM {source} AS k",
        has_identity=spec.object == "event" and identities,
        can_truncate=bool(truncations),
        counts_nulls=counts_nulls,
        keys_sql=dialect.keys_sql(f),
        probe_sql=dialect.probe_sql(f),
        probe_duplicates_sql=dialect.probe_duplicates_sql(f),
        duplicate_keys_sql=dialect.duplicate_keys_sql(f),
        duplicates_sql=dialect.duplicates_sql(f),
        definition=str(definition),
        width=sum(_leaves(types[c]) for c in used),
    )


def _leaves(t: ColumnType) -> int:
    """The stored columns behind a value of type ``t``: one, or one per struct field."""
    if t.kind in ("struct", "map", "list"):
        return sum(_leaves(child) for _, child in t.children) or 1
    return 1


def hash_text(text: str) -> int:
    """A stable hash of the generated SQL (Python's hash() is salted per process)."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")
