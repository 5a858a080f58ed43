"""The state store every engine runs: its SQL once, each engine's store saying only what differs.

The tables, and what each holds, are described in ``heap_dbt.warehouse.duckdb.state`` and
``heap_dbt.state``. A store (``SQLState``'s subclass in each warehouse package) passes in how
it runs a statement and spells a parameter, where its tables live and their types, and
writes the parts that are its engine's own: acknowledging rows, the dedupe of an
uncompacted state, locking, and how deleting rows is best done.
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import datetime as dt
import threading
from collections.abc import Collection, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from heap_dbt.errors import StateError
from heap_dbt.sql import ident, lit
from heap_dbt.state import RUN_LOG_COLUMNS, STATE_VERSION, UNCOMPACTED, RunRecord, SyncName
from heap_dbt.warehouse.deliveries import DELIVERIES_TABLE, DeliveryLog, DeliveryLogMixin

if TYPE_CHECKING:
    import pyarrow as pa

TABLES: dict[str, dict[str, str]] = {
    "state_info": {"version": "int32", "created_at": "time"},
    "sync_state": {"sync_id": "text", "k1": "hash", "k2": "hash", "hash": "hash", "run_id": "int"},
    "sync_fingerprint": {"sync_id": "text", "fingerprint": "text", "run_id": "int"},
    "sync_runs": {
        "run_id": "int", "sync_id": "text", "model": "text", "object": "text", "meta_path": "text",
        "app_id": "text", "full_refresh": "bool", "started_at": "time", "finished_at": "time",
        "read": "int", "sent": "int", "unchanged": "int", "rejected": "int", "failed": "int",
        "removed": "int", "outcome": "text",
    },
}  # fmt: skip
"""The state's tables, each column by kind: ``int32``, ``int`` (64-bit), ``hash`` (a 64-bit
hash), ``text``, ``bool``, ``time`` (naive UTC); a store's ``TYPES`` spells each kind."""
_DELIVERY_KINDS = {
    "event_id": "text", "received_at": "time", "job_id": "text", "run_id": "text",
    "decision": "text", "outcome": "text", "seq": "int",
}  # fmt: skip
"""The delivery log's columns (``heap_dbt.warehouse.deliveries.COLUMNS``) by kind."""
NAMES_TABLE = "sync_names"
_NAME_KINDS = {
    "name_id": "text", "name": "text", "object": "text", "sync_id": "text", "key_seed": "text",
    "definition_seed": "text", "model": "text", "updated_at": "time",
}  # fmt: skip
"""The sync names' columns (``heap_dbt.state.SyncName``'s fields, then ``updated_at``) by kind.
A state written before sync names has no such table and needs none: the first sync that
writes creates it (one CREATE TABLE), and until then reads find nothing."""
_NAME_COLUMNS = ", ".join(ident(c) for c in _NAME_KINDS)
_COUNTS = ("read", "sent", "unchanged", "rejected", "failed", "removed")
_ACTIVE = f"('running', {lit(UNCOMPACTED)})"
"""The outcomes of a run that left its keys with two rows (it never finished, or could not compact)."""


class SQLState(DeliveryLogMixin, abc.ABC):
    """State tables in one schema (a StateStore, ``heap_dbt.state``), in an engine's SQL.

    ``prefix`` is the schema as SQL (``catalog.schema``, quoted), ``where`` the same for
    messages. A subclass sets its engine's type for each kind of column (``TYPES``), how to
    start over in a hint (``START_OVER``), and implements ``_run``, ``_tables``, ``_newest`` and
    ``acknowledge``. Calls are serialised with ``_lock``; another writer is kept off the
    state by the engine's lock on it, so ``max(run_id) + 1`` cannot race.
    """

    TYPES: ClassVar[Mapping[str, str]]
    """The engine's type for each kind of column in ``TABLES``."""
    TABLES: ClassVar[Mapping[str, Mapping[str, str]]] = TABLES
    START_OVER: ClassVar[str] = "or pass another --state-schema"

    def __init__(self, *, prefix: str, where: str, writable: bool) -> None:
        self._lock = threading.Lock()
        self._prefix = prefix
        self.where = where
        self.writable = writable
        self.exists = False
        self._names_exist = False
        self._log = DeliveryLog(
            self._log_run, table=self.table(DELIVERIES_TABLE), types=self._typed(_DELIVERY_KINDS),
            mark=self._mark, where=where, writable=writable,
        )  # fmt: skip

    @classmethod
    def _typed(cls, kinds: Mapping[str, str]) -> dict[str, str]:
        """Columns by kind (as in ``TABLES``), each with the engine's type instead."""
        return {c: cls.TYPES[k] for c, k in kinds.items()}

    @classmethod
    def columns(cls) -> dict[str, dict[str, str]]:
        """Each table's columns (the delivery log's aside) and their types in the engine."""
        return {t: cls._typed(kinds) for t, kinds in cls.TABLES.items()}

    # --- what an engine says -------------------------------------------------------------------

    @abc.abstractmethod
    def _run(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run one statement on the store's connection; its rows (none without a result)."""

    @abc.abstractmethod
    def _tables(self) -> dict[str, set[str]]:
        """The tables in the state schema and their columns (lower case)."""

    @abc.abstractmethod
    def _newest(self, rows: str) -> str:
        """SQL for (k1, k2, hash) with the highest run_id per key, of ``rows`` (``FROM ... WHERE ...``)."""

    @staticmethod
    def _mark(i: int) -> str:
        """The ``i``-th parameter (from 1) in the driver's style."""
        return f"${i}"

    def _log_run(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        """Run a statement of the delivery log; raise StateError."""
        return self._run(sql, params)

    def _delete(self, condition: str, params: Sequence[Any]) -> None:
        """Delete the rows of sync_state (as ``s``) that match ``condition``."""
        self._run(f"DELETE FROM {self.table('sync_state')} AS s WHERE {condition}", params)

    @contextlib.contextmanager
    def _maintenance(self, what: str, *, more_memory: bool = False) -> Iterator[None]:
        """Around the state's upkeep (``what``, for a message): nothing, unless an engine says."""
        yield

    # --- statements, and opening the state ------------------------------------------------------

    def _one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        rows = self._run(sql, params)
        return rows[0][0] if rows else None

    def _marks(self, n: int) -> str:
        return ", ".join(self._mark(i) for i in range(1, n + 1))

    def table(self, name: str) -> str:
        return f"{self._prefix}.{ident(name)}"

    def open(self) -> None:
        """Check (and, when writable, create) the state schema; refuse a foreign version."""
        found = self._tables()
        if found and not self._stopped_creating(found):
            self._check(found)
            self.exists = True
            self._log.exists = DELIVERIES_TABLE in found
            self._names_exist = NAMES_TABLE in found
        elif self.writable:
            self._create()
            self.exists = True
        # else a dry run against a fresh state: every row is new

    def _stopped_creating(self, found: Mapping[str, Collection[str]]) -> bool:
        """True for what a run stopped while creating the state left, to finish rather than refuse."""
        return False

    def _create(self) -> None:
        """Create the state in one transaction: a run killed part-way through leaves no schema
        without its version row, which every later run would refuse as corrupt."""
        self._run("BEGIN")
        try:
            self._run(f"CREATE SCHEMA IF NOT EXISTS {self._prefix}")
            for table, columns in self.columns().items():
                cols = ", ".join(f"{ident(c)} {t}" for c, t in columns.items())
                self._run(f"CREATE TABLE IF NOT EXISTS {self.table(table)} ({cols})")
            self._run(
                f"INSERT INTO {self.table('state_info')} VALUES ({self._marks(2)})", (STATE_VERSION, now())
            )
        except BaseException:
            self._run("ROLLBACK")
            raise
        self._run("COMMIT")

    def _check(self, found: Mapping[str, Collection[str]]) -> None:
        hint = (
            f"Drop the schema {self.where} ({self.START_OVER}) to start over; the next sync then "
            "sends every row once."
        )
        if "state_info" not in found:
            raise StateError(
                f"The heap-dbt state in {self.where} has no state_info table: it is not heap-dbt state, "
                f"or it is corrupt. {hint}"
            )
        try:
            versions = self._run(f"SELECT version FROM {self.table('state_info')}")
        except StateError:
            raise
        except Exception as exc:  # an engine's error that its _run passes on: an unreadable state
            raise StateError(f"The heap-dbt state in {self.where} is unreadable ({exc}). {hint}") from exc
        if len(versions) != 1 or versions[0][0] is None:
            raise StateError(
                f"The heap-dbt state in {self.where} is corrupt (state_info has {len(versions)} rows). {hint}"
            )
        if int(versions[0][0]) != STATE_VERSION:
            raise StateError(
                f"The heap-dbt state in {self.where} has version {versions[0][0]}; this heap-dbt reads "
                f"version {STATE_VERSION}. Use the heap-dbt release that wrote it, or start over. {hint}"
            )
        optional = {t: kinds for t, kinds in ((DELIVERIES_TABLE, _DELIVERY_KINDS), (NAMES_TABLE, _NAME_KINDS))
                    if t in found}  # fmt: skip
        for table, columns in (dict(self.TABLES) | optional).items():
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
        runs = self.table("sync_runs")
        with self._lock:
            run_id = int(self._one(f"SELECT coalesce(max(run_id), 0) + 1 FROM {runs}"))
            self._run(
                f"INSERT INTO {runs} (run_id, sync_id, model, object, meta_path, app_id, full_refresh, "
                f"started_at, outcome) VALUES ({self._marks(8)}, 'running')",
                (run_id, sync_id, model, obj, meta_path, app_id, full_refresh, now()),
            )
            return run_id

    def finish_run(self, run_id: int, *, counts: dict[str, int], outcome: str) -> None:
        columns = ("finished_at", *_COUNTS, "outcome")
        sets = ", ".join(f"{c} = {self._mark(i)}" for i, c in enumerate(columns, 1))
        with self._lock:
            self._run(
                f"UPDATE {self.table('sync_runs')} SET {sets} WHERE run_id = {self._mark(len(columns) + 1)}",
                (now(), *(counts[c] for c in _COUNTS), outcome, run_id),
            )

    def history(self, *, limit: int) -> list[RunRecord]:
        if not self.exists:
            return []
        rows = self._run(
            f"SELECT {RUN_LOG_COLUMNS} FROM {self.table('sync_runs')} ORDER BY run_id DESC LIMIT {int(limit)}"
        )
        return [RunRecord.from_row(r) for r in rows]

    def interrupted(self, sync_id: str, *, before: int | None = None) -> bool:
        """True if an earlier run of ``sync_id`` never finished (killed, crashed) or could not
        compact what it acknowledged; its keys may then have two rows."""
        m = self._mark
        return bool(
            self._one(
                f"SELECT count(*) FROM {self.table('sync_runs')} WHERE sync_id = {m(1)} AND run_id < {m(2)} "
                f"AND outcome IN {_ACTIVE}",
                (sync_id, before if before is not None else 2**62),
            )
        )

    def recover(self, sync_id: str, *, before: int) -> None:
        """After a run that never finished, keep one row per key again and mark it interrupted."""
        if not self.interrupted(sync_id, before=before):
            return
        m = self._mark
        with self._lock, self._maintenance("compact the state after an interrupted run", more_memory=True):
            self._run(
                f"DELETE FROM {self.table('sync_state')} AS s WHERE s.sync_id = {m(1)} AND EXISTS ("
                f"SELECT 1 FROM {self.table('sync_state')} AS n WHERE n.sync_id = s.sync_id "
                "AND n.k1 = s.k1 AND n.k2 = s.k2 AND n.run_id > s.run_id)",
                (sync_id,),
            )
            self._run(
                f"UPDATE {self.table('sync_runs')} SET outcome = CASE outcome WHEN 'running' "
                "THEN 'interrupted' ELSE 'error' END "
                f"WHERE sync_id = {m(1)} AND run_id < {m(2)} AND outcome IN {_ACTIVE}",
                (sync_id, before),
            )

    # --- acknowledged rows -------------------------------------------------------------------

    @abc.abstractmethod
    def acknowledge(self, sync_id: str, run_id: int, acks: pa.Table) -> None:
        """Record rows Heap acknowledged with a 2xx (columns k1, k2, hash). Call only after the 2xx."""

    def latest_sql(self, sync_id: str, *, compact: bool) -> str:
        """SQL for (k1, k2, hash) that Heap holds for ``sync_id``, one row per key.

        With ``compact`` (no unfinished run left duplicates) the table already has one row
        per key and no grouping is needed.
        """
        rows = f"FROM {self.table('sync_state')} WHERE sync_id = {lit(_safe(sync_id))}"
        return f"SELECT k1, k2, hash {rows}" if compact else self._newest(rows)

    def count_keys(self, sync_id: str, *, before: int | None = None) -> int:
        """Rows (one per key, once compact) acknowledged for ``sync_id`` before run ``before``."""
        older = f" AND run_id < {int(before)}" if before is not None else ""
        return int(
            self._one(
                f"SELECT count(*) FROM {self.table('sync_state')} WHERE sync_id = {self._mark(1)}{older}",
                (sync_id,),
            )
        )

    def compact(self, sync_id: str, *, run_id: int) -> None:
        """Drop the rows that run ``run_id`` superseded, keeping one row per key."""
        m = self._mark
        with self._lock:
            if not self.count_keys(sync_id, before=run_id):
                return
            with self._maintenance("compact the acknowledged rows"):
                self._delete(
                    f"s.sync_id = {m(1)} AND s.run_id < {m(2)} AND EXISTS (SELECT 1 FROM "
                    f"{self.table('sync_state')} AS n WHERE n.sync_id = {m(3)} AND n.run_id = {m(4)} "
                    "AND n.k1 = s.k1 AND n.k2 = s.k2)",
                    (sync_id, run_id, sync_id, run_id),
                )

    def remove_missing(
        self, sync_id: str, source_keys_sql: str, *, apply: bool, before_run: int | None = None
    ) -> int:
        """Count (and with ``apply``, forget) keys that are no longer in the model.

        ``source_keys_sql`` yields the model's keys as (k1, k2). Rows acknowledged in run
        ``before_run`` or later are in the model by construction and are not looked at.
        """
        older = f" AND s.run_id < {int(before_run)}" if before_run is not None else ""
        table = self.table("sync_state")
        where = (
            f"s.sync_id = {lit(_safe(sync_id))}{older} AND NOT EXISTS (SELECT 1 FROM ({source_keys_sql}) "
            "AS cur WHERE cur.k1 = s.k1 AND cur.k2 = s.k2)"
        )
        with self._lock:
            if not self._one(
                f"SELECT count(*) FROM (SELECT 1 FROM {table} AS s WHERE s.sync_id = {self._mark(1)}{older} "
                "LIMIT 1) AS x",
                (sync_id,),
            ):
                return 0  # nothing from earlier runs (a first sync): skip scanning the model's keys
            with self._maintenance("find the keys that left the model"):
                removed = int(
                    self._one(
                        f"SELECT count(*) FROM (SELECT DISTINCT k1, k2 FROM {table} AS s WHERE {where}) AS g"
                    )
                )
                if apply and removed:
                    self._delete(where, ())
        return removed

    def forget(self, sync_id: str) -> None:
        """Drop every acknowledged row of ``sync_id`` (``--full-refresh``)."""
        with self._lock, self._maintenance("forget the acknowledged rows"):
            self._delete(f"s.sync_id = {self._mark(1)}", (sync_id,))

    # --- the no-change shortcut ----------------------------------------------------------------

    # --- sync names ------------------------------------------------------------------------

    def has_runs(self, sync_id: str) -> bool:
        if not self.exists:
            return False
        runs = self.table("sync_runs")
        return bool(self._one(f"SELECT count(*) FROM {runs} WHERE sync_id = {self._mark(1)}", (sync_id,)))

    def sync_name(self, name_id: str) -> SyncName | None:
        if not (self.exists and self._names_exist):
            return None
        where = f"{ident('name_id')} = {self._mark(1)}"
        rows = self._run(f"SELECT {_NAME_COLUMNS} FROM {self.table(NAMES_TABLE)} WHERE {where}", (name_id,))
        return _sync_name(rows[0]) if rows else None

    def sync_names(self) -> list[SyncName]:
        if not (self.exists and self._names_exist):
            return []
        rows = self._run(f"SELECT {_NAME_COLUMNS} FROM {self.table(NAMES_TABLE)} ORDER BY {ident('name')}")
        return [_sync_name(r) for r in rows]

    def record_sync_name(self, record: SyncName) -> None:
        table = self.table(NAMES_TABLE)
        values = (*dataclasses.astuple(record), now())  # SyncName's fields are _NAME_KINDS' first
        with self._lock:
            if not self._names_exist:
                cols = ", ".join(f"{ident(c)} {t}" for c, t in self._typed(_NAME_KINDS).items())
                self._run(f"CREATE TABLE IF NOT EXISTS {table} ({cols})")
                self._names_exist = True
            self._run("BEGIN")
            try:
                where = f"{ident('name_id')} = {self._mark(1)}"
                self._run(f"DELETE FROM {table} WHERE {where}", (record.name_id,))
                self._run(f"INSERT INTO {table} ({_NAME_COLUMNS}) VALUES ({self._marks(8)})", values)
            except BaseException:
                self._run("ROLLBACK")
                raise
            self._run("COMMIT")

    def fingerprint(self, sync_id: str) -> str | None:
        if not self.exists:
            return None
        value = self._one(
            f"SELECT fingerprint FROM {self.table('sync_fingerprint')} WHERE sync_id = {self._mark(1)}",
            (sync_id,),
        )
        return None if value is None else str(value)

    def set_fingerprint(self, sync_id: str, fingerprint: str | None, *, run_id: int) -> None:
        table = self.table("sync_fingerprint")
        with self._lock:
            self._run(f"DELETE FROM {table} WHERE sync_id = {self._mark(1)}", (sync_id,))
            if fingerprint is not None:
                self._run(
                    f"INSERT INTO {table} (sync_id, fingerprint, run_id) VALUES ({self._marks(3)})",
                    (sync_id, fingerprint, run_id),
                )


def now() -> dt.datetime:
    """The time as the state stores it: naive UTC."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def _sync_name(row: Sequence[Any]) -> SyncName:
    """A row of ``SELECT {_NAME_COLUMNS}`` as the SyncName it records (``updated_at`` aside)."""
    return SyncName(*(str(v) for v in row[: len(dataclasses.fields(SyncName))]))


def _safe(sync_id: str) -> str:
    # sync ids are hex digests; refuse anything else rather than quote it into SQL.
    if not sync_id.isalnum():
        raise ValueError(f"not a sync id: {sync_id!r}")
    return sync_id
