"""The warehouse-side statements in Snowflake's SQL: row hashes, the diff, duplicate keys, the fingerprint.

Written out for Snowflake, not transpiled from DuckDB's, and run on fakesnow's server in the
tests. fakesnow is DuckDB underneath, so what these statements mean on real Snowflake rests
on Snowflake's documented semantics, which the choices below rely on:

- A hash is ``BITAND(HASH(...), 2^63 - 1)``: Snowflake's HASH is a signed 64-bit function of
  any number of arguments of any type, NULL included (so NULL and '' differ, and
  ``HASH(a, b)`` is not ``HASH(a || b)``); fakesnow's is DuckDB's unsigned hash(), which it
  cannot return past 2^63, so the top bit is dropped. The values differ between the two
  engines, which only matters if a state moved between them (every row is then resent
  once). Snowflake does not promise HASH stays the same across releases: should it change,
  every row looks changed and is resent once; nothing is lost.
- No CONCAT_WS: Snowflake's returns NULL when any argument is NULL, DuckDB's skips it.
- ``NOT EXISTS`` and ``LEFT JOIN ... IS NULL``, never ``ANTI JOIN`` (not Snowflake SQL);
  ``COUNT(DISTINCT CASE ...)`` where DuckDB and Postgres have ``FILTER``.
- The fingerprint sums two 31-bit slices of the row hash: Snowflake sums NUMBER exactly,
  fakesnow in a double, which is exact for these up to 2^22 rows.

A model's columns are read under their heap-dbt names (Snowflake's upper-case fold read as
lower case, ``types.heap_name``): ``src`` renames them first, so everything after it, and
the Arrow stream, uses those names.
"""

from __future__ import annotations

from heap_dbt.sql import ident, lit
from heap_dbt.warehouse import (
    DUPS,
    IS_NEW,
    KEY,
    KEY_HASH_1,
    KEY_HASH_2,
    ROW_HASH,
    Column,
    FilterSpec,
    stream_names,
)

POSITIVE = 9223372036854775807
"""2^63 - 1: a hash ANDed with it is a non-negative BIGINT on Snowflake and on fakesnow."""
SLICE = 2147483647


def _hash(*args: str) -> str:
    return f"BITAND(HASH({', '.join(args)}), {POSITIVE})"


def _key_hashes(expr: str, k1: str, k2: str) -> str:
    return f"{_hash(expr)} AS {k1}, {_hash(f'{expr} || CHR(31)')} AS {k2}"


def _signed_zeros(row_hash: str, columns: list[tuple[str, Column]]) -> str:
    """``row_hash`` with a FLOAT's negative zero told apart (HASH equates -0.0 with 0.0, which the
    record sends as ``-0.0``); XORed in only where one occurs, so other rows hash as before."""
    for seed, (expr, c) in enumerate(columns, start=1):
        if c.type.kind == "float":
            zero = f"{expr} = 0 AND TO_VARCHAR({expr}) LIKE '-%'"
            row_hash = f"BITXOR({row_hash}, CASE WHEN {zero} THEN {_hash(str(seed), lit('-0'))} ELSE 0 END)"
    return row_hash


class SnowflakeDialect:
    """The Dialect of a Snowflake warehouse (``heap_dbt.warehouse.Dialect``).

    ``sources`` maps (relation, heap-dbt column name) to the column's name in Snowflake, as
    the reader found it; a name not there is its own.
    """

    streamed_fingerprint = False  # the probe sums 31-bit slices of another hash (above)

    def __init__(self) -> None:
        self.sources: dict[tuple[str, str], str] = {}

    def _source(self, f: FilterSpec, c: Column) -> str:
        return ident(self.sources.get((f.relation, c.name), c.name))

    def _key_text(self, f: FilterSpec) -> str:
        col = self._source(f, f.key)
        return col if f.key.type.kind == "string" else f"TO_VARCHAR({col})"

    def _src(self, f: FilterSpec) -> str:
        """The model's used columns under their heap-dbt names, and the key as text."""
        cols = ", ".join(f"{self._source(f, c)} AS {ident(c.name)}" for c in f.columns)
        return f"SELECT {cols}, {self._key_text(f)} AS {ident(KEY)} FROM {f.relation}"

    def candidates_sql(
        self, f: FilterSpec, *, previous: str | None, duplicates: bool, duplicates_table: str | None
    ) -> str:
        key = ident(KEY)
        if duplicates_table is not None:
            k = (
                f"k AS (SELECT src.*, d.n AS {ident(DUPS)} FROM src "
                f"LEFT JOIN {duplicates_table} AS d ON src.{key} = d.dup_key)"
            )
        elif duplicates:
            k = (
                f"dups AS (SELECT {key} AS dup_key, COUNT(*) AS n FROM src WHERE {key} IS NOT NULL "
                "GROUP BY 1 HAVING COUNT(*) > 1),\n"
                f"k AS (SELECT src.*, dups.n AS {ident(DUPS)} FROM src "
                f"LEFT JOIN dups ON src.{key} = dups.dup_key)"
            )
        else:
            k = f"k AS (SELECT src.*, CAST(NULL AS NUMBER(19, 0)) AS {ident(DUPS)} FROM src)"
        row_hash = _hash(lit(f.seed), *(f"k.{ident(c.name)}" for c in f.columns))
        row_hash = _signed_zeros(row_hash, [(f"k.{ident(c.name)}", c) for c in f.columns])
        hashed = (
            f"h AS (SELECT k.*, {row_hash} AS {ident(ROW_HASH)}, "
            f"{_key_hashes('k.' + key, ident(KEY_HASH_1), ident(KEY_HASH_2))} FROM k)"
        )
        if previous is None:
            cand = f"cand AS (SELECT h.*, TRUE AS {ident(IS_NEW)} FROM h)"
        else:
            changed = f" OR prev.hash IS DISTINCT FROM h.{ident(ROW_HASH)}" if f.compare_hashes else ""
            cand = (
                f"prev AS ({previous}),\n"
                f"cand AS (SELECT h.*, prev.k1 IS NULL AS {ident(IS_NEW)} FROM h LEFT JOIN prev "
                f"ON prev.k1 = h.{ident(KEY_HASH_1)} AND prev.k2 = h.{ident(KEY_HASH_2)} "
                f"WHERE prev.k1 IS NULL OR h.{ident(DUPS)} IS NOT NULL{changed})"
            )
        streamed = stream_names(f.columns)
        exported = [f"{c.export.format(ident(c.name))} AS {ident(streamed[c.name])}" for c in f.columns]
        meta = [ident(n) for n in (KEY, DUPS, ROW_HASH, KEY_HASH_1, KEY_HASH_2, IS_NEW)]
        select = ", ".join(exported + meta)
        return f"WITH src AS ({self._src(f)}),\n{k},\n{hashed},\n{cand}\nSELECT {select} FROM cand"

    def _probe(self, f: FilterSpec) -> str:
        h = _signed_zeros(
            _hash(*(self._source(f, c) for c in f.columns)), [(self._source(f, c), c) for c in f.columns]
        )
        low = f"BITAND({h}, {SLICE})"
        high = f"BITAND(BITSHIFTRIGHT({h}, 32), {SLICE})"
        return (
            f"COUNT(*), TO_VARCHAR(COALESCE(CAST(SUM({low}) AS NUMBER(38, 0)), 0)) || ':' || "
            f"TO_VARCHAR(COALESCE(CAST(SUM({high}) AS NUMBER(38, 0)), 0))"
        )

    def probe_sql(self, f: FilterSpec) -> str:
        return f"SELECT {self._probe(f)} FROM {f.relation}"

    def probe_duplicates_sql(self, f: FilterSpec) -> str:
        key = self._key_text(f)
        return (
            f"SELECT {self._probe(f)}, COUNT({key}) - COUNT(DISTINCT CASE WHEN {key} IS NOT NULL "
            f"THEN {_hash(key)} END) FROM {f.relation}"
        )

    def duplicates_sql(self, f: FilterSpec) -> str:
        return (
            f"SELECT COUNT(*) - COUNT(DISTINCT {_hash('s.k')}) "
            f"FROM (SELECT {self._key_text(f)} AS k FROM {f.relation}) AS s WHERE s.k IS NOT NULL"
        )

    def duplicate_keys_sql(self, f: FilterSpec) -> str:
        return (
            f"SELECT s.k AS dup_key, COUNT(*) AS n FROM (SELECT {self._key_text(f)} AS k FROM {f.relation}) "
            "AS s WHERE s.k IS NOT NULL GROUP BY s.k HAVING COUNT(*) > 1"
        )

    def keys_sql(self, f: FilterSpec) -> str:
        return (
            f"SELECT {_key_hashes('s.k', 'k1', 'k2')} FROM (SELECT {self._key_text(f)} AS k "
            f"FROM {f.relation}) AS s WHERE s.k IS NOT NULL"
        )
