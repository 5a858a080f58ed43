"""The in-process DuckDB that builds Heap records from rows another warehouse streamed as Arrow.

"The warehouse filters, DuckDB formats": every warehouse gets the record SQL of
``heap_dbt.sql``, already tested on DuckDB, run here over its Arrow stream.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from typing import TYPE_CHECKING

from heap_dbt.warehouse import CANDIDATES
from heap_dbt.warehouse.duckdb.errors import query_error
from heap_dbt.warehouse.duckdb.session import canonical_session

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa

FORMAT_MEMORY = "256MB"
"""The record SQL runs row by row over a stream: a small, fixed limit is enough."""


class ArrowFormatter:
    """An in-memory DuckDB that runs a record query's ``format_sql`` over an Arrow stream."""

    def __init__(self, *, memory_limit: str | None = None, threads: int = 2) -> None:
        self._config: dict[str, str | int | float | list[str]] = {
            "memory_limit": memory_limit or FORMAT_MEMORY,
            "preserve_insertion_order": False,
            "threads": threads,
        }
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._con: duckdb.DuckDBPyConnection | None = None

    def _connection(self) -> duckdb.DuckDBPyConnection:
        """The DuckDB, started on first use: a sync that finds its model unchanged formats
        nothing, and importing and starting DuckDB is a tenth of a no-op sync's time."""
        if self._con is None:
            import duckdb

            self._tmp = tempfile.TemporaryDirectory(prefix="heap-dbt-format-")
            self._con = duckdb.connect(":memory:", config={**self._config, "temp_directory": self._tmp.name})
            canonical_session(self._con)
        return self._con

    def format(
        self, rows: pa.RecordBatchReader, format_sql: str, *, batch_rows: int
    ) -> Iterator[pa.RecordBatch]:
        """Yield the records ``format_sql`` builds from ``rows`` (read as CANDIDATES)."""
        import duckdb
        import pyarrow as pa

        con = self._connection()
        con.register(CANDIDATES, rows)
        try:
            reader = con.sql(format_sql).to_arrow_reader(batch_rows)
            try:
                yield from reader
            finally:
                reader.close()
        except (duckdb.Error, OSError, pa.ArrowException) as exc:
            raise query_error(exc) from exc
        finally:
            con.unregister(CANDIDATES)

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
