"""The warehouse-side statements in PostgreSQL's SQL: row hashes, the diff, duplicate keys, the fingerprint.

Written out for Postgres and checked on a real server (``tests/integration``), not
transpiled from DuckDB's: DuckDB's ``hash()`` does not exist here, and ``ANTI JOIN`` would
parse as a table alias. A hash is ``hashtextextended`` (64 bits, the function behind hash
partitioning, so it is stable across releases) of the value's text; a row hash hashes the
text of ``ROW(seed, columns...)``, in which NULL and the empty string differ.
"""

from __future__ import annotations

from heap_dbt.sql import ident, lit
from heap_dbt.warehouse import DUPS, IS_NEW, KEY, KEY_HASH_1, KEY_HASH_2, ROW_HASH, Column, FilterSpec


def key_text(column: Column) -> str:
    """The key as text, the same digits DuckDB would print for an integer key."""
    return f"CAST({ident(column.name)} AS text)"


def _hash(text: str, seed: int = 0) -> str:
    return f"hashtextextended({text}, {seed})"


def _row_hash(prefix: str, columns: tuple[Column, ...], seed: str | None = None) -> str:
    values = ([lit(seed)] if seed is not None else []) + [f"{prefix}{ident(c.name)}" for c in columns]
    return _hash(f"CAST(ROW({', '.join(values)}) AS text)")


def _key_hashes(expr: str, k1: str, k2: str) -> str:
    return f"{_hash(expr, 0)} AS {k1}, {_hash(expr, 1)} AS {k2}"


class PostgresDialect:
    """The Dialect of a PostgreSQL warehouse (``heap_dbt.warehouse.Dialect``)."""

    def candidates_sql(
        self, f: FilterSpec, *, previous: str | None, duplicates: bool, duplicates_table: str | None
    ) -> str:
        key = ident(KEY)
        used = ", ".join(f"src.{ident(c.name)}" for c in f.columns)
        # NOT MATERIALIZED: a CTE read twice (by the duplicate join) would otherwise be copied.
        src = f"src AS NOT MATERIALIZED (SELECT *, {key_text(f.key)} AS {key} FROM {f.relation})"
        if duplicates_table is not None:
            k = (
                f"k AS (SELECT {used}, src.{key}, d.n AS {ident(DUPS)} FROM src "
                f"LEFT JOIN {duplicates_table} AS d ON src.{key} = d.dup_key)"
            )
        elif duplicates:
            k = (
                f"dups AS (SELECT {key} AS dup_key, count(*) AS n FROM src WHERE {key} IS NOT NULL "
                "GROUP BY 1 HAVING count(*) > 1),\n"
                f"k AS (SELECT {used}, src.{key}, dups.n AS {ident(DUPS)} FROM src "
                f"LEFT JOIN dups ON src.{key} = dups.dup_key)"
            )
        else:
            k = f"k AS (SELECT {used}, src.{key}, CAST(NULL AS bigint) AS {ident(DUPS)} FROM src)"
        hashed = (
            f"h AS (SELECT k.*, {_row_hash('k.', f.columns, f.seed)} AS {ident(ROW_HASH)}, "
            f"{_key_hashes('k.' + key, ident(KEY_HASH_1), ident(KEY_HASH_2))} FROM k)"
        )
        if previous is None:
            cand = f"cand AS (SELECT h.*, true AS {ident(IS_NEW)} FROM h)"
        else:
            changed = f" OR prev.hash IS DISTINCT FROM h.{ident(ROW_HASH)}" if f.compare_hashes else ""
            cand = (
                f"prev AS ({previous}),\n"
                f"cand AS (SELECT h.*, prev.k1 IS NULL AS {ident(IS_NEW)} FROM h LEFT JOIN prev "
                f"ON prev.k1 = h.{ident(KEY_HASH_1)} AND prev.k2 = h.{ident(KEY_HASH_2)} "
                f"WHERE prev.k1 IS NULL OR h.{ident(DUPS)} IS NOT NULL{changed})"
            )
        exported = [f"{c.export.format(ident(c.name))} AS {ident(c.name)}" for c in f.columns]
        meta = [ident(n) for n in (KEY, DUPS, ROW_HASH, KEY_HASH_1, KEY_HASH_2, IS_NEW)]
        return f"WITH {src},\n{k},\n{hashed},\n{cand}\nSELECT {', '.join(exported + meta)} FROM cand"

    def _probe(self, f: FilterSpec) -> str:
        return f"count(*), CAST(coalesce(sum({_row_hash('', f.columns)}), 0) AS text)"

    def probe_sql(self, f: FilterSpec) -> str:
        return f"SELECT {self._probe(f)} FROM {f.relation} AS __heap_row"

    def probe_duplicates_sql(self, f: FilterSpec) -> str:
        key = key_text(f.key)
        return (
            f"SELECT {self._probe(f)}, count({key}) - count(DISTINCT {_hash(key)}) "
            f"FILTER (WHERE {key} IS NOT NULL) FROM {f.relation} AS __heap_row"
        )

    def duplicates_sql(self, f: FilterSpec) -> str:
        return (
            f"SELECT count(*) - count(DISTINCT {_hash('s.k')}) "
            f"FROM (SELECT {key_text(f.key)} AS k FROM {f.relation}) AS s WHERE s.k IS NOT NULL"
        )

    def duplicate_keys_sql(self, f: FilterSpec) -> str:
        return (
            f"SELECT s.k AS dup_key, count(*) AS n FROM (SELECT {key_text(f.key)} AS k FROM {f.relation}) "
            "AS s WHERE s.k IS NOT NULL GROUP BY s.k HAVING count(*) > 1"
        )

    def keys_sql(self, f: FilterSpec) -> str:
        return (
            f"SELECT {_key_hashes('s.k', 'k1', 'k2')} FROM (SELECT {key_text(f.key)} AS k "
            f"FROM {f.relation}) AS s WHERE s.k IS NOT NULL"
        )
