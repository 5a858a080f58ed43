"""heap-dbt's sync state in PostgreSQL, in schema ``heap_dbt`` of the warehouse by default.

The same tables as DuckDB's state (``heap_dbt.warehouse.duckdb.state``), in Postgres types:
keys and row hashes are ``bigint`` (``hashtextextended``). The store shares the reader's
connection, so what it changes inside the reader's snapshot is what the diff then sees,
and writes acknowledgements on a second connection of its own, each committed at once:
they arrive while the reader's connection streams, and must outlive a killed run. A
session-level advisory lock keeps a second writing sync off the same state. The webhook
delivery log (``heap_dbt.warehouse.deliveries``) is written on the reader's connection.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from heap_dbt.errors import StateError
from heap_dbt.sql import ident
from heap_dbt.warehouse.postgres.errors import first_line
from heap_dbt.warehouse.sql_state import SQLState

if TYPE_CHECKING:
    import pyarrow as pa
    from adbc_driver_manager import dbapi

_TYPES = {
    "int32": "integer", "int": "bigint", "hash": "bigint", "text": "text", "bool": "boolean",
    "time": "timestamp",
}  # fmt: skip


class PostgresState(SQLState):
    """State tables in one schema of the warehouse (a StateStore, ``heap_dbt.state``).

    ``con`` is the reader's connection; ``connect`` opens the second connection that writes
    acknowledgements, on first use.
    """

    TYPES = _TYPES

    def __init__(
        self,
        con: dbapi.Connection,
        *,
        database: str,
        schema: str,
        writable: bool,
        connect: Callable[[], dbapi.Connection],
    ) -> None:
        self._con = con
        self._connect = connect
        self._acks: dbapi.Connection | None = None
        self.database = database
        self.schema = schema
        super().__init__(prefix=ident(schema), where=f"{database}.{schema}", writable=writable)

    def _run(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        import adbc_driver_manager

        cur = self._con.cursor()
        try:
            cur.execute(sql, tuple(params) or None)
            return list(cur.fetchall()) if cur.description else []
        except adbc_driver_manager.Error as exc:
            raise StateError(f"The heap-dbt state in {self.where} failed: {first_line(exc)}") from exc
        finally:
            cur.close()

    def open(self) -> None:
        """Lock the state (when writable), then check or create it (``SQLState.open``)."""
        if self.writable:
            lock = f"heap-dbt state {self.where}"
            if not self._one("SELECT pg_try_advisory_lock(hashtextextended($1, 0))", (lock,)):
                raise StateError(
                    f"Cannot use the heap-dbt state in {self.where}: another process holds its lock "
                    "(another `heap-dbt sync`). Wait for it to finish, then run heap-dbt again."
                )
        super().open()

    def _tables(self) -> dict[str, set[str]]:
        rows = self._run(
            "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = $1",
            (self.schema,),
        )
        found: dict[str, set[str]] = {}
        for table, column in rows:
            found.setdefault(table, set()).add(column)
        return found

    def _newest(self, rows: str) -> str:
        return f"SELECT DISTINCT ON (k1, k2) k1, k2, hash {rows} ORDER BY k1, k2, run_id DESC"

    def acknowledge(self, sync_id: str, run_id: int, acks: pa.Table) -> None:
        """Record rows Heap acknowledged with a 2xx (columns k1, k2, hash), committed at once."""
        import adbc_driver_manager
        import pyarrow as pa

        n = acks.num_rows
        table = pa.table(
            {
                "sync_id": pa.array([sync_id] * n, pa.string()),
                "k1": acks.column("k1").cast(pa.int64()),
                "k2": acks.column("k2").cast(pa.int64()),
                "hash": acks.column("hash").cast(pa.int64()),
                "run_id": pa.array([run_id] * n, pa.int64()),
            }
        )
        with self._lock:
            try:
                if self._acks is None:
                    self._acks = self._connect()
                cur = self._acks.cursor()
                try:
                    cur.adbc_ingest("sync_state", table, mode="append", db_schema_name=self.schema)
                finally:
                    cur.close()
            except adbc_driver_manager.Error as exc:
                raise StateError(
                    f"Could not record acknowledged rows in the heap-dbt state in {self.where}: "
                    f"{first_line(exc)}"
                ) from exc

    def close(self) -> None:
        if self._acks is not None:
            self._acks.close()
            self._acks = None
