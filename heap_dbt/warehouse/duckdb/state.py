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
import datetime as dt
import threading
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from heap_dbt.errors import StateError
from heap_dbt.sql import ident
from heap_dbt.state import RUN_LOG_COLUMNS, STATE_VERSION, UNCOMPACTED, DeliveryRecord, RunRecord
from heap_dbt.warehouse.deliveries import DELIVERIES_TABLE, DeliveryLog
from heap_dbt.warehouse.duckdb.memory import size_bytes

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa

MAINTENANCE_MEMORY = "160MB"  # for the self-join that dedupes the state after a crashed run

_COLUMNS = {
    "state_info": {"version": "INTEGER", "created_at": "TIMESTAMP"},
    "sync_state": {
        "sync_id": "VARCHAR", "k1": "UBIGINT", "k2": "UBIGINT", "hash": "UBIGINT", "run_id": "BIGINT",
    },
    "sync_fingerprint": {"sync_id": "VARCHAR", "fingerprint": "VARCHAR", "run_id": "BIGINT"},
    "sync_runs": {
        "run_id": "BIGINT", "sync_id": "VARCHAR", "model": "VARCHAR", "object": "VARCHAR",
        "meta_path": "VARCHAR", "app_id": "VARCHAR", "full_refresh": "BOOLEAN",
        "started_at": "TIMESTAMP", "finished_at": "TIMESTAMP", "read": "BIGINT",
        "sent": "BIGINT", "unchanged": "BIGINT", "rejected": "BIGINT", "failed": "BIGINT",
        "removed": "BIGINT", "outcome": "VARCHAR",
    },
}  # fmt: skip
_DELIVERIES = {
    "event_id": "VARCHAR", "received_at": "TIMESTAMP", "job_id": "VARCHAR", "run_id": "VARCHAR",
    "decision": "VARCHAR", "outcome": "VARCHAR", "seq": "BIGINT",
}  # fmt: skip


class DuckDBState:
    """State tables in a DuckDB catalog that ``con`` can write to.

    ``con`` is used only through its own cursors, so the warehouse reader may stream on the
    original connection while acknowledgements are written here.
    """

    def __init__(self, con: duckdb.DuckDBPyConnection, *, catalog: str, schema: str, writable: bool) -> None:
        self._con = con.cursor()
        self._lock = threading.Lock()
        self.catalog = catalog
        self.schema = schema
        self.writable = writable
        self._prefix = f"{ident(catalog)}.{ident(schema)}"
        self.exists = False
        self._log = DeliveryLog(
            self._execute, table=self.table(DELIVERIES_TABLE), types=_DELIVERIES, mark=lambda i: f"${i}",
            where=f"{catalog}.{schema}", writable=writable,
        )  # fmt: skip

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

    def _keep_only(self, condition: str, params: list[Any]) -> None:
        """Rewrite sync_state without the rows matching ``condition``.

        DuckDB's DELETE on a table of millions of rows fails to pin blocks under a small
        memory limit; a streaming rewrite with an anti-join against a small set does not.
        """
        table = self.table("sync_state")
        self._con.execute(
            f"CREATE OR REPLACE TABLE {table} AS SELECT * FROM {table} AS s WHERE NOT ({condition})", params
        )

    def _execute(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        """Run one statement of the delivery log; DuckDB's errors as StateError."""
        import duckdb

        try:
            cur = self._con.execute(sql, list(params))
            return cur.fetchall() if cur.description else []
        except duckdb.Error as exc:
            raise StateError(f"The webhook delivery log in the heap-dbt state failed: {exc}") from exc

    def _one(self, sql: str, params: list[Any] | None = None) -> Any:
        # fetchall, not fetchone: DuckDB 2 keeps a connection busy until a result is drained.
        rows = self._con.execute(sql, params or []).fetchall()
        return rows[0][0] if rows else None

    def table(self, name: str) -> str:
        return f"{self._prefix}.{ident(name)}"

    def open(self) -> None:
        """Check (and, when writable, create) the state schema; refuse a foreign version."""
        import duckdb

        try:
            rows = self._con.execute(
                "SELECT table_name, column_name, data_type FROM information_schema.columns "
                "WHERE table_catalog = ? AND table_schema = ?",
                [self.catalog, self.schema],
            ).fetchall()
        except duckdb.Error as exc:
            raise StateError(
                f"Cannot read the heap-dbt state in {self.catalog}.{self.schema}: {exc}"
            ) from exc
        found: dict[str, dict[str, str]] = {}
        for table, column, dtype in rows:
            found.setdefault(table, {})[column] = dtype
        where = f"{self.catalog}.{self.schema}"
        if found:
            self._check(found, where)
            self.exists = True
            self._log.exists = DELIVERIES_TABLE in found
            return
        if not self.writable:
            return  # a dry run against a fresh state: every row is new
        # One transaction: a run killed part-way through leaves no schema without its version
        # row, which every later run would refuse as corrupt.
        try:
            self._con.execute("BEGIN TRANSACTION")
            try:
                self._con.execute(f"CREATE SCHEMA IF NOT EXISTS {self._prefix}")
                for table, columns in _COLUMNS.items():
                    cols = ", ".join(f"{ident(c)} {t}" for c, t in columns.items())
                    self._con.execute(f"CREATE TABLE IF NOT EXISTS {self.table(table)} ({cols})")
                self._con.execute(
                    f"INSERT INTO {self.table('state_info')} VALUES (?, ?)",
                    [STATE_VERSION, dt.datetime.now(dt.UTC).replace(tzinfo=None)],
                )
            except BaseException:
                self._con.execute("ROLLBACK")
                raise
            self._con.execute("COMMIT")
        except duckdb.Error as exc:
            raise StateError(f"Cannot create the heap-dbt state in {where}: {exc}") from exc
        self.exists = True

    def _check(self, found: dict[str, dict[str, str]], where: str) -> None:
        hint = (
            f"Drop the schema {where} (or point --state-path at a new file) to start over; the "
            "next sync then sends every row once."
        )
        info = found.get("state_info")
        if info is None:
            raise StateError(
                f"The heap-dbt state in {where} has no state_info table: it is not heap-dbt "
                f"state, or it is corrupt. {hint}"
            )
        try:
            versions = self._con.execute(f"SELECT version FROM {self.table('state_info')}").fetchall()
        except Exception as exc:  # any failure here means an unreadable state
            raise StateError(f"The heap-dbt state in {where} is unreadable ({exc}). {hint}") from exc
        if len(versions) != 1 or versions[0][0] is None:
            raise StateError(
                f"The heap-dbt state in {where} is corrupt (state_info has {len(versions)} rows). {hint}"
            )
        version = versions[0][0]
        if version != STATE_VERSION:
            raise StateError(
                f"The heap-dbt state in {where} has version {version}; this heap-dbt reads version "
                f"{STATE_VERSION}. Use the heap-dbt release that wrote it, or start over. {hint}"
            )
        optional = {DELIVERIES_TABLE: _DELIVERIES} if DELIVERIES_TABLE in found else {}
        for table, columns in (_COLUMNS | optional).items():
            have = found.get(table, {})
            missing = [c for c in columns if c not in have]
            if missing:
                raise StateError(
                    f"The heap-dbt state in {where} is corrupt: table {table} lacks "
                    f"{', '.join(missing)}. {hint}"
                )

    # --- the run log -------------------------------------------------------------------------

    def begin_run(
        self, *, sync_id: str, model: str, obj: str, meta_path: str, app_id: str, full_refresh: bool
    ) -> int:
        with self._lock:
            run_id = self._one(f"SELECT coalesce(max(run_id), 0) + 1 FROM {self.table('sync_runs')}")
            self._con.execute(
                f"INSERT INTO {self.table('sync_runs')} (run_id, sync_id, model, object, meta_path, "
                "app_id, full_refresh, started_at, outcome) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'running')",
                [run_id, sync_id, model, obj, meta_path, app_id, full_refresh, _now()],
            )
            return int(run_id)

    def finish_run(self, run_id: int, *, counts: dict[str, int], outcome: str) -> None:
        with self._lock:
            self._con.execute(
                f"UPDATE {self.table('sync_runs')} SET finished_at = ?, read = ?, sent = ?, unchanged = ?, "
                "rejected = ?, failed = ?, removed = ?, outcome = ? WHERE run_id = ?",
                [
                    _now(), counts["read"], counts["sent"], counts["unchanged"], counts["rejected"],
                    counts["failed"], counts["removed"], outcome, run_id,
                ],
            )  # fmt: skip

    def history(self, *, limit: int) -> list[RunRecord]:
        if not self.exists:
            return []
        rows = self._con.execute(
            f"SELECT {RUN_LOG_COLUMNS} FROM {self.table('sync_runs')} ORDER BY run_id DESC LIMIT ?",
            [limit],
        ).fetchall()
        return [RunRecord.from_row(r) for r in rows]

    def interrupted(self, sync_id: str, *, before: int | None = None) -> bool:
        """True if an earlier run of ``sync_id`` never finished (killed, crashed) or could not
        compact what it acknowledged; its keys may then have two rows."""
        return bool(
            self._one(
                f"SELECT count(*) FROM {self.table('sync_runs')} WHERE sync_id = ? AND run_id < ? "
                f"AND outcome IN ('running', '{UNCOMPACTED}')",
                [sync_id, before if before is not None else 2**62],
            )
        )

    def recover(self, sync_id: str, *, before: int) -> None:
        """After a run that never finished, keep one row per key again and mark it interrupted."""
        if not self.interrupted(sync_id, before=before):
            return
        with self._lock, self._maintenance("compact the state after an interrupted run", more_memory=True):
            self._con.execute(
                f"DELETE FROM {self.table('sync_state')} AS s WHERE sync_id = ? AND EXISTS ("
                f"SELECT 1 FROM {self.table('sync_state')} AS n WHERE n.sync_id = s.sync_id "
                "AND n.k1 = s.k1 AND n.k2 = s.k2 AND n.run_id > s.run_id)",
                [sync_id],
            )
            self._con.execute(
                f"UPDATE {self.table('sync_runs')} SET outcome = CASE outcome WHEN 'running' "
                "THEN 'interrupted' ELSE 'error' END "
                f"WHERE sync_id = ? AND run_id < ? AND outcome IN ('running', '{UNCOMPACTED}')",
                [sync_id, before],
            )

    # --- acknowledged rows -------------------------------------------------------------------

    def latest_sql(self, sync_id: str, *, compact: bool) -> str:
        """SQL for (k1, k2, hash) that Heap holds for ``sync_id``, one row per key.

        With ``compact`` (no unfinished run left duplicates) the table already has one row
        per key and no grouping is needed.
        """
        table = self.table("sync_state")
        if compact:
            return f"SELECT k1, k2, hash FROM {table} WHERE sync_id = '{_safe(sync_id)}'"
        return (
            f"SELECT k1, k2, arg_max(hash, run_id) AS hash FROM {table} "
            f"WHERE sync_id = '{_safe(sync_id)}' GROUP BY k1, k2"
        )

    def count_keys(self, sync_id: str, *, before: int | None = None) -> int:
        """Rows (one per key, once compact) acknowledged for ``sync_id`` before run ``before``."""
        older = f" AND run_id < {int(before)}" if before is not None else ""
        return int(
            self._one(f"SELECT count(*) FROM {self.table('sync_state')} WHERE sync_id = ?{older}", [sync_id])
        )

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

    def compact(self, sync_id: str, *, run_id: int) -> None:
        """Drop the rows that run ``run_id`` superseded, keeping one row per key."""
        table = self.table("sync_state")
        with self._lock:
            if not self.count_keys(sync_id, before=run_id):
                return
            with self._maintenance("compact the acknowledged rows"):
                self._keep_only(
                    f"s.sync_id = ? AND s.run_id < ? AND EXISTS (SELECT 1 FROM {table} AS n "
                    "WHERE n.sync_id = ? AND n.run_id = ? AND n.k1 = s.k1 AND n.k2 = s.k2)",
                    [sync_id, run_id, sync_id, run_id],
                )

    def remove_missing(
        self, sync_id: str, source_keys_sql: str, *, apply: bool, before_run: int | None = None
    ) -> int:
        """Count (and with ``apply``, forget) keys that are no longer in the model.

        ``source_keys_sql`` yields the model's keys as (k1, k2). Rows acknowledged in run
        ``before_run`` or later are in the model by construction and are not looked at.
        """
        older = f" AND s.run_id < {int(before_run)}" if before_run is not None else ""
        where = (
            f"s.sync_id = '{_safe(sync_id)}'{older} AND NOT EXISTS (SELECT 1 FROM ({source_keys_sql}) AS cur "
            "WHERE cur.k1 = s.k1 AND cur.k2 = s.k2)"
        )
        exists = (
            f"SELECT count(*) FROM (SELECT 1 FROM {self.table('sync_state')} AS s "
            f"WHERE s.sync_id = ?{older} LIMIT 1)"
        )
        with self._lock:
            if not self._one(exists, [sync_id]):
                return 0  # nothing from earlier runs (a first sync): skip scanning the model's keys
            with self._maintenance("find the keys that left the model"):
                gone = f"SELECT DISTINCT k1, k2 FROM {self.table('sync_state')} AS s WHERE {where}"
                removed = int(self._one(f"SELECT count(*) FROM ({gone})"))
                if apply and removed:
                    self._keep_only(where, [])
        return removed

    def forget(self, sync_id: str) -> None:
        """Drop every acknowledged row of ``sync_id`` (``--full-refresh``)."""
        with self._lock, self._maintenance("forget the acknowledged rows"):
            self._keep_only("s.sync_id = ?", [sync_id])

    # --- the no-change shortcut ----------------------------------------------------------------

    def fingerprint(self, sync_id: str) -> str | None:
        if not self.exists:
            return None
        value = self._one(
            f"SELECT fingerprint FROM {self.table('sync_fingerprint')} WHERE sync_id = ?", [sync_id]
        )
        return None if value is None else str(value)

    def set_fingerprint(self, sync_id: str, fingerprint: str | None, *, run_id: int) -> None:
        with self._lock:
            self._con.execute(f"DELETE FROM {self.table('sync_fingerprint')} WHERE sync_id = ?", [sync_id])
            if fingerprint is not None:
                self._con.execute(
                    f"INSERT INTO {self.table('sync_fingerprint')} VALUES (?, ?, ?)",
                    [sync_id, fingerprint, run_id],
                )

    # --- the webhook delivery log ---------------------------------------------------------------

    def record_deliveries(self, records: Sequence[DeliveryRecord]) -> None:
        with self._lock:
            self._log.record(records)

    def deliveries(self, *, limit: int) -> list[DeliveryRecord]:
        with self._lock:
            return self._log.last(limit=limit)

    def seen_event_ids(self) -> set[str]:
        with self._lock:
            return self._log.seen()

    def close(self) -> None:
        self._con.close()


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def _safe(sync_id: str) -> str:
    # sync ids are hex digests; refuse anything else rather than quote it into SQL.
    if not sync_id.isalnum():
        raise ValueError(f"not a sync id: {sync_id!r}")
    return sync_id
