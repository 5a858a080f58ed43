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

import datetime as dt
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from heap_dbt.errors import StateError
from heap_dbt.sql import ident, lit
from heap_dbt.state import RUN_LOG_COLUMNS, STATE_VERSION, UNCOMPACTED, DeliveryRecord, RunRecord
from heap_dbt.warehouse.deliveries import DELIVERIES_TABLE, DeliveryLog
from heap_dbt.warehouse.postgres.errors import first_line

if TYPE_CHECKING:
    import pyarrow as pa
    from adbc_driver_manager import dbapi

_COLUMNS = {
    "state_info": {"version": "integer", "created_at": "timestamp"},
    "sync_state": {"sync_id": "text", "k1": "bigint", "k2": "bigint", "hash": "bigint", "run_id": "bigint"},
    "sync_fingerprint": {"sync_id": "text", "fingerprint": "text", "run_id": "bigint"},
    "sync_runs": {
        "run_id": "bigint", "sync_id": "text", "model": "text", "object": "text",
        "meta_path": "text", "app_id": "text", "full_refresh": "boolean",
        "started_at": "timestamp", "finished_at": "timestamp", "read": "bigint",
        "sent": "bigint", "unchanged": "bigint", "rejected": "bigint", "failed": "bigint",
        "removed": "bigint", "outcome": "text",
    },
}  # fmt: skip
_DELIVERIES = {
    "event_id": "text", "received_at": "timestamp", "job_id": "text", "run_id": "text",
    "decision": "text", "outcome": "text", "seq": "bigint",
}  # fmt: skip


class PostgresState:
    """State tables in one schema of the warehouse (a StateStore, ``heap_dbt.state``).

    ``con`` is the reader's connection; ``connect`` opens the second connection that writes
    acknowledgements, on first use.
    """

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
        self._lock = threading.Lock()
        self.database = database
        self.schema = schema
        self.writable = writable
        self.where = f"{database}.{schema}"
        self.exists = False
        self._log = DeliveryLog(
            lambda sql, params: self._run(sql, tuple(params)), table=self.table(DELIVERIES_TABLE),
            types=_DELIVERIES, mark=lambda i: f"${i}", where=self.where, writable=writable,
        )  # fmt: skip

    def _run(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        import adbc_driver_manager

        cur = self._con.cursor()
        try:
            cur.execute(sql, params or None)
            return list(cur.fetchall()) if cur.description else []
        except adbc_driver_manager.Error as exc:
            raise StateError(f"The heap-dbt state in {self.where} failed: {first_line(exc)}") from exc
        finally:
            cur.close()

    def _one(self, sql: str, params: tuple[Any, ...] = ()) -> Any:
        rows = self._run(sql, params)
        return rows[0][0] if rows else None

    def table(self, name: str) -> str:
        return f"{ident(self.schema)}.{ident(name)}"

    def open(self) -> None:
        """Check (and, when writable, create) the state schema; refuse a foreign version; lock it."""
        if self.writable:
            lock = f"heap-dbt state {self.where}"
            if not self._one("SELECT pg_try_advisory_lock(hashtextextended($1, 0))", (lock,)):
                raise StateError(
                    f"Cannot use the heap-dbt state in {self.where}: another process holds its lock "
                    "(another `heap-dbt sync`). Wait for it to finish, then run heap-dbt again."
                )
        rows = self._run(
            "SELECT table_name, column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = $1",
            (self.schema,),
        )
        found: dict[str, dict[str, str]] = {}
        for table, column, dtype in rows:
            found.setdefault(table, {})[column] = dtype
        if found:
            self._check(found)
            self.exists = True
            self._log.exists = DELIVERIES_TABLE in found
            return
        if not self.writable:
            return  # a dry run against a fresh state: every row is new
        # One transaction: a run killed part-way through leaves no schema without its version
        # row, which every later run would refuse as corrupt.
        self._run("BEGIN")
        try:
            self._run(f"CREATE SCHEMA IF NOT EXISTS {ident(self.schema)}")
            for table, columns in _COLUMNS.items():
                cols = ", ".join(f"{ident(c)} {t}" for c, t in columns.items())
                self._run(f"CREATE TABLE IF NOT EXISTS {self.table(table)} ({cols})")
            self._run(f"INSERT INTO {self.table('state_info')} VALUES ($1, $2)", (STATE_VERSION, _now()))
        except BaseException:
            self._run("ROLLBACK")
            raise
        self._run("COMMIT")
        self.exists = True

    def _check(self, found: dict[str, dict[str, str]]) -> None:
        hint = (
            f"Drop the schema {self.where} (or pass another --state-schema) to start over; the next "
            "sync then sends every row once."
        )
        if "state_info" not in found:
            raise StateError(
                f"The heap-dbt state in {self.where} has no state_info table: it is not heap-dbt state, "
                f"or it is corrupt. {hint}"
            )
        versions = self._run(f"SELECT version FROM {self.table('state_info')}")
        if len(versions) != 1 or versions[0][0] is None:
            raise StateError(
                f"The heap-dbt state in {self.where} is corrupt (state_info has {len(versions)} rows). {hint}"
            )
        if versions[0][0] != STATE_VERSION:
            raise StateError(
                f"The heap-dbt state in {self.where} has version {versions[0][0]}; this heap-dbt reads "
                f"version {STATE_VERSION}. Use the heap-dbt release that wrote it, or start over. {hint}"
            )
        optional = {DELIVERIES_TABLE: _DELIVERIES} if DELIVERIES_TABLE in found else {}
        for table, columns in (_COLUMNS | optional).items():
            missing = [c for c in columns if c not in found.get(table, {})]
            if missing:
                raise StateError(
                    f"The heap-dbt state in {self.where} is corrupt: table {table} lacks "
                    f"{', '.join(missing)}. {hint}"
                )

    # --- the run log -------------------------------------------------------------------------

    def begin_run(
        self, *, sync_id: str, model: str, obj: str, meta_path: str, app_id: str, full_refresh: bool
    ) -> int:
        with self._lock:
            run_id = self._one(f"SELECT coalesce(max(run_id), 0) + 1 FROM {self.table('sync_runs')}")
            self._run(
                f"INSERT INTO {self.table('sync_runs')} (run_id, sync_id, model, object, meta_path, "
                "app_id, full_refresh, started_at, outcome) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'running')",
                (run_id, sync_id, model, obj, meta_path, app_id, full_refresh, _now()),
            )
            return int(run_id)

    def finish_run(self, run_id: int, *, counts: dict[str, int], outcome: str) -> None:
        with self._lock:
            self._run(
                f"UPDATE {self.table('sync_runs')} SET finished_at = $1, read = $2, sent = $3, "
                "unchanged = $4, rejected = $5, failed = $6, removed = $7, outcome = $8 WHERE run_id = $9",
                (
                    _now(), counts["read"], counts["sent"], counts["unchanged"], counts["rejected"],
                    counts["failed"], counts["removed"], outcome, run_id,
                ),
            )  # fmt: skip

    def history(self, *, limit: int) -> list[RunRecord]:
        if not self.exists:
            return []
        rows = self._run(
            f"SELECT {RUN_LOG_COLUMNS} FROM {self.table('sync_runs')} ORDER BY run_id DESC LIMIT $1",
            (limit,),
        )
        return [RunRecord.from_row(r) for r in rows]

    def interrupted(self, sync_id: str, *, before: int | None = None) -> bool:
        return bool(
            self._one(
                f"SELECT count(*) FROM {self.table('sync_runs')} WHERE sync_id = $1 AND run_id < $2 "
                f"AND outcome IN ('running', {lit(UNCOMPACTED)})",
                (sync_id, before if before is not None else 2**62),
            )
        )

    def recover(self, sync_id: str, *, before: int) -> None:
        """After a run that never finished, keep one row per key again and mark it interrupted."""
        if not self.interrupted(sync_id, before=before):
            return
        with self._lock:
            self._run(
                f"DELETE FROM {self.table('sync_state')} AS s WHERE s.sync_id = $1 AND EXISTS ("
                f"SELECT 1 FROM {self.table('sync_state')} AS n WHERE n.sync_id = s.sync_id "
                "AND n.k1 = s.k1 AND n.k2 = s.k2 AND n.run_id > s.run_id)",
                (sync_id,),
            )
            self._run(
                f"UPDATE {self.table('sync_runs')} SET outcome = CASE outcome WHEN 'running' "
                "THEN 'interrupted' ELSE 'error' END "
                f"WHERE sync_id = $1 AND run_id < $2 AND outcome IN ('running', {lit(UNCOMPACTED)})",
                (sync_id, before),
            )

    # --- acknowledged rows -------------------------------------------------------------------

    def latest_sql(self, sync_id: str, *, compact: bool) -> str:
        table = self.table("sync_state")
        if compact:
            return f"SELECT k1, k2, hash FROM {table} WHERE sync_id = {lit(_safe(sync_id))}"
        return (
            f"SELECT DISTINCT ON (k1, k2) k1, k2, hash FROM {table} WHERE sync_id = {lit(_safe(sync_id))} "
            "ORDER BY k1, k2, run_id DESC"
        )

    def count_keys(self, sync_id: str, *, before: int | None = None) -> int:
        older = f" AND run_id < {int(before)}" if before is not None else ""
        return int(
            self._one(
                f"SELECT count(*) FROM {self.table('sync_state')} WHERE sync_id = $1{older}", (sync_id,)
            )
        )

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

    def compact(self, sync_id: str, *, run_id: int) -> None:
        """Drop the rows that run ``run_id`` superseded, keeping one row per key."""
        table = self.table("sync_state")
        with self._lock:
            if not self.count_keys(sync_id, before=run_id):
                return
            self._run(
                f"DELETE FROM {table} AS s WHERE s.sync_id = $1 AND s.run_id < $2 AND EXISTS ("
                f"SELECT 1 FROM {table} AS n WHERE n.sync_id = $1 AND n.run_id = $2 "
                "AND n.k1 = s.k1 AND n.k2 = s.k2)",
                (sync_id, run_id),
            )

    def remove_missing(
        self, sync_id: str, source_keys_sql: str, *, apply: bool, before_run: int | None = None
    ) -> int:
        older = f" AND s.run_id < {int(before_run)}" if before_run is not None else ""
        table = self.table("sync_state")
        where = (
            f"s.sync_id = {lit(_safe(sync_id))}{older} AND NOT EXISTS (SELECT 1 FROM ({source_keys_sql}) "
            "AS cur WHERE cur.k1 = s.k1 AND cur.k2 = s.k2)"
        )
        with self._lock:
            if not self._one(
                f"SELECT count(*) FROM (SELECT 1 FROM {table} AS s WHERE s.sync_id = $1{older} LIMIT 1) AS x",
                (sync_id,),
            ):
                return 0  # nothing from earlier runs (a first sync): skip scanning the model's keys
            removed = int(
                self._one(
                    f"SELECT count(*) FROM (SELECT DISTINCT k1, k2 FROM {table} AS s WHERE {where}) AS g"
                )
            )
            if apply and removed:
                self._run(f"DELETE FROM {table} AS s WHERE {where}")
        return removed

    def forget(self, sync_id: str) -> None:
        with self._lock:
            self._run(f"DELETE FROM {self.table('sync_state')} WHERE sync_id = $1", (sync_id,))

    # --- the no-change shortcut ----------------------------------------------------------------

    def fingerprint(self, sync_id: str) -> str | None:
        if not self.exists:
            return None
        value = self._one(
            f"SELECT fingerprint FROM {self.table('sync_fingerprint')} WHERE sync_id = $1", (sync_id,)
        )
        return None if value is None else str(value)

    def set_fingerprint(self, sync_id: str, fingerprint: str | None, *, run_id: int) -> None:
        with self._lock:
            self._run(f"DELETE FROM {self.table('sync_fingerprint')} WHERE sync_id = $1", (sync_id,))
            if fingerprint is not None:
                self._run(
                    f"INSERT INTO {self.table('sync_fingerprint')} VALUES ($1, $2, $3)",
                    (sync_id, fingerprint, run_id),
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
        if self._acks is not None:
            self._acks.close()
            self._acks = None


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def _safe(sync_id: str) -> str:
    # sync ids are hex digests; refuse anything else rather than quote it into SQL.
    if not sync_id.isalnum():
        raise ValueError(f"not a sync id: {sync_id!r}")
    return sync_id
