"""The warehouse seam: small protocols, one package per engine.

"The warehouse filters, DuckDB formats." Each engine package (``heap_dbt.warehouse.duckdb``,
``heap_dbt.warehouse.postgres``) turns a dbt target into a ``WarehouseReader`` that
describes relations, runs its ``Dialect``'s statements (row hashes, the diff against the
state, duplicate keys, the fingerprint) in the warehouse, and streams the raw columns of the
rows to send as Arrow; an in-process DuckDB then builds the Heap records from them with the
one record SQL in ``heap_dbt.sql``. Each engine also opens its ``StateStore``
(``heap_dbt.state``). docs/adding-a-warehouse.md describes how to add an engine.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from heap_dbt.errors import ConfigError

if TYPE_CHECKING:
    import pyarrow as pa

    from heap_dbt.profiles import Target
    from heap_dbt.sql import RecordQuery
    from heap_dbt.state import StateStore

Kind = Literal[
    "string", "integer", "float", "decimal", "boolean", "date", "timestamp",
    "timestamptz", "list", "struct", "map", "json", "other", "unsupported",
]  # fmt: skip
"""How a value converts (``heap_dbt.sql``). ``json``: JSON text, whose objects flatten to dotted
names; ``unsupported``: a type heap-dbt cannot convert, a configuration error if a sync uses it."""

# The columns of the candidates query (``Dialect.candidates_sql``), besides the model's own.
KEY = "__key"
"""The sync key as text."""
DUPS = "__heap_dups"
"""How many rows share the key when more than one does, else NULL."""
ROW_HASH = "__heap_hash"
KEY_HASH_1, KEY_HASH_2 = "__heap_k1", "__heap_k2"
"""The key as two independent 64-bit hashes, the form the sync state stores."""
IS_NEW = "__heap_new"
"""True where the state holds no row for the key."""
STREAM_COLUMN = "__heap_col_"
"""Prefix of a column's name in the stream when its own would be ambiguous there (``stream_names``)."""
CANDIDATES = "heap_dbt_candidates"
"""The name under which the record SQL reads the candidates (a CTE, or a registered Arrow stream)."""


@dataclass(frozen=True)
class ColumnType:
    """A warehouse type reduced to what value conversion needs."""

    kind: Kind
    sql: str = ""
    children: tuple[tuple[str, ColumnType], ...] = field(default_factory=tuple)
    """Struct fields (name, type); a list's element as ("element", type); a map's key and value."""


@dataclass(frozen=True)
class Column:
    """A column of a model.

    ``type`` describes the value as DuckDB sees it when the record SQL runs. ``export`` is the
    warehouse-side expression that ships the column (``{}`` stands for the quoted column,
    e.g. ``CAST({} AS text)``), and ``restore`` the DuckDB expression that turns what arrived
    back into ``type`` (e.g. ``CAST({} AS DECIMAL(12,2))``); ``{0}`` uses the column twice.
    The DuckDB engine needs neither.

    ``rejects`` is for a value that can arrive but that ``type`` cannot hold, and that Heap's
    rules reject (a NaN in Postgres' numeric(p, s)): a DuckDB condition over the column as it
    arrived (``{}``, before ``restore``, which must then not fail on it), and what the
    rejection says of the property ("is NaN or infinite").
    """

    name: str
    type: ColumnType
    export: str = "{}"
    restore: str = "{}"
    rejects: tuple[str, str] | None = None


@dataclass(frozen=True)
class FilterSpec:
    """What the warehouse-side statements of one sync read: the model, its key, the columns
    the records are built from (the key's among them), and the seed of every row hash."""

    relation: str
    """The model's relation, as the manifest's ``relation_name`` quotes it."""
    key: Column
    columns: tuple[Column, ...]
    seed: str
    """A hash of how records are built: a change to it changes every row hash."""
    compare_hashes: bool
    """Users and accounts: a changed row hash resends the row. Events: keys only (Heap keeps
    the first event with an Insert ID)."""


class Dialect(Protocol):
    """The statements one warehouse runs, written out for it (never transpiled).

    Every hash is a 64-bit integer that is stable across sessions and releases of the engine
    (a change only resends every row once). Text from meta never reaches here unquoted:
    names go through ``heap_dbt.sql.ident`` and ``lit``.
    """

    streamed_fingerprint: bool
    """Whether probe_sql's second value is the sum of ROW_HASH over every row, as an integer's
    text: then a sync that streams every row (a first sync) adds it up from the stream and runs
    only duplicates_sql before it, instead of scanning the model for the probe first."""

    def candidates_sql(
        self, f: FilterSpec, *, previous: str | None, duplicates: bool, duplicates_table: str | None
    ) -> str:
        """The rows to send: every column of ``f.columns`` (as ``Column.export``, under its
        ``stream_names`` name), then KEY, DUPS, ROW_HASH, KEY_HASH_1, KEY_HASH_2 and IS_NEW.

        ``previous`` (SQL from ``StateStore.latest_sql``, yielding k1, k2, hash) limits them to
        rows that are new, changed (``f.compare_hashes``) or share a key; without it every row
        is a candidate and new. ``duplicates``: fill DUPS, from ``duplicates_table`` (dup_key,
        n) when given, else with a join of its own; without it DUPS is NULL.
        """
        ...

    def probe_sql(self, f: FilterSpec) -> str:
        """One row: the row count and a sum (as text) of the row hashes, for the fingerprint."""
        ...

    def probe_duplicates_sql(self, f: FilterSpec) -> str:
        """One row: probe_sql's two values, then how many non-NULL keys repeat one seen before."""
        ...

    def duplicates_sql(self, f: FilterSpec) -> str:
        """One row: how many non-NULL keys repeat one seen before."""
        ...

    def duplicate_keys_sql(self, f: FilterSpec) -> str:
        """The repeated keys as text (``dup_key``) and how often each appears (``n``)."""
        ...

    def keys_sql(self, f: FilterSpec) -> str:
        """The model's non-NULL keys as (k1, k2), the hashes candidates_sql gives them."""
        ...


class WarehouseReader(Protocol):
    """What the engine needs from a warehouse; errors are WarehouseErrors (``heap_dbt.errors``)."""

    @property
    def dialect(self) -> Dialect:
        """The warehouse-side statements of this engine."""
        ...

    def columns(self, relation: str) -> list[Column]:
        """The columns of ``relation``; raises MissingRelationError if it does not exist."""
        ...

    def records(self, query: RecordQuery, *, batch_rows: int) -> Iterator[pa.RecordBatch]:
        """Run ``query.candidates_sql`` in the warehouse and ``query.format_sql`` over its rows
        (as CANDIDATES) in DuckDB; yield the records in batches of at most ``batch_rows``."""
        ...

    def fetch_one(self, sql: str) -> tuple[Any, ...]:
        """The first row of ``sql``."""
        ...

    def fit(self, width: int, *, pipeline: bool = False) -> None:
        """Size the working memory and parallelism for the queries of one sync, which read
        ``width`` columns (struct fields counted one by one); ``pipeline`` when the next
        query has no join or aggregate."""
        ...

    def grow(self) -> str | None:
        """After Out of Memory: more memory for the next queries; the new limit, or None."""
        ...

    def register(self, name: str, sql: str) -> str:
        """Keep the (small) result of ``sql`` as a table the next queries of this snapshot can
        join; its name."""
        ...

    def snapshot(self) -> AbstractContextManager[None]:
        """Run the queries inside the block on one consistent snapshot."""
        ...

    def state(self, *, schema: str, writable: bool) -> StateStore | None:
        """Where heap-dbt keeps its sync state for this warehouse."""
        ...

    def close(self) -> None: ...


class ReaderFactory(Protocol):
    """``open_reader``'s signature, for callers that open readers their own way (tests, embedding)."""

    def __call__(
        self,
        target: Target,
        *,
        project_dir: Path,
        writable: bool = False,
        state_path: Path | None = None,
        memory_limit: str | None = None,
    ) -> WarehouseReader: ...


def stream_names(columns: Sequence[Column]) -> dict[str, str]:
    """Each column's name in the Arrow stream that the in-process DuckDB reads: its own, unless
    another column's name differs from it only in case (Postgres' ``plan`` and ``"Plan"``,
    Snowflake's ``PLAN`` and ``"Plan"``). DuckDB matches names regardless of case, so it would
    read one of the two for both: such columns travel as ``__heap_col_<position>``."""
    folded = Counter(c.name.lower() for c in columns)
    ambiguous = {name for name, n in folded.items() if n > 1}
    return {
        c.name: f"{STREAM_COLUMN}{i}" if c.name.lower() in ambiguous else c.name
        for i, c in enumerate(columns)
    }


def hash_sum(hashes: pa.Array | pa.ChunkedArray) -> int:
    """The exact sum of 64-bit row hashes (NULLs left out, as SQL's sum does), for a
    ``Dialect.streamed_fingerprint``: each hash is split into its signed high and unsigned low
    32 bits, whose sums cannot overflow an int64 over fewer than 2^31 rows."""
    import pyarrow.compute as pc

    high = pc.sum(pc.shift_right(hashes, 32)).as_py() or 0
    low = pc.sum(pc.bit_wise_and(hashes, 0xFFFFFFFF)).as_py() or 0
    return int(high) * (1 << 32) + int(low)


DRIVERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "postgres": ("postgres", ("adbc_driver_manager", "adbc_driver_postgresql.dbapi")),
    "snowflake": ("snowflake", ("snowflake.connector",)),
}
"""Per warehouse type: heap-dbt's extra that installs its driver, and the driver's modules."""


def _require_driver(target: Target) -> None:
    """Import the driver of ``target``'s warehouse, or say which extra installs it."""
    import importlib

    extra, modules = DRIVERS.get(target.type, ("", ()))
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ConfigError(
                f"Target {target.name!r} is a {target.type} warehouse, and its driver is not installed "
                f"({exc.name or module} cannot be imported). Install it beside heap-dbt with: "
                f'pip install "heap-dbt[{extra}]"'
            ) from exc


def open_reader(
    target: Target,
    *,
    project_dir: Path,
    writable: bool = False,
    state_path: Path | None = None,
    memory_limit: str | None = None,
) -> WarehouseReader:
    """Open a reader for the dbt ``target``.

    ``writable`` lets heap-dbt write its state: into the warehouse itself, or, with
    ``state_path``, into that local DuckDB file while the warehouse stays read-only.
    """
    _require_driver(target)
    if target.type == "duckdb":
        from heap_dbt.warehouse.duckdb import DuckDBReader

        return DuckDBReader.from_target(
            target,
            project_dir=project_dir,
            writable=writable,
            state_path=state_path,
            memory_limit=memory_limit,
        )
    if target.type == "postgres":
        from heap_dbt.warehouse.postgres import PostgresReader

        return PostgresReader.from_target(
            target, writable=writable, state_path=state_path, memory_limit=memory_limit
        )
    if target.type == "snowflake":
        from heap_dbt.warehouse.snowflake.reader import SnowflakeReader

        return SnowflakeReader.from_target(
            target, writable=writable, state_path=state_path, memory_limit=memory_limit
        )
    raise ConfigError(
        f"Target {target.name!r} is a {target.type} warehouse; heap-dbt reads duckdb, postgres and "
        "snowflake targets so far."
    )
