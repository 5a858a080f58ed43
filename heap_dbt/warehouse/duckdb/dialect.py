"""The warehouse-side statements in DuckDB's SQL: row hashes, the diff, duplicate keys, the fingerprint."""

from __future__ import annotations

from heap_dbt.sql import ident, lit
from heap_dbt.warehouse import DUPS, IS_NEW, KEY, KEY_HASH_1, KEY_HASH_2, ROW_HASH, Column, FilterSpec

# DuckDB's hash() is 15x cheaper than md5 here. Should a DuckDB upgrade ever change it,
# every row looks changed once and is resent once; nothing is lost.
HASH = "hash"


BYTES = 'COLLATE "binary"'
"""Compare, group and hash text by its bytes, not by the column's collation: with ``NOCASE``
``Red`` and ``RED`` would be one key and one hash, where Heap (and the record) tells them apart.
Binary is DuckDB's default, so text without a collation hashes as it always did."""


def _key_text(f: FilterSpec) -> str:
    name = ident(f.key.name)
    return f"{name} {BYTES}" if f.key.type.sql == "VARCHAR" else f"CAST({name} AS VARCHAR)"


def _hashed(c: Column, prefix: str = "") -> str:
    """A column as the row hash reads it: text by its bytes."""
    return f"{prefix}{ident(c.name)} {BYTES}" if c.type.sql == "VARCHAR" else prefix + ident(c.name)


def _signed_zeros(row_hash: str, f: FilterSpec, prefix: str = "") -> str:
    """``row_hash`` with what hash() cannot see: it hashes -0.0 as 0.0, which the record sends as
    ``-0.0``. XORed in only where a float is a negative zero, so other rows hash as before."""
    terms = []
    for seed, c in enumerate(f.columns, start=1):
        name = prefix + ident(c.name)
        if c.type.kind == "float":
            zero = f"signbit({name}) AND {name} = 0"
        elif c.type.kind == "list" and c.type.children[0][1].kind == "float":
            zero = f"list_bool_or(list_transform({name}, lambda x: signbit(x) AND x = 0))"
        else:
            continue
        terms.append(f"CASE WHEN {zero} THEN {HASH}({seed}, 'negative zero') ELSE CAST(0 AS UBIGINT) END")
    for term in terms:
        row_hash = f"xor({row_hash}, {term})"
    return row_hash


def _key_hashes(expr: str, k1: str, k2: str) -> str:
    return f"{HASH}({expr}) AS {k1}, {HASH}({expr} || chr(31)) AS {k2}"


class DuckDBDialect:
    """The Dialect of a DuckDB warehouse (``heap_dbt.warehouse.Dialect``)."""

    streamed_fingerprint = False  # the probe and the duplicate count share one fast scan

    def candidates_sql(
        self, f: FilterSpec, *, previous: str | None, duplicates: bool, duplicates_table: str | None
    ) -> str:
        key = ident(KEY)
        if duplicates_table is not None:
            dups = (
                f"k AS (SELECT src.*, d.n AS {ident(DUPS)} FROM src LEFT JOIN {duplicates_table} AS d "
                f"ON src.{key} = d.dup_key),"
            )
        elif duplicates:
            dups = f"""dups AS (
    SELECT {key} AS dup_key, count(*) AS n FROM src
    WHERE {key} IS NOT NULL GROUP BY 1 HAVING count(*) > 1
),
k AS (
    SELECT src.*, dups.n AS {ident(DUPS)} FROM src LEFT JOIN dups ON src.{key} = dups.dup_key
),"""
        else:
            dups = f"k AS (SELECT *, CAST(NULL AS BIGINT) AS {ident(DUPS)} FROM src),"
        row_hash = f"{HASH}({lit(f.seed)}, " + ", ".join(_hashed(c, "k.") for c in f.columns) + ")"
        row_hash = _signed_zeros(row_hash, f, "k.")
        hashed = (
            f"h AS (SELECT k.*, {row_hash} AS {ident(ROW_HASH)}, "
            f"{_key_hashes('k.' + key, ident(KEY_HASH_1), ident(KEY_HASH_2))} FROM k)"
        )
        if previous is None:
            candidates = f"cand AS (SELECT h.*, true AS {ident(IS_NEW)} FROM h)"
        else:
            changed = f" OR prev.hash IS DISTINCT FROM h.{ident(ROW_HASH)}" if f.compare_hashes else ""
            candidates = (
                f"prev AS ({previous}),\n"
                f"cand AS (SELECT h.*, prev.k1 IS NULL AS {ident(IS_NEW)} FROM h LEFT JOIN prev "
                f"ON prev.k1 = h.{ident(KEY_HASH_1)} AND prev.k2 = h.{ident(KEY_HASH_2)} "
                f"WHERE prev.k1 IS NULL OR h.{ident(DUPS)} IS NOT NULL{changed})"
            )
        out = ", ".join(
            ident(n)
            for n in [*(c.name for c in f.columns), KEY, DUPS, ROW_HASH, KEY_HASH_1, KEY_HASH_2, IS_NEW]
        )
        return f"""WITH src AS (
    SELECT *, {_key_text(f)} AS {key} FROM {f.relation}
),
{dups}
{hashed},
{candidates}
SELECT {out} FROM cand"""

    def _probe(self, f: FilterSpec) -> str:
        cols = ", ".join(_hashed(c) for c in f.columns)
        return f"count(*), coalesce(sum({_signed_zeros(f'{HASH}({cols})', f)}), 0)::VARCHAR"

    def probe_sql(self, f: FilterSpec) -> str:
        # The fingerprint covers the columns records are built from: a change elsewhere in the
        # model changes no record, and reading only these keeps a wide model's probe cheap.
        return f"SELECT {self._probe(f)} FROM {f.relation} AS __heap_row"

    def probe_duplicates_sql(self, f: FilterSpec) -> str:
        key = _key_text(f)
        return (
            f"SELECT {self._probe(f)}, count({key}) - count(DISTINCT {HASH}({key})) "
            f"FILTER (WHERE {key} IS NOT NULL) FROM {f.relation} AS __heap_row"
        )

    def duplicates_sql(self, f: FilterSpec) -> str:
        return (
            f"SELECT count(*) - count(DISTINCT {HASH}(k)) "
            f"FROM (SELECT {_key_text(f)} AS k FROM {f.relation}) WHERE k IS NOT NULL"
        )

    def duplicate_keys_sql(self, f: FilterSpec) -> str:
        # Distinct hashes above: a collision can only raise a false alarm (then this exact list runs).
        return (
            f"SELECT k AS dup_key, count(*) AS n FROM (SELECT {_key_text(f)} AS k FROM {f.relation}) "
            "WHERE k IS NOT NULL GROUP BY k HAVING count(*) > 1"
        )

    def keys_sql(self, f: FilterSpec) -> str:
        return (
            f"SELECT {_key_hashes('k', 'k1', 'k2')} FROM (SELECT {_key_text(f)} AS k FROM {f.relation}) "
            "WHERE k IS NOT NULL"
        )
