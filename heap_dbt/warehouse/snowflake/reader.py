"""Read dbt models from Snowflake: the warehouse filters (``dialect``), DuckDB formats.

One connector session runs the probes and the candidates query and streams the rows to send
as Arrow; an in-process DuckDB (``ArrowFormatter``) builds their records. The state store
(``state``) shares that session and writes acknowledgements on a second one.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

# The package's __init__, which runs before this module, has set SNOWFLAKE_DISABLE_PLATFORM_DETECTION:
# the connector is imported only inside the methods below.
from heap_dbt.errors import MissingRelationError, StateError, WarehouseError
from heap_dbt.sql import ident
from heap_dbt.warehouse import Column
from heap_dbt.warehouse.duckdb.formatter import ArrowFormatter
from heap_dbt.warehouse.duckdb.local_state import LocalState
from heap_dbt.warehouse.snowflake.connection import connect_args
from heap_dbt.warehouse.snowflake.dialect import SnowflakeDialect
from heap_dbt.warehouse.snowflake.state import ACK_CHUNK_ROWS, SnowflakeState
from heap_dbt.warehouse.snowflake.types import SnowflakeColumn, column

if TYPE_CHECKING:
    import pyarrow as pa

    from heap_dbt.profiles import Target
    from heap_dbt.sql import RecordQuery

MISSING_OBJECT = 2003
"""Snowflake's error number for "does not exist or not authorized"."""


def _message(exc: Any) -> str:
    """The connector's message, first line only (fakesnow appends DuckDB's candidate list)."""
    text = str(getattr(exc, "msg", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class SnowflakeSession:
    """A connector session: what the Snowflake reader and its state store run their SQL on."""

    def __init__(self, args: dict[str, Any], *, where: str) -> None:
        import snowflake.connector

        self.where = where
        try:
            self.con = snowflake.connector.connect(**args)
        except snowflake.connector.Error as exc:
            raise WarehouseError(f"Cannot connect to {where}: {_message(exc)}") from None
        # In-band telemetry goes to the same host; heap-dbt has no use for it.
        self.con.telemetry_enabled = False

    @classmethod
    def from_target(cls, target: Target) -> SnowflakeSession:
        return cls(connect_args(target), where=f"Snowflake target {target.name!r}")

    def execute(self, sql: str, params: list[Any] | None = None) -> Any:
        import snowflake.connector

        cur = self.con.cursor()
        try:
            cur.execute(sql, params)
        except snowflake.connector.Error as exc:
            cur.close()
            raise WarehouseError(f"The Snowflake query failed: {_message(exc)}") from None
        return cur

    def describe(self, relation: str) -> list[SnowflakeColumn]:
        """The columns of ``relation`` from the metadata of a query that reads no row."""
        import snowflake.connector
        from snowflake.connector.constants import FIELD_ID_TO_NAME

        cur = self.con.cursor()
        try:
            cur.execute(f"SELECT * FROM {relation} LIMIT 0")
        except snowflake.connector.ProgrammingError as exc:
            if exc.errno == MISSING_OBJECT:
                raise MissingRelationError(
                    f"{relation} does not exist in {self.where}.", relation=relation
                ) from None
            raise WarehouseError(f"Cannot read the columns of {relation}: {_message(exc)}") from None
        finally:
            cur.close()
        return [column(d.name, FIELD_ID_TO_NAME[d.type_code], d.precision, d.scale) for d in cur.description]

    def fetch_one(self, sql: str, params: list[Any] | None = None) -> tuple[Any, ...]:
        cur = self.execute(sql, params)
        try:
            row = cur.fetchone()
        finally:
            cur.close()
        return tuple(row) if row is not None else ()

    def arrow(self, sql: str, *, batch_rows: int) -> Generator[pa.RecordBatch, None, None]:
        """Run ``sql`` and yield its rows as Arrow batches of at most ``batch_rows``.

        Snowflake returns a result in chunks the connector downloads one at a time; fakesnow
        returns all of it in one. Nothing here holds more than one chunk.
        """
        import snowflake.connector

        cur = self.execute(sql)
        try:
            for table in cur.fetch_arrow_batches():
                yield from table.to_batches(max_chunksize=batch_rows)
        except snowflake.connector.Error as exc:
            raise WarehouseError(f"The Snowflake query failed: {_message(exc)}") from None
        finally:
            cur.close()

    def close(self) -> None:
        self.con.close()


class SnowflakeReader:
    """A WarehouseReader over one Snowflake database, with heap-dbt's state in a schema of it."""

    def __init__(
        self,
        args: dict[str, Any],
        *,
        where: str,
        state_path: Path | None = None,
        memory_limit: str | None = None,
    ) -> None:
        self._args = args
        self._where = where
        self.state_path = state_path
        self.dialect = SnowflakeDialect()
        self._session = SnowflakeSession(args, where=where)
        self._formatter = ArrowFormatter(memory_limit=memory_limit)
        self._state: SnowflakeState | LocalState | None = None

    @classmethod
    def from_target(
        cls,
        target: Target,
        *,
        writable: bool = False,
        state_path: Path | None = None,
        memory_limit: str | None = None,
    ) -> SnowflakeReader:
        where = f"Snowflake target {target.name!r}"
        return cls(connect_args(target), where=where, state_path=state_path, memory_limit=memory_limit)

    def columns(self, relation: str) -> list[Column]:
        found = self._session.describe(relation)
        names = [c.name for c in found]
        if len(set(names)) < len(names):
            # EMAIL and "email" side by side: keep Snowflake's own names rather than fold them.
            found = [dataclasses.replace(c, name=c.source) for c in found]
        for c in found:
            self.dialect.sources[(relation, c.name)] = c.source
        return [c.seam() for c in found]

    def fetch_one(self, sql: str) -> tuple[Any, ...]:
        return self._session.fetch_one(sql)

    def fit(self, width: int, *, pipeline: bool = False) -> None:
        """Nothing to size: Snowflake sizes its own work (the warehouse), and the formatter streams."""

    def grow(self) -> str | None:
        return None

    def register(self, name: str, sql: str) -> str:
        """A temporary table of this session: heap-dbt writes nothing else into the model's schema."""
        self._session.execute(f"CREATE OR REPLACE TEMPORARY TABLE {ident(name)} AS {sql}").close()
        return ident(name)

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[None]:
        """Snowflake's transactions read committed data per statement, not one snapshot: each
        query of a sync sees the model as of its own start. A `dbt run` that rebuilds the model
        during a sync can therefore make the probe and the stream see different builds; the
        rows sent are then the stream's, and the next sync's diff corrects the fingerprint."""
        yield

    def records(self, query: RecordQuery, *, batch_rows: int) -> Iterator[pa.RecordBatch]:
        import pyarrow as pa

        batches = self._session.arrow(query.candidates_sql, batch_rows=batch_rows)
        first = next(batches, None)
        if first is None:
            return  # no candidate: nothing to format
        # Snowflake may pick each chunk's integer width from its values: every chunk goes to
        # DuckDB as int64, so that one schema holds them all.
        schema = pa.schema(
            [f.with_type(pa.int64()) if pa.types.is_integer(f.type) else f for f in first.schema]
        )

        def same_schema() -> Iterator[pa.RecordBatch]:
            yield first if first.schema.equals(schema) else first.cast(schema)
            for batch in batches:
                yield batch if batch.schema.equals(schema) else batch.cast(schema)

        rows = pa.RecordBatchReader.from_batches(schema, same_schema())
        try:
            yield from self._formatter.format(rows, query.format_sql, batch_rows=batch_rows)
        finally:
            rows.close()
            batches.close()  # the cursor, if the stream stopped early

    # --- WarehouseKeys, for a local state file (``--state-path``) ------------------------------

    def upload_state(self, name: str, held: pa.Table) -> str:
        """A temporary table of this session, filled by multi-row INSERTs (as acknowledgements are)."""
        rows = list(
            zip(
                held.column("k1").to_pylist(),
                held.column("k2").to_pylist(),
                held.column("hash").to_pylist(),
                strict=True,
            )
        )
        try:
            self._session.execute(
                f"CREATE OR REPLACE TEMPORARY TABLE {ident(name)} "
                "(k1 NUMBER(19, 0), k2 NUMBER(19, 0), hash NUMBER(19, 0))"
            ).close()
            cur = self._session.con.cursor()
            try:
                for start in range(0, len(rows), ACK_CHUNK_ROWS):
                    cur.executemany(
                        f"INSERT INTO {ident(name)} (k1, k2, hash) VALUES (%s, %s, %s)",
                        rows[start : start + ACK_CHUNK_ROWS],
                    )
            finally:
                cur.close()
        except Exception as exc:  # the connector's errors, and WarehouseError
            raise StateError(
                f"Cannot copy the local heap-dbt state into a temporary table of the Snowflake "
                f"session: {_message(exc)}"
            ) from None
        return f"SELECT k1, k2, hash FROM {ident(name)}"

    def fetch_keys(self, sql: str) -> pa.Table:
        import pyarrow as pa
        import pyarrow.compute as pc

        try:
            batches = list(self._session.arrow(sql, batch_rows=1 << 20))
        except WarehouseError as exc:
            raise StateError(f"Cannot read the model's keys from Snowflake: {exc}") from None
        if not batches:
            return pa.table({"k1": pa.array([], pa.int64()), "k2": pa.array([], pa.int64())})
        # Snowflake upper-cases the names and picks each chunk's integer width from its values.
        return pa.Table.from_batches(
            [
                pa.RecordBatch.from_arrays(
                    [pc.cast(column, pa.int64()) for column in batch.columns],
                    names=[name.lower() for name in batch.schema.names],
                )
                for batch in batches
            ]
        )

    def state(self, *, schema: str, writable: bool) -> SnowflakeState | LocalState | None:
        """The state in schema ``schema`` of the warehouse, or with ``state_path`` in that local
        DuckDB file (None when a dry run finds no such file yet: every row is then new)."""
        if self._state is None and self.state_path is not None:
            if not writable and not self.state_path.exists():
                return None
            self._state = LocalState(self.state_path, self, schema=schema, writable=writable)
        if self._state is None:
            self._state = SnowflakeState(
                self._session,
                database=self._args.get("database"),
                schema=schema,
                writable=writable,
                connect=lambda: SnowflakeSession(self._args, where=self._where),
            )
            self._state.open()
        return self._state

    def close(self) -> None:
        if self._state is not None:
            with contextlib.suppress(StateError, WarehouseError):
                self._state.close()
        self._formatter.close()
        self._session.close()
