"""heap-dbt's sync state in DuckDB: in the warehouse file itself or in a local state file.

Tables (schema ``heap_dbt`` by default):

- ``state_info``: one row, the state schema version. Any other version is refused.
- ``sync_state(sync_id, k1, k2, hash, run_id)``: what Heap acknowledged, per key. A key is
  stored as two 64-bit hashes (128 bits: a collision is not a practical risk), which makes
  writing a million acknowledgements several times cheaper than storing the strings.
- ``sync_fingerprint(sync_id, fingerprint, run_id)``: the model's fingerprint as of the
  last run that delivered every row.
- ``sync_runs``: the run log, one row per sync per run.
- ``webhook_deliveries``: what ``heap-dbt serve`` received (``heap_dbt.warehouse.deliveries``),
  created when first recorded.

What each holds, and when it is written, is described in ``heap_dbt.state``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from heap_dbt.errors import StateError
from heap_dbt.sql import ident
from heap_dbt.warehouse.duckdb.memory import size_bytes
from heap_dbt.warehouse.sql_state import SQLState

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa

MAINTENANCE_MEMORY = "160MB"  # for the self-join that dedupes the state after a crashed run

_TYPES = {
    "int32": "INTEGER", "int": "BIGINT", "hash": "UBIGINT", "text": "VARCHAR", "bool": "BOOLEAN",
    "time": "TIMESTAMP",
}  # fmt: skip


class DuckDBState(SQLState):
    """State tables in a DuckDB catalog that ``con`` can write to.

    ``con`` is used only through its own cursors, so the warehouse reader may stream on the
    original connection while acknowledgements are written here.
    """

    TYPES = _TYPES
    START_OVER = "or point --state-path at a new file"

    def __init__(self, con: duckdb.DuckDBPyConnection, *, catalog: str, schema: str, writable: bool) -> None:
        self._con = con.cursor()
        self.catalog = catalog
        self.schema = schema
        super().__init__(
            prefix=f"{ident(catalog)}.{ident(schema)}", where=f"{catalog}.{schema}", writable=writable
        )

    def _run(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """DuckDB's errors as they are: the upkeep says what failed (``_maintenance``)."""
        # fetchall: DuckDB 2 keeps a connection busy until a result is drained.
        cur = self._con.execute(sql, list(params))
        return cur.fetchall() if cur.description else []

    def _log_run(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        import duckdb

        try:
            return self._run(sql, params)
        except duckdb.Error as exc:
            raise StateError(f"The webhook delivery log in the heap-dbt state failed: {exc}") from exc

    @contextlib.contextmanager
    def _maintenance(self, what: str, *, more_memory: bool = False) -> Iterator[None]:
        """Turn DuckDB errors of state upkeep into StateError; optionally with more memory."""
        import duckdb

        previous = self._one("SELECT current_setting('memory_limit')") if more_memory else None
        if previous is not None and size_bytes(previous) < size_bytes(MAINTENANCE_MEMORY):
            self._con.execute(f"SET memory_limit = '{MAINTENANCE_MEMORY}'")
        else:
            previous = None  # the limit is already large enough: leave it
        try:
            yield
        except duckdb.Error as exc:
            raise StateError(
                f"Could not {what} in the heap-dbt state ({exc}); rows already acknowledged stay "
                "recorded. Raise --memory-limit if DuckDB ran out of memory."
            ) from exc
        finally:
            if previous is not None:
                # DuckDB refuses to lower the limit below what it holds at the moment; the
                # sync's streaming is over by then, so keeping the larger limit costs only cache.
                with contextlib.suppress(duckdb.Error):
                    self._con.execute(f"SET memory_limit = '{previous}'")

    def _delete(self, condition: str, params: Sequence[Any]) -> None:
        """Rewrite sync_state without the rows matching ``condition``.

        DuckDB's DELETE on a table of millions of rows fails to pin blocks under a small
        memory limit; a streaming rewrite with an anti-join against a small set does not.
        """
        table = self.table("sync_state")
        self._run(
            f"CREATE OR REPLACE TABLE {table} AS SELECT * FROM {table} AS s WHERE NOT ({condition})", params
        )

    def _tables(self) -> dict[str, set[str]]:
        import duckdb

        try:
            rows = self._run(
                "SELECT table_name, column_name FROM information_schema.columns "
                "WHERE table_catalog = $1 AND table_schema = $2",
                (self.catalog, self.schema),
            )
        except duckdb.Error as exc:
            raise StateError(f"Cannot read the heap-dbt state in {self.where}: {exc}") from exc
        found: dict[str, set[str]] = {}
        for table, column in rows:
            found.setdefault(table, set()).add(column)
        return found

    def _create(self) -> None:
        import duckdb

        try:
            super()._create()
        except duckdb.Error as exc:
            raise StateError(f"Cannot create the heap-dbt state in {self.where}: {exc}") from exc

    def _newest(self, rows: str) -> str:
        return f"SELECT k1, k2, arg_max(hash, run_id) AS hash {rows} GROUP BY k1, k2"

    def acknowledge(self, sync_id: str, run_id: int, acks: pa.Table) -> None:
        """Record rows Heap acknowledged with a 2xx (columns k1, k2, hash). Call only after the 2xx."""
        with self._lock:
            self._con.register("heap_dbt_acks", acks)
            try:
                self._con.execute(
                    f"INSERT INTO {self.table('sync_state')} SELECT ?, k1, k2, hash, ? FROM heap_dbt_acks",
                    [sync_id, run_id],
                )
            finally:
                self._con.unregister("heap_dbt_acks")

    def close(self) -> None:
        self._con.close()
