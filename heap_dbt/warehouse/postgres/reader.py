"""Read dbt models from PostgreSQL: the warehouse filters (``dialect``), DuckDB formats.

One ADBC connection (libpq, COPY underneath) runs the probes and the candidates query and
streams the rows to send as Arrow; an in-process DuckDB (``ArrowFormatter``) builds their
records. The state store (``state``) shares that connection.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from heap_dbt.errors import StateError, WarehouseError
from heap_dbt.sql import ident
from heap_dbt.warehouse import Column, ColumnType, Kind
from heap_dbt.warehouse.duckdb.formatter import ArrowFormatter
from heap_dbt.warehouse.duckdb.local_state import LocalState
from heap_dbt.warehouse.postgres.dialect import PostgresDialect
from heap_dbt.warehouse.postgres.errors import first_line, missing, query_error
from heap_dbt.warehouse.postgres.profile import PostgresProfile, parse_profile
from heap_dbt.warehouse.postgres.state import PostgresState

if TYPE_CHECKING:
    import pyarrow as pa
    from adbc_driver_manager import dbapi

    from heap_dbt.profiles import Target
    from heap_dbt.sql import RecordQuery

SESSION_SETTINGS = {
    "TimeZone": "UTC",
    "DateStyle": "ISO, MDY",
    "IntervalStyle": "postgres",
    "extra_float_digits": "1",
}
"""What a value's text (a key is cast to text in Postgres) depends on, set on every connection:
a user's PGTZ, PGDATESTYLE or PGOPTIONS, or a role's or database's defaults, would otherwise
change key text, and with it event idempotency keys and the state."""

BATCH_BYTES = 1 << 20
"""ADBC's Arrow batch size hint: smaller batches keep the peak memory of a stream low at no cost in speed."""

# ADBC turns Postgres' +-infinity into dates long before Postgres' earliest (4713 BC): read
# those back as infinite, so that the record SQL rejects them as it does DuckDB's.
_BEFORE_POSTGRES = {"DATE": "year({0}) < -4800", "TIMESTAMP": "epoch_us({0}) < -211000000000000000"}
_INFINITE = "CASE WHEN {before} THEN CAST('infinity' AS {t}) ELSE {{0}} END"

# typname -> (kind, the DuckDB type the record SQL sees, export, restore)
_SIMPLE: dict[str, tuple[Kind, str, str, str]] = {
    "int2": ("integer", "SMALLINT", "{}", "{}"),
    "int4": ("integer", "INTEGER", "{}", "{}"),
    "int8": ("integer", "BIGINT", "{}", "{}"),
    "float4": ("float", "FLOAT", "{}", "{}"),
    "float8": ("float", "DOUBLE", "{}", "{}"),
    "bool": ("boolean", "BOOLEAN", "{}", "{}"),
    "date": ("date", "DATE", "{}", _INFINITE.format(before=_BEFORE_POSTGRES["DATE"], t="DATE")),
    "timestamp": (
        "timestamp",
        "TIMESTAMP",
        "{}",
        _INFINITE.format(before=_BEFORE_POSTGRES["TIMESTAMP"], t="TIMESTAMP"),
    ),
    "timestamptz": (
        "timestamptz",
        "TIMESTAMP WITH TIME ZONE",
        "{}",
        _INFINITE.format(before=_BEFORE_POSTGRES["TIMESTAMP"], t="TIMESTAMPTZ"),
    ),
    "text": ("string", "VARCHAR", "{}", "{}"),
    "varchar": ("string", "VARCHAR", "{}", "{}"),
    # char(n) compares without its padding, and its text has none; uuid and citext as text.
    "bpchar": ("string", "VARCHAR", "CAST({} AS text)", "{}"),
    "citext": ("string", "VARCHAR", "CAST({} AS text)", "{}"),
    "uuid": ("string", "VARCHAR", "CAST({} AS text)", "{}"),
    "name": ("string", "VARCHAR", "CAST({} AS text)", "{}"),
    "json": ("json", "JSON", "{}", "{}"),
    "jsonb": ("json", "JSON", "{}", "{}"),
}
# Array elements that ship as they are; others go as text[] (their text is what a list joins).
_PLAIN_ELEMENTS = (
    "int2",
    "int4",
    "int8",
    "float4",
    "float8",
    "bool",
    "date",
    "timestamp",
    "timestamptz",
    "text",
    "varchar",
)


NAN = ("lower({}) = 'nan'", "is NaN or infinite")
"""numeric(p, s) holds NaN (not +-Infinity), which no DECIMAL does: rejected as a DOUBLE's NaN is.
ADBC's reader writes it ``nan``, Postgres' own text ``NaN``."""
NAN_ELEMENT = (
    "list_has_any({}, ['NaN', 'Infinity', '-Infinity'])",
    "holds NaN or infinite",
)
"""A numeric[] travels as text[]: NaN and +-Infinity elements are rejected as a DOUBLE[]'s are."""


def _numeric(typmod: int) -> tuple[ColumnType, str]:
    """numeric(p, s) as DuckDB's DECIMAL(p, s), a NaN as NULL (``NAN`` rejects it first);
    unconstrained (or wider than DuckDB's) as its text, whose checks see NaN and +-Infinity."""
    if typmod >= 4:
        precision, scale = ((typmod - 4) >> 16) & 0xFFFF, (typmod - 4) & 0xFFFF
        if 0 < precision <= 38 and 0 <= scale <= precision:
            sql = f"DECIMAL({precision},{scale})"
            restore = f"CASE WHEN lower({{0}}) = 'nan' THEN NULL ELSE CAST({{0}} AS {sql}) END"
            return ColumnType("decimal", sql), restore
    return ColumnType("decimal", "NUMERIC"), "{}"


def column_of(name: str, shown: str, typname: str, typmod: int, element: str | None) -> Column:
    """A Postgres column as the record SQL sees it once it arrived in DuckDB."""
    if typname in _SIMPLE:
        kind, sql, export, restore = _SIMPLE[typname]
        return Column(name, ColumnType(kind, sql), export, restore)
    if typname == "numeric":
        t, restore = _numeric(typmod)
        return Column(name, t, "{}", restore, NAN if t.sql != "NUMERIC" else None)
    if element is not None:
        if element in _PLAIN_ELEMENTS:
            kind, sql, _, _ = _SIMPLE[element]
            return Column(name, ColumnType("list", f"{sql}[]", (("element", ColumnType(kind, sql)),)))
        if element in _SIMPLE or element == "numeric":
            elem = ColumnType("string", "VARCHAR")
            listed = ColumnType("list", "VARCHAR[]", (("element", elem),))
            rejects = NAN_ELEMENT if element == "numeric" else None
            return Column(name, listed, "CAST({} AS text[])", "{}", rejects)
    return Column(name, ColumnType("unsupported", shown))


class PostgresReader:
    """A WarehouseReader over one PostgreSQL database, with heap-dbt's state in a schema of it."""

    dialect = PostgresDialect()

    def __init__(
        self,
        profile: PostgresProfile,
        *,
        writable: bool = False,
        state_path: Path | None = None,
        memory_limit: str | None = None,
    ) -> None:
        self.profile = profile
        self.writable = writable
        self.state_path = state_path
        self._con = self._connect()
        self._formatter = ArrowFormatter(memory_limit=memory_limit)
        self._state: PostgresState | LocalState | None = None

    def _connect(self) -> dbapi.Connection:
        import adbc_driver_manager
        import adbc_driver_postgresql.dbapi as pg

        try:
            con: dbapi.Connection = pg.connect(self.profile.conninfo, autocommit=True)
        except adbc_driver_manager.Error as exc:
            raise WarehouseError(
                f"Cannot connect to PostgreSQL database {self.profile.database!r}: {first_line(exc)}"
            ) from exc
        try:
            cur = con.cursor()
            try:
                for name, value in SESSION_SETTINGS.items():
                    cur.execute("SELECT set_config($1, $2, false)", (name, value))
                if self.profile.role is not None:
                    cur.execute("SELECT set_config('role', $1, false)", (self.profile.role,))
                if self.profile.search_path is not None:
                    cur.execute("SELECT set_config('search_path', $1, false)", (self.profile.search_path,))
            finally:
                cur.close()
        except adbc_driver_manager.Error as exc:
            con.close()
            raise WarehouseError(f"Cannot set up the PostgreSQL session: {first_line(exc)}") from exc
        return con

    @classmethod
    def from_target(
        cls,
        target: Target,
        *,
        writable: bool = False,
        state_path: Path | None = None,
        memory_limit: str | None = None,
    ) -> PostgresReader:
        return cls(
            parse_profile(target.name, target.credentials),
            writable=writable,
            state_path=state_path,
            memory_limit=memory_limit,
        )

    def _cursor_run(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        import adbc_driver_manager

        cur = self._con.cursor()
        try:
            cur.execute(sql, params or None)
            return list(cur.fetchall()) if cur.description else []
        except adbc_driver_manager.Error as exc:
            raise query_error(exc) from exc
        finally:
            cur.close()

    def columns(self, relation: str) -> list[Column]:
        try:
            found = self._cursor_run("SELECT to_regclass($1) IS NOT NULL", (relation,))
        except WarehouseError as exc:
            raise WarehouseError(f"Cannot read {relation}: {exc}") from exc
        if not found or not found[0][0]:
            raise missing(relation)
        rows = self._cursor_run(
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod), t.typname, a.atttypmod, e.typname "
            "FROM pg_attribute AS a JOIN pg_type AS t ON t.oid = a.atttypid "
            "LEFT JOIN pg_type AS e ON e.oid = t.typelem AND t.typcategory = 'A' "
            "WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
            (relation,),
        )
        return [column_of(r[0], r[1], r[2], int(r[3]), r[4]) for r in rows]

    def fetch_one(self, sql: str) -> tuple[Any, ...]:
        rows = self._cursor_run(sql)
        return tuple(rows[0])

    def fit(self, width: int, *, pipeline: bool = False) -> None:
        """Nothing to size: Postgres sizes its own work, and the formatter streams."""

    def grow(self) -> str | None:
        return None

    def register(self, name: str, sql: str) -> str:
        """A temporary table of this session: heap-dbt writes nothing else into the warehouse."""
        self._cursor_run(f"DROP TABLE IF EXISTS pg_temp.{ident(name)}")
        self._cursor_run(f"CREATE TEMPORARY TABLE {ident(name)} AS {sql}")
        return f"pg_temp.{ident(name)}"

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[None]:
        """Run the queries of one sync, and the state changes between them, in one transaction
        that sees one snapshot; the state store's own changes inside it are visible to it."""
        self._cursor_run("BEGIN ISOLATION LEVEL REPEATABLE READ")
        try:
            yield
        except BaseException:
            with contextlib.suppress(WarehouseError):
                self._cursor_run("ROLLBACK")
            raise
        self._cursor_run("COMMIT")

    def records(self, query: RecordQuery, *, batch_rows: int) -> Iterator[pa.RecordBatch]:
        import adbc_driver_manager
        import pyarrow as pa

        cur = self._con.cursor()
        try:
            cur.adbc_statement.set_options(**{"adbc.postgresql.batch_size_hint_bytes": str(BATCH_BYTES)})
            cur.execute(query.candidates_sql)
            rows = cur.fetch_record_batch()
            try:
                yield from self._formatter.format(rows, query.format_sql, batch_rows=batch_rows)
            finally:
                rows.close()
        except (adbc_driver_manager.Error, pa.ArrowException, OSError) as exc:
            raise query_error(exc) from exc
        finally:
            cur.close()

    # --- WarehouseKeys, for a local state file (``--state-path``) ------------------------------

    def upload_state(self, name: str, held: pa.Table) -> str:
        import adbc_driver_manager

        cur = self._con.cursor()
        try:
            cur.execute(f"DROP TABLE IF EXISTS pg_temp.{ident(name)}")
            cur.adbc_ingest(name, held, mode="create", temporary=True)
        except adbc_driver_manager.Error as exc:
            raise StateError(
                f"Cannot copy the local heap-dbt state into a temporary table of the PostgreSQL "
                f"session: {first_line(exc)}"
            ) from exc
        finally:
            cur.close()
        return f"SELECT k1, k2, hash FROM pg_temp.{ident(name)}"

    def fetch_keys(self, sql: str) -> pa.Table:
        import adbc_driver_manager

        cur = self._con.cursor()
        try:
            cur.execute(sql)
            keys: pa.Table = cur.fetch_arrow_table()
        except adbc_driver_manager.Error as exc:
            raise StateError(f"Cannot read the model's keys from PostgreSQL: {first_line(exc)}") from exc
        finally:
            cur.close()
        return keys

    def state(self, *, schema: str, writable: bool) -> PostgresState | LocalState | None:
        """The state in schema ``schema`` of the warehouse, or with ``state_path`` in that local
        DuckDB file (None when a dry run finds no such file yet: every row is then new)."""
        if self._state is None and self.state_path is not None:
            if not writable and not self.state_path.exists():
                return None
            self._state = LocalState(self.state_path, self, schema=schema, writable=writable)
        if self._state is None:
            self._state = PostgresState(
                self._con, database=self.profile.database, schema=schema, writable=writable,
                connect=self._connect,
            )  # fmt: skip
            self._state.open()
        return self._state

    def close(self) -> None:
        if self._state is not None:
            with contextlib.suppress(StateError):
                self._state.close()
        self._formatter.close()
        self._con.close()
