"""``--state-path``: the state in a local DuckDB file while the warehouse stays read-only.

For any warehouse but DuckDB (which keeps such a file itself). The diff still runs in the
warehouse: before a sync's candidates query, what Heap holds (k1, k2, hash) goes from the
local file into a temporary table of heap-dbt's own warehouse session, which nothing else
sees and which ends with it (``WarehouseKeys.upload_state``). Only to find keys that left
the model do the model's key hashes (16 bytes a row) come the other way. The file keeps
hashes as ``UBIGINT``; a warehouse's are the same 64 bits as signed integers (Postgres'
``bigint``; Snowflake's are non-negative 63-bit ones).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from heap_dbt.sql import lit
from heap_dbt.state import DeliveryRecord, RunRecord, SyncName
from heap_dbt.warehouse.duckdb.errors import open_error
from heap_dbt.warehouse.duckdb.state import DuckDBState

if TYPE_CHECKING:
    import pyarrow as pa

PREVIOUS = "heap_dbt_previous"
"""The session's temporary table of what Heap holds, for the diff."""
_ALIAS = "heap_dbt_state"


class WarehouseKeys(Protocol):
    """How key hashes travel between the local file and the warehouse session; raise StateError."""

    def upload_state(self, name: str, held: pa.Table) -> str:
        """Put ``held`` (k1, k2, hash as int64) into a temporary table ``name`` of the session
        the candidates query runs on, replacing one of that name; SQL that reads k1, k2, hash."""
        ...

    def fetch_keys(self, sql: str) -> pa.Table:
        """Run ``sql`` in the warehouse; its rows (k1, k2) as Arrow integers."""
        ...


def _bits(table: pa.Table, to: pa.DataType) -> pa.Table:
    """The same 64 bits as signed or unsigned integers (a decimal of them read as an integer first)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    def as_int(column: pa.ChunkedArray) -> pa.ChunkedArray:
        if pa.types.is_decimal(column.type):
            column = pc.cast(column, pa.int64())
        return pc.cast(column, to, safe=False)

    return pa.table({n: as_int(table.column(n)) for n in table.column_names})


class LocalState:
    """A StateStore in a local DuckDB file for a warehouse other than DuckDB (``heap_dbt.state``)."""

    def __init__(self, path: Path, warehouse: WarehouseKeys, *, schema: str, writable: bool) -> None:
        import duckdb

        self._warehouse = warehouse
        self._con = duckdb.connect(":memory:")
        try:
            created = writable and not path.exists()
            if writable:
                path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            mode = "" if writable else " (READ_ONLY)"
            self._con.execute(f"ATTACH {lit(str(path))} AS {_ALIAS}{mode}")
            if created:  # it will hold the hashed keys and the run log: the owner's only
                path.chmod(0o600)
        except (duckdb.Error, OSError) as exc:
            self._con.close()
            raise open_error(path, exc, state=True) from exc
        self._local = DuckDBState(self._con, catalog=_ALIAS, schema=schema, writable=writable)
        self._local.open()
        self.exists = self._local.exists

    def begin_run(
        self, *, sync_id: str, model: str, obj: str, meta_path: str, app_id: str, full_refresh: bool
    ) -> int:
        return self._local.begin_run(
            sync_id=sync_id,
            model=model,
            obj=obj,
            meta_path=meta_path,
            app_id=app_id,
            full_refresh=full_refresh,
        )

    def finish_run(self, run_id: int, *, counts: dict[str, int], outcome: str) -> None:
        self._local.finish_run(run_id, counts=counts, outcome=outcome)

    def history(self, *, limit: int) -> list[RunRecord]:
        return self._local.history(limit=limit)

    def interrupted(self, sync_id: str, *, before: int | None = None) -> bool:
        return self._local.interrupted(sync_id, before=before)

    def recover(self, sync_id: str, *, before: int) -> None:
        self._local.recover(sync_id, before=before)

    def latest_sql(self, sync_id: str, *, compact: bool) -> str:
        """Copy what Heap holds into the session's temporary table; SQL that reads it there."""
        import pyarrow as pa

        held = self._con.sql(self._local.latest_sql(sync_id, compact=compact)).to_arrow_table()
        return self._warehouse.upload_state(PREVIOUS, _bits(held, pa.int64()))

    def count_keys(self, sync_id: str, *, before: int | None = None) -> int:
        return self._local.count_keys(sync_id, before=before)

    def acknowledge(self, sync_id: str, run_id: int, acks: pa.Table) -> None:
        import pyarrow as pa

        self._local.acknowledge(sync_id, run_id, _bits(acks.select(["k1", "k2", "hash"]), pa.uint64()))

    def compact(self, sync_id: str, *, run_id: int) -> None:
        self._local.compact(sync_id, run_id=run_id)

    def remove_missing(
        self, sync_id: str, source_keys_sql: str, *, apply: bool, before_run: int | None = None
    ) -> int:
        """``source_keys_sql`` runs in the warehouse; its key hashes are compared in the local file."""
        import pyarrow as pa

        if not self._local.count_keys(sync_id, before=before_run):
            return 0
        keys = self._warehouse.fetch_keys(source_keys_sql)
        # A table of the in-memory database, which the store's own cursor sees (a view would not).
        model_keys = _bits(keys, pa.uint64())  # noqa: F841  (read by name below)
        self._con.execute(
            "CREATE OR REPLACE TABLE memory.main.heap_dbt_model_keys AS SELECT * FROM model_keys"
        )
        try:
            return self._local.remove_missing(
                sync_id,
                "SELECT k1, k2 FROM memory.main.heap_dbt_model_keys",
                apply=apply,
                before_run=before_run,
            )
        finally:
            self._con.execute("DROP TABLE IF EXISTS memory.main.heap_dbt_model_keys")

    def forget(self, sync_id: str) -> None:
        self._local.forget(sync_id)

    def fingerprint(self, sync_id: str) -> str | None:
        return self._local.fingerprint(sync_id)

    def set_fingerprint(self, sync_id: str, fingerprint: str | None, *, run_id: int) -> None:
        self._local.set_fingerprint(sync_id, fingerprint, run_id=run_id)

    def has_runs(self, sync_id: str) -> bool:
        return self._local.has_runs(sync_id)

    def sync_name(self, name_id: str) -> SyncName | None:
        return self._local.sync_name(name_id)

    def sync_names(self) -> list[SyncName]:
        return self._local.sync_names()

    def record_sync_name(self, record: SyncName) -> None:
        self._local.record_sync_name(record)

    def record_deliveries(self, records: Sequence[DeliveryRecord]) -> None:
        self._local.record_deliveries(records)

    def deliveries(self, *, limit: int) -> list[DeliveryRecord]:
        return self._local.deliveries(limit=limit)

    def seen_event_ids(self) -> set[str]:
        return self._local.seen_event_ids()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._con.close()
