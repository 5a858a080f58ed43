"""The webhook delivery log of a sync state: the one implementation every state store runs.

``heap-dbt serve`` records each dbt Cloud webhook delivery it receives and what it did with
it (``heap_dbt.state.DeliveryRecord``) in table ``webhook_deliveries`` of the state schema,
so that a restarted server still knows which event ids it handled: dbt Cloud retries a
delivery within minutes, and keeps its own delivery log for 30 days; so does this log.

A state written by an earlier heap-dbt has no such table, and needs none to sync: a
writable store creates it the first time it records (one CREATE TABLE, atomic on every
engine), and until then reads find nothing. Each store passes in how it runs a statement
and spells a parameter, and its column types; the SQL itself is the same everywhere.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from heap_dbt.errors import StateError
from heap_dbt.sql import ident
from heap_dbt.state import DeliveryRecord

DELIVERIES_TABLE = "webhook_deliveries"
KEEP = dt.timedelta(days=30)
"""Deliveries older than this are dropped whenever new ones are recorded."""
COLUMNS = ("event_id", "received_at", "job_id", "run_id", "decision", "outcome", "seq")
"""The table's columns: ``DeliveryRecord``'s fields, then ``seq``, which orders deliveries
received at the same instant. Quoted in every statement, as created (Snowflake folds an
unquoted name to upper case)."""
_EVENT_ID, _RECEIVED_AT, _, _, _DECISION, _OUTCOME, _SEQ = (ident(c) for c in COLUMNS)
_ALL = ", ".join(ident(c) for c in COLUMNS)
_RECORD = ", ".join(ident(c) for c in COLUMNS[:-1])

Run = Callable[[str, Sequence[Any]], list[tuple[Any, ...]]]
"""Run one statement with parameters; its rows (none for a statement without a result).
Raises StateError."""


def merge(records: Sequence[DeliveryRecord]) -> list[DeliveryRecord]:
    """One record per event id, in the order first seen; a later record of an event id sets
    its decision and outcome, as recording it again would."""
    merged: dict[str, DeliveryRecord] = {}
    for record in records:
        first = merged.get(record.event_id)
        merged[record.event_id] = (
            record if first is None else replace(first, decision=record.decision, outcome=record.outcome)
        )
    return list(merged.values())


def utc_naive(moment: dt.datetime) -> dt.datetime:
    """How the log stores a time: naive UTC (a naive ``moment`` is taken as UTC already)."""
    if moment.tzinfo is None:
        return moment
    return moment.astimezone(dt.UTC).replace(tzinfo=None)


class DeliveryLog:
    """The delivery log table of one state store.

    ``run`` runs a statement on the store's connection, ``mark(i)`` spells the i-th
    parameter (from 1) in its driver's style, ``types`` maps each of ``COLUMNS`` to the
    engine's type. ``exists``: the table was there when the store opened. The store
    serialises calls (its own lock) and keeps other writers off the state (its lock on
    the state), so ``seq`` can be ``max + 1``.
    """

    def __init__(
        self,
        run: Run,
        *,
        table: str,
        types: Mapping[str, str],
        mark: Callable[[int], str],
        where: str,
        writable: bool,
    ) -> None:
        self._run = run
        self._table = table
        self._types = types
        self._mark = mark
        self._where = where
        self.writable = writable
        self.exists = False

    def _marks(self, n: int) -> str:
        return ", ".join(self._mark(i) for i in range(1, n + 1))

    def record(self, records: Sequence[DeliveryRecord]) -> None:
        """Insert new event ids; for one already kept, set its decision and outcome (its
        received_at, job and run stay as first recorded). Then drop every delivery received
        more than KEEP ago, this one's included. One transaction."""
        if not self.writable:
            raise StateError(
                f"Cannot record webhook deliveries in the heap-dbt state in {self._where}: it was opened "
                "read-only (as a dry run opens it). Open it writable to record them."
            )
        batch = merge(records)
        if not batch:
            return
        table, m = self._table, self._mark
        if not self.exists:
            cols = ", ".join(f"{ident(c)} {self._types[c]}" for c in COLUMNS)
            self._run(f"CREATE TABLE IF NOT EXISTS {table} ({cols}, PRIMARY KEY ({_EVENT_ID}))", ())
            self.exists = True
        cutoff = utc_naive(dt.datetime.now(dt.UTC)) - KEEP
        ids = [r.event_id for r in batch]
        self._run("BEGIN", ())
        try:
            known = {
                str(r[0])
                for r in self._run(
                    f"SELECT {_EVENT_ID} FROM {table} WHERE {_EVENT_ID} IN ({self._marks(len(ids))})", ids
                )
            }
            seq = int(self._run(f"SELECT coalesce(max({_SEQ}), 0) FROM {table}", ())[0][0])
            for r in batch:
                if r.event_id in known:
                    self._update(r)
                    continue
                seq += 1
                values, params = self._bind(
                    [r.event_id, utc_naive(r.received_at), r.job_id, r.run_id, r.decision, r.outcome, seq]
                )
                self._run(f"INSERT INTO {table} ({_ALL}) VALUES ({', '.join(values)})", params)
            self._run(f"DELETE FROM {table} WHERE {_RECEIVED_AT} < {m(1)}", [cutoff])
        except BaseException:
            with contextlib.suppress(StateError):
                self._run("ROLLBACK", ())
            raise
        self._run("COMMIT", ())

    def _update(self, r: DeliveryRecord) -> None:
        (decision, outcome, event_id), params = self._bind([r.decision, r.outcome, r.event_id])
        self._run(
            f"UPDATE {self._table} SET {_DECISION} = {decision}, {_OUTCOME} = {outcome} "
            f"WHERE {_EVENT_ID} = {event_id}",
            params,
        )

    def _bind(self, values: Sequence[Any]) -> tuple[list[str], list[Any]]:
        """Each value as a parameter mark, or NULL for None: a NULL parameter has no type that
        every driver can bind (PostgreSQL's ADBC driver refuses one)."""
        marks: list[str] = []
        params: list[Any] = []
        for value in values:
            if value is None:
                marks.append("NULL")
            else:
                params.append(value)
                marks.append(self._mark(len(params)))
        return marks, params

    def last(self, *, limit: int) -> list[DeliveryRecord]:
        """The last ``limit`` deliveries, newest first: by received_at, then the order recorded."""
        if not self.exists:
            return []
        rows = self._run(
            f"SELECT {_RECORD} FROM {self._table} ORDER BY {_RECEIVED_AT} DESC, {_SEQ} DESC "
            f"LIMIT {int(limit)}",
            (),
        )
        return [DeliveryRecord.from_row(r) for r in rows]

    def seen(self) -> set[str]:
        """Every event id in the log."""
        if not self.exists:
            return set()
        return {str(r[0]) for r in self._run(f"SELECT {_EVENT_ID} FROM {self._table}", ())}


class DeliveryLogMixin:
    """A state store's delivery-log methods (``heap_dbt.state.StateStore``): its ``_log``,
    each call under its ``_lock``."""

    _log: DeliveryLog
    _lock: threading.Lock

    def record_deliveries(self, records: Sequence[DeliveryRecord]) -> None:
        with self._lock:
            self._log.record(records)

    def deliveries(self, *, limit: int) -> list[DeliveryRecord]:
        with self._lock:
            return self._log.last(limit=limit)

    def seen_event_ids(self) -> set[str]:
        with self._lock:
            return self._log.seen()
