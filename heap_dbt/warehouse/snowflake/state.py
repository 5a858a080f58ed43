"""heap-dbt's sync state in Snowflake, in schema ``heap_dbt`` of the target's database by default.

The same tables as the other engines' state (``heap_dbt.warehouse.duckdb.state``), in
Snowflake types: keys and row hashes are NUMBER(19, 0) (non-negative 63-bit hashes,
``dialect``). Acknowledgements are written on a session of their own, each statement
committed at once (autocommit), so that they outlive a killed run.

Snowflake has no advisory locks and enforces no unique constraint, so a second writing sync
is kept off the same state by a lease: one row in ``sync_lock`` names its owner and when
its lease expires (epoch seconds, Snowflake's clock). A sync takes the lock with one UPDATE
that succeeds only if the lease is free or expired; Snowflake runs UPDATEs of one table one
after another and re-reads the row for the second, so only one of two racing syncs sees
its own name afterwards. The owner renews the lease while it runs (every third of it) and
frees it at the end. The owner is ``host:pid:nonce``: a sync killed on this machine is seen
to be gone and its lock taken over at once; one killed elsewhere holds it until the lease
runs out (``LEASE_SECONDS``). Either way the next sync recovers the state as after any
interrupted run. A sync stopped for longer than the lease (a suspended laptop) could overlap
another; a slow one cannot, since renewing needs no progress of the sync.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import threading
import uuid
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from heap_dbt.errors import StateError, WarehouseError
from heap_dbt.sql import ident, lit
from heap_dbt.state import RUN_LOG_COLUMNS, STATE_VERSION, UNCOMPACTED, DeliveryRecord, RunRecord
from heap_dbt.warehouse.deliveries import DELIVERIES_TABLE, DeliveryLog

if TYPE_CHECKING:
    import pyarrow as pa

    from heap_dbt.warehouse.snowflake.reader import SnowflakeSession

LEASE_SECONDS = 120
"""How long a claim on the lock lasts unless renewed (every third of it)."""
ACK_CHUNK_ROWS = 5000
"""Rows per INSERT of acknowledgements: about 0.4 MB of statement text."""
LOCK_NAME = "state"
NOW = "DATE_PART(EPOCH_SECOND, CURRENT_TIMESTAMP())"

_COLUMNS = {
    "state_info": {"version": "NUMBER(10, 0)", "created_at": "TIMESTAMP_NTZ"},
    "sync_state": {
        "sync_id": "VARCHAR", "k1": "NUMBER(19, 0)", "k2": "NUMBER(19, 0)", "hash": "NUMBER(19, 0)",
        "run_id": "NUMBER(19, 0)",
    },
    "sync_fingerprint": {"sync_id": "VARCHAR", "fingerprint": "VARCHAR", "run_id": "NUMBER(19, 0)"},
    "sync_runs": {
        "run_id": "NUMBER(19, 0)", "sync_id": "VARCHAR", "model": "VARCHAR", "object": "VARCHAR",
        "meta_path": "VARCHAR", "app_id": "VARCHAR", "full_refresh": "BOOLEAN",
        "started_at": "TIMESTAMP_NTZ", "finished_at": "TIMESTAMP_NTZ", "read": "NUMBER(19, 0)",
        "sent": "NUMBER(19, 0)", "unchanged": "NUMBER(19, 0)", "rejected": "NUMBER(19, 0)",
        "failed": "NUMBER(19, 0)", "removed": "NUMBER(19, 0)", "outcome": "VARCHAR",
    },
    "sync_lock": {"name": "VARCHAR", "owner": "VARCHAR", "expires_at": "NUMBER(19, 0)"},
}  # fmt: skip
_DELIVERIES = {
    "event_id": "VARCHAR", "received_at": "TIMESTAMP_NTZ", "job_id": "VARCHAR", "run_id": "VARCHAR",
    "decision": "VARCHAR", "outcome": "VARCHAR", "seq": "NUMBER(19, 0)",
}  # fmt: skip


class SnowflakeState:
    """State tables in one schema of the Snowflake database (a StateStore, ``heap_dbt.state``)."""

    def __init__(
        self,
        session: SnowflakeSession,
        *,
        database: str | None,
        schema: str,
        writable: bool,
        connect: Callable[[], SnowflakeSession],
        lease_seconds: int = LEASE_SECONDS,
        ack_chunk_rows: int = ACK_CHUNK_ROWS,
    ) -> None:
        self._session = session
        self._connect = connect
        self._acks: SnowflakeSession | None = None
        self._lock = threading.Lock()
        self.database = database
        self.schema = schema
        self.writable = writable
        self.where = f"{database}.{schema}" if database else schema
        self.exists = False
        self._log = DeliveryLog(
            lambda sql, params: self._run(sql, tuple(params)), table=self.table(DELIVERIES_TABLE),
            types=_DELIVERIES, mark=lambda i: "%s", where=self.where, writable=writable,
        )  # fmt: skip
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
        self.lease_seconds = lease_seconds
        self.ack_chunk_rows = ack_chunk_rows
        self._held = False
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def _run(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        try:
            cur = self._session.execute(sql, list(params) if params else None)
        except WarehouseError as exc:
            raise StateError(f"The heap-dbt state in {self.where} failed: {exc}") from None
        try:
            return list(cur.fetchall()) if cur.description else []
        finally:
            cur.close()

    def _one(self, sql: str, params: tuple[Any, ...] = ()) -> Any:
        rows = self._run(sql, params)
        return rows[0][0] if rows else None

    def table(self, name: str) -> str:
        prefix = f"{ident(self.database)}." if self.database else ""
        return f"{prefix}{ident(self.schema)}.{ident(name)}"

    def open(self) -> None:
        """Check (and, when writable, create) the state schema; refuse a foreign version; lock it."""
        info = "information_schema.columns"
        if self.database:
            info = f"{ident(self.database)}.{info}"
        rows = self._run(
            f"SELECT table_name, column_name FROM {info} WHERE table_schema = %s", (self.schema,)
        )
        found: dict[str, set[str]] = {}
        for table, column in rows:
            found.setdefault(str(table).lower(), set()).add(str(column).lower())
        if found and not self._stopped_creating(found):
            self._check(found)
            self.exists = True
            self._log.exists = DELIVERIES_TABLE in found
        elif self.writable:
            self._create()
            self.exists = True
        if self.writable:
            self._acquire()

    def _create(self) -> None:
        """Create the state so that a run stopped part-way leaves no state_info without its
        version row, which every later run would refuse as corrupt.

        Snowflake commits each DDL statement on its own, so no transaction can hold them:
        state_info comes last, made with its row by one CREATE TABLE ... AS SELECT. Until
        then the schema holds only empty tables, which the next run finishes
        (``_stopped_creating``).
        """
        schema = f"{ident(self.database)}.{ident(self.schema)}" if self.database else ident(self.schema)
        self._run(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        for table, columns in _COLUMNS.items():
            if table != "state_info":
                # Unquoted, as every statement names them: Snowflake folds both to upper case.
                cols = ", ".join(f"{c} {t}" for c, t in columns.items())
                self._run(f"CREATE TABLE IF NOT EXISTS {self.table(table)} ({cols})")
        info = _COLUMNS["state_info"]
        self._run(
            f"CREATE TABLE {self.table('state_info')} AS SELECT CAST(%s AS {info['version']}) AS version, "
            f"CAST(%s AS {info['created_at']}) AS created_at",
            (STATE_VERSION, _now()),
        )

    def _stopped_creating(self, found: dict[str, set[str]]) -> bool:
        """No state_info, and nothing but heap-dbt's own tables, all empty: a run stopped while
        creating the state (``_create``), which this one finishes rather than call corrupt."""
        if "state_info" in found or not set(found) <= set(_COLUMNS):
            return False
        return all(not self._run(f"SELECT 1 FROM {self.table(t)} LIMIT 1") for t in found)

    def _acquire(self) -> None:
        lock = self.table("sync_lock")
        # MERGE, unlike INSERT, waits for a concurrent one and re-reads: one lock row only.
        self._run(
            f"MERGE INTO {lock} AS l USING (SELECT {lit(LOCK_NAME)} AS name) AS s ON l.name = s.name "
            "WHEN NOT MATCHED THEN INSERT (name, owner, expires_at) VALUES (s.name, NULL, 0)"
        )
        holder = self._take("owner IS NULL OR expires_at < " + NOW)
        if holder is not None and _dead_here(holder[0]):
            # A sync on this machine that was killed: its process is gone, so is its claim.
            holder = self._take(f"owner = {lit(holder[0])}")
        if holder is not None:
            owner, left = holder
            wait = f" (its lease runs out in {int(left)} s)" if left is not None else ""
            raise StateError(
                f"Cannot use the heap-dbt state in {self.where}: another process holds its lock "
                f"(a `heap-dbt sync`, {owner}){wait}. Wait for it to finish, then run heap-dbt again."
            )
        self._held = True
        self._renewer = threading.Thread(target=self._renew, name="heap-dbt-lease", daemon=True)
        self._renewer.start()

    def _take(self, free: str) -> tuple[str, Any] | None:
        """Claim the lock where ``free`` holds; None if this store now owns it, else (owner, seconds left)."""
        lock = self.table("sync_lock")
        self._run(
            f"UPDATE {lock} SET owner = %s, expires_at = {NOW} + %s "
            f"WHERE name = {lit(LOCK_NAME)} AND ({free})",
            (self.owner, self.lease_seconds),
        )
        holders = self._run(f"SELECT owner, expires_at - {NOW} FROM {lock} WHERE name = {lit(LOCK_NAME)}")
        other = next((r for r in holders if r[0] != self.owner), None)
        if holders and other is None:
            return None
        return (str(other[0]), other[1]) if other else ("unknown", None)

    def _renew(self) -> None:
        # The lease is renewed on the acknowledgement session: the reader's may be streaming.
        while not self._stop.wait(self.lease_seconds / 3):
            try:
                with self._lock:
                    session = self._ack_session()
                    session.execute(
                        f"UPDATE {self.table('sync_lock')} SET expires_at = {NOW} + %s "
                        f"WHERE name = {lit(LOCK_NAME)} AND owner = %s",
                        [self.lease_seconds, self.owner],
                    ).close()
            except (WarehouseError, StateError):
                continue  # the next renewal tries again; the lease has two more thirds to run

    def _ack_session(self) -> SnowflakeSession:
        if self._acks is None:
            self._acks = self._connect()
        return self._acks

    def _check(self, found: dict[str, set[str]]) -> None:
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
        if int(versions[0][0]) != STATE_VERSION:
            raise StateError(
                f"The heap-dbt state in {self.where} has version {versions[0][0]}; this heap-dbt reads "
                f"version {STATE_VERSION}. Use the heap-dbt release that wrote it, or start over. {hint}"
            )
        optional = {DELIVERIES_TABLE: _DELIVERIES} if DELIVERIES_TABLE in found else {}
        for table, columns in (_COLUMNS | optional).items():
            missing = [c for c in columns if c not in found.get(table, set())]
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
            # The lock makes this sync the only writer: max() + 1 cannot race.
            run_id = int(self._one(f"SELECT COALESCE(MAX(run_id), 0) + 1 FROM {self.table('sync_runs')}"))
            self._run(
                f"INSERT INTO {self.table('sync_runs')} (run_id, sync_id, model, object, meta_path, "
                "app_id, full_refresh, started_at, outcome) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, 'running')",
                (run_id, sync_id, model, obj, meta_path, app_id, full_refresh, _now()),
            )
            return run_id

    def finish_run(self, run_id: int, *, counts: dict[str, int], outcome: str) -> None:
        with self._lock:
            self._run(
                f"UPDATE {self.table('sync_runs')} SET finished_at = %s, read = %s, sent = %s, "
                "unchanged = %s, rejected = %s, failed = %s, removed = %s, outcome = %s WHERE run_id = %s",
                (
                    _now(), counts["read"], counts["sent"], counts["unchanged"], counts["rejected"],
                    counts["failed"], counts["removed"], outcome, run_id,
                ),
            )  # fmt: skip

    def history(self, *, limit: int) -> list[RunRecord]:
        if not self.exists:
            return []
        rows = self._run(
            f"SELECT {RUN_LOG_COLUMNS} FROM {self.table('sync_runs')} ORDER BY run_id DESC LIMIT {int(limit)}"
        )
        return [RunRecord.from_row(r) for r in rows]

    def interrupted(self, sync_id: str, *, before: int | None = None) -> bool:
        return bool(
            self._one(
                f"SELECT COUNT(*) FROM {self.table('sync_runs')} WHERE sync_id = %s AND run_id < %s "
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
                f"DELETE FROM {self.table('sync_state')} AS s WHERE s.sync_id = %s AND EXISTS ("
                f"SELECT 1 FROM {self.table('sync_state')} AS n WHERE n.sync_id = s.sync_id "
                "AND n.k1 = s.k1 AND n.k2 = s.k2 AND n.run_id > s.run_id)",
                (sync_id,),
            )
            self._run(
                f"UPDATE {self.table('sync_runs')} SET outcome = CASE outcome WHEN 'running' "
                "THEN 'interrupted' ELSE 'error' END "
                f"WHERE sync_id = %s AND run_id < %s AND outcome IN ('running', {lit(UNCOMPACTED)})",
                (sync_id, before),
            )

    # --- acknowledged rows -------------------------------------------------------------------

    def latest_sql(self, sync_id: str, *, compact: bool) -> str:
        table = self.table("sync_state")
        if compact:
            return f"SELECT k1, k2, hash FROM {table} WHERE sync_id = {lit(_safe(sync_id))}"
        return (
            f"SELECT k1, k2, hash FROM {table} WHERE sync_id = {lit(_safe(sync_id))} "
            "QUALIFY ROW_NUMBER() OVER (PARTITION BY k1, k2 ORDER BY run_id DESC) = 1"
        )

    def count_keys(self, sync_id: str, *, before: int | None = None) -> int:
        older = f" AND run_id < {int(before)}" if before is not None else ""
        return int(
            self._one(
                f"SELECT COUNT(*) FROM {self.table('sync_state')} WHERE sync_id = %s{older}", (sync_id,)
            )
        )

    def acknowledge(self, sync_id: str, run_id: int, acks: pa.Table) -> None:
        """Record rows Heap acknowledged with a 2xx (columns k1, k2, hash), committed at once."""
        rows = [
            (sync_id, int(k1), int(k2), int(h), run_id)
            for k1, k2, h in zip(
                acks.column("k1").to_pylist(),
                acks.column("k2").to_pylist(),
                acks.column("hash").to_pylist(),
                strict=True,
            )
        ]
        if not rows:
            return
        with self._lock:
            try:
                session = self._ack_session()
                cur = session.con.cursor()
                try:
                    # pyformat executemany: the connector sends one multi-row INSERT per call,
                    # as text; chunks keep it far below Snowflake's 1 MB statement limit.
                    for start in range(0, len(rows), self.ack_chunk_rows):
                        cur.executemany(
                            f"INSERT INTO {self.table('sync_state')} (sync_id, k1, k2, hash, run_id) "
                            "VALUES (%s, %s, %s, %s, %s)",
                            rows[start : start + self.ack_chunk_rows],
                        )
                finally:
                    cur.close()
            except Exception as exc:  # the connector's errors, and a failed connect
                raise StateError(
                    f"Could not record acknowledged rows in the heap-dbt state in {self.where}: {exc}"
                ) from None

    def compact(self, sync_id: str, *, run_id: int) -> None:
        """Drop the rows that run ``run_id`` superseded, keeping one row per key."""
        table = self.table("sync_state")
        with self._lock:
            if not self.count_keys(sync_id, before=run_id):
                return
            self._run(
                f"DELETE FROM {table} AS s WHERE s.sync_id = %s AND s.run_id < %s AND EXISTS ("
                f"SELECT 1 FROM {table} AS n WHERE n.sync_id = %s AND n.run_id = %s "
                "AND n.k1 = s.k1 AND n.k2 = s.k2)",
                (sync_id, run_id, sync_id, run_id),
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
                f"SELECT COUNT(*) FROM (SELECT 1 FROM {table} AS s WHERE s.sync_id = %s{older} LIMIT 1) AS x",
                (sync_id,),
            ):
                return 0  # nothing from earlier runs (a first sync): skip scanning the model's keys
            removed = int(
                self._one(
                    f"SELECT COUNT(*) FROM (SELECT DISTINCT k1, k2 FROM {table} AS s WHERE {where}) AS g"
                )
            )
            if apply and removed:
                self._run(f"DELETE FROM {table} AS s WHERE {where}")
        return removed

    def forget(self, sync_id: str) -> None:
        with self._lock:
            self._run(f"DELETE FROM {self.table('sync_state')} WHERE sync_id = %s", (sync_id,))

    # --- the no-change shortcut ----------------------------------------------------------------

    def fingerprint(self, sync_id: str) -> str | None:
        if not self.exists:
            return None
        value = self._one(
            f"SELECT fingerprint FROM {self.table('sync_fingerprint')} WHERE sync_id = %s", (sync_id,)
        )
        return None if value is None else str(value)

    def set_fingerprint(self, sync_id: str, fingerprint: str | None, *, run_id: int) -> None:
        with self._lock:
            self._run(f"DELETE FROM {self.table('sync_fingerprint')} WHERE sync_id = %s", (sync_id,))
            if fingerprint is not None:
                self._run(
                    f"INSERT INTO {self.table('sync_fingerprint')} (sync_id, fingerprint, run_id) "
                    "VALUES (%s, %s, %s)",
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
        """Free the lock (a killed run's expires with its lease) and close the second session."""
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join(timeout=5)
        if self._held:
            try:
                self._run(
                    f"UPDATE {self.table('sync_lock')} SET owner = NULL, expires_at = 0 "
                    f"WHERE name = {lit(LOCK_NAME)} AND owner = %s",
                    (self.owner,),
                )
            finally:
                self._held = False
        if self._acks is not None:
            self._acks.close()
            self._acks = None


def _dead_here(owner: str) -> bool:
    """Whether ``owner`` (host:pid:nonce) is a process of this machine that no longer runs."""
    host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, another user's
    return False


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def _safe(sync_id: str) -> str:
    # sync ids are hex digests; refuse anything else rather than quote it into SQL.
    if not sync_id.isalnum():
        raise ValueError(f"not a sync id: {sync_id!r}")
    return sync_id
