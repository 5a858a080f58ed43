"""The warehouse-side statements in DuckDB's SQL: row hashes, the diff, duplicate keys, the fingerprint."""

from __future__ import annotations

from heap_dbt.sql import ident, lit
from heap_dbt.warehouse import DUPS, IS_NEW, KEY, KEY_HASH_1, KEY_HASH_2, ROW_HASH, FilterSpec

# DuckDB's hash() is 15x cheaper than md5 here. Should a DuckDB upgrade ever change it,
# every row looks changed once and is resent once; nothing is lost.
HASH = "hash"


def _key_text(f: FilterSpec) -> str:
    return ident(f.key.name) if f.key.type.sql == "VARCHAR" else f"CAST({ident(f.key.name)} AS VARCHAR)"


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
        row_hash = f"{HASH}({lit(f.seed)}, " + ", ".join(f"k.{ident(c.name)}" for c in f.columns) + ")"
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
        cols = ", ".join(ident(c.name) for c in f.columns)
        return f"count(*), coalesce(sum({HASH}({cols})), 0)::VARCHAR"

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
