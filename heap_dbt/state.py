"""The sync state the engine talks to: what Heap acknowledged, per key, and the run log.

Each warehouse package keeps its own ``StateStore`` (``heap_dbt.warehouse.duckdb.state``),
in schema ``heap_dbt`` by default. A store holds:

- the acknowledged rows: per sync and key, the row hash Heap holds, appended only after a
  2xx for the request that carried it; the row with the highest ``run_id`` for a key is the
  one Heap holds, and ``compact`` keeps one row per key;
- a fingerprint of the whole model as of the last run that delivered every row, so that an
  unchanged model is skipped without a diff;
- the run log, one row per sync per run, read by ``heap-dbt history``;
- the webhook delivery log (``heap_dbt.warehouse.deliveries``): what ``heap-dbt serve`` received
  and did, kept so that a restarted server still knows which deliveries it handled.

The diff itself is SQL (``heap_dbt.sql``) joining the model's records to ``latest_sql``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import pyarrow as pa

STATE_VERSION = 1
UNCOMPACTED = "error, state not compacted"  # a run's outcome that makes the next run dedupe


@dataclass(frozen=True)
class RunRecord:
    """One row of the run log."""

    run_id: int
    model: str
    object: str
    meta_path: str
    app_id: str
    full_refresh: bool
    started_at: dt.datetime
    finished_at: dt.datetime | None
    counts: dict[str, int]
    outcome: str

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> RunRecord:
        """A row of ``SELECT {RUN_LOG_COLUMNS}``; a run that never finished shows as interrupted."""
        finished_at, outcome = row[7], row[14]
        return cls(
            run_id=int(row[0]),
            model=row[1],
            object=row[2],
            meta_path=row[3],
            app_id=row[4],
            full_refresh=bool(row[5]),
            started_at=row[6],
            finished_at=finished_at,
            counts={n: int(v or 0) for n, v in zip(_COUNTS, row[8:14], strict=True)},
            outcome="interrupted" if outcome == "running" and finished_at is None else outcome,
        )


@dataclass(frozen=True)
class SyncName:
    """What a sync's name stands for in the state (table ``sync_names``): the state and the
    seeds its rows and events were written under, which a renamed or moved model keeps.

    ``name_id`` hashes the app_id, object and name (the app_id itself is never stored).
    ``model`` is the model that last synced under the name, for messages.
    """

    name_id: str
    name: str
    object: str
    sync_id: str
    key_seed: str
    """Seeds each event's idempotency key (``md5(key_seed:key)``)."""
    definition_seed: str
    """Seeds the record definition, so the row hashes and the fingerprint."""
    model: str


@dataclass(frozen=True)
class DeliveryRecord:
    """One webhook delivery the server received, and what it did with it."""

    event_id: str
    received_at: dt.datetime
    """UTC; tz-aware on the way out of a store (a naive one going in is taken as UTC)."""
    job_id: str
    run_id: str
    decision: str
    """e.g. "sync", "ignored: run status 20 (Error)", "ignored: job 7 is not configured"."""
    outcome: str | None = None
    """Set after the sync, e.g. "success: sent 10, unchanged 0, rejected 1, failed 0"."""

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> DeliveryRecord:
        """A row of the log's first six columns (``heap_dbt.warehouse.deliveries.COLUMNS``, this
        class's fields in order); its naive UTC timestamp made tz-aware."""
        received_at = row[1]
        if received_at.tzinfo is None:
            received_at = received_at.replace(tzinfo=dt.UTC)
        return cls(
            event_id=str(row[0]),
            received_at=received_at.astimezone(dt.UTC),
            job_id=str(row[2]),
            run_id=str(row[3]),
            decision=str(row[4]),
            outcome=None if row[5] is None else str(row[5]),
        )


_COUNTS = ("read", "sent", "unchanged", "rejected", "failed", "removed")
RUN_LOG_COLUMNS = (
    "run_id, model, object, meta_path, app_id, full_refresh, started_at, finished_at, "
    "read, sent, unchanged, rejected, failed, removed, outcome"
)
"""The run log's columns in the order ``RunRecord.from_row`` reads them."""


class StateStore(Protocol):
    """Where a warehouse keeps heap-dbt's sync state; every method may raise StateError."""

    exists: bool
    """False for a dry run against a state that was never written: every row is then new."""

    def begin_run(
        self, *, sync_id: str, model: str, obj: str, meta_path: str, app_id: str, full_refresh: bool
    ) -> int:
        """Log the start of a sync; its run id, higher than any before."""
        ...

    def finish_run(self, run_id: int, *, counts: dict[str, int], outcome: str) -> None: ...

    def history(self, *, limit: int) -> list[RunRecord]:
        """The last ``limit`` runs, newest first."""
        ...

    def interrupted(self, sync_id: str, *, before: int | None = None) -> bool:
        """True if an earlier run of ``sync_id`` never finished or could not compact."""
        ...

    def recover(self, sync_id: str, *, before: int) -> None:
        """After an interrupted run, keep one row per key again."""
        ...

    def latest_sql(self, sync_id: str, *, compact: bool) -> str:
        """SQL, in the warehouse's dialect, for the (k1, k2, hash) Heap holds, one row per key."""
        ...

    def count_keys(self, sync_id: str, *, before: int | None = None) -> int: ...

    def acknowledge(self, sync_id: str, run_id: int, acks: pa.Table) -> None:
        """Record rows Heap acknowledged with a 2xx (columns k1, k2, hash). Call only after the 2xx."""
        ...

    def compact(self, sync_id: str, *, run_id: int) -> None:
        """Drop the rows that run ``run_id`` superseded."""
        ...

    def remove_missing(
        self, sync_id: str, source_keys_sql: str, *, apply: bool, before_run: int | None = None
    ) -> int:
        """Count (and with ``apply``, forget) keys that are no longer in the model."""
        ...

    def forget(self, sync_id: str) -> None:
        """Drop every acknowledged row of ``sync_id`` (``--full-refresh``)."""
        ...

    def fingerprint(self, sync_id: str) -> str | None: ...

    def has_runs(self, sync_id: str) -> bool:
        """True if the run log has any run of ``sync_id``."""
        ...

    def sync_name(self, name_id: str) -> SyncName | None:
        """The sync name recorded under ``name_id``, if any."""
        ...

    def sync_names(self) -> list[SyncName]:
        """Every sync name recorded."""
        ...

    def record_sync_name(self, record: SyncName) -> None:
        """Insert or replace the record of ``record.name_id``."""
        ...

    def set_fingerprint(self, sync_id: str, fingerprint: str | None, *, run_id: int) -> None: ...

    def record_deliveries(self, records: Sequence[DeliveryRecord]) -> None:
        """Insert, or update by event_id (decision and outcome of a record already kept)."""
        ...

    def deliveries(self, *, limit: int) -> list[DeliveryRecord]:
        """The last ``limit`` deliveries, newest first (received_at, then insertion order)."""
        ...

    def seen_event_ids(self) -> set[str]:
        """Every event id kept (for dedupe across a restart)."""
        ...
