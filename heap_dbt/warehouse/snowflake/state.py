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

import os
import socket
import threading
import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from heap_dbt.errors import StateError, WarehouseError
from heap_dbt.sql import ident, lit
from heap_dbt.state import STATE_VERSION
from heap_dbt.warehouse.sql_state import TABLES, SQLState, now

if TYPE_CHECKING:
    import pyarrow as pa

    from heap_dbt.warehouse.snowflake.reader import SnowflakeSession

LEASE_SECONDS = 120
"""How long a claim on the lock lasts unless renewed (every third of it)."""
ACK_CHUNK_ROWS = 5000
"""Rows per INSERT of acknowledgements: about 0.4 MB of statement text."""
LOCK_NAME = "state"
NOW = "DATE_PART(EPOCH_SECOND, CURRENT_TIMESTAMP())"

_TYPES = {
    "int32": "NUMBER(10, 0)", "int": "NUMBER(19, 0)", "hash": "NUMBER(19, 0)", "text": "VARCHAR",
    "bool": "BOOLEAN", "time": "TIMESTAMP_NTZ",
}  # fmt: skip


class SnowflakeState(SQLState):
    """State tables in one schema of the Snowflake database (a StateStore, ``heap_dbt.state``)."""

    TYPES = _TYPES
    TABLES = TABLES | {"sync_lock": {"name": "text", "owner": "text", "expires_at": "int"}}

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
        self.database = database
        self.schema = schema
        prefix = f"{ident(database)}.{ident(schema)}" if database else ident(schema)
        super().__init__(
            prefix=prefix, where=f"{database}.{schema}" if database else schema, writable=writable
        )
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
        self.lease_seconds = lease_seconds
        self.ack_chunk_rows = ack_chunk_rows
        self._held = False
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def _run(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        try:
            cur = self._session.execute(sql, list(params) if params else None)
        except WarehouseError as exc:
            raise StateError(f"The heap-dbt state in {self.where} failed: {exc}") from None
        try:
            return list(cur.fetchall()) if cur.description else []
        finally:
            cur.close()

    @staticmethod
    def _mark(i: int) -> str:
        return "%s"

    def open(self) -> None:
        """Check or create the state (``SQLState.open``), then lock it (when writable)."""
        super().open()
        if self.writable:
            self._acquire()

    def _tables(self) -> dict[str, set[str]]:
        info = "information_schema.columns"
        if self.database:
            info = f"{ident(self.database)}.{info}"
        rows = self._run(
            f"SELECT table_name, column_name FROM {info} WHERE table_schema = %s", (self.schema,)
        )
        found: dict[str, set[str]] = {}
        for table, column in rows:
            found.setdefault(str(table).lower(), set()).add(str(column).lower())
        return found

    def _create(self) -> None:
        """Create the state so that a run stopped part-way leaves no state_info without its
        version row, which every later run would refuse as corrupt.

        Snowflake commits each DDL statement on its own, so no transaction can hold them:
        state_info comes last, made with its row by one CREATE TABLE ... AS SELECT. Until
        then the schema holds only empty tables, which the next run finishes
        (``_stopped_creating``).
        """
        self._run(f"CREATE SCHEMA IF NOT EXISTS {self._prefix}")
        for table, columns in self.columns().items():
            if table != "state_info":
                # Unquoted, as every statement names them: Snowflake folds both to upper case.
                cols = ", ".join(f"{c} {t}" for c, t in columns.items())
                self._run(f"CREATE TABLE IF NOT EXISTS {self.table(table)} ({cols})")
        info = self.columns()["state_info"]
        self._run(
            f"CREATE TABLE {self.table('state_info')} AS SELECT CAST(%s AS {info['version']}) AS version, "
            f"CAST(%s AS {info['created_at']}) AS created_at",
            (STATE_VERSION, now()),
        )

    def _stopped_creating(self, found: Mapping[str, Collection[str]]) -> bool:
        """No state_info, and nothing but heap-dbt's own tables, all empty: a run stopped while
        creating the state (``_create``), which this one finishes rather than call corrupt."""
        if "state_info" in found or not set(found) <= set(self.TABLES):
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

    def _newest(self, rows: str) -> str:
        return (
            f"SELECT k1, k2, hash {rows} "
            "QUALIFY ROW_NUMBER() OVER (PARTITION BY k1, k2 ORDER BY run_id DESC) = 1"
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
