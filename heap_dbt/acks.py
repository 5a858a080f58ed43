"""Recording what Heap acknowledged: rows written to the sync state in batches, never before a 2xx."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from heap_dbt.errors import StateError

if TYPE_CHECKING:
    import pyarrow as pa

    from heap_dbt.clock import Clock
    from heap_dbt.state import StateStore

ACK_BATCH_ROWS = 122_880  # one DuckDB row group: written straight to the file, not through the WAL
ACK_MAX_AGE = 1.0  # seconds: a crash costs at most about this much of resends


class Acker:
    """Writes acknowledged rows to the state in batches, never before Heap's 2xx."""

    def __init__(
        self,
        state: StateStore,
        sync_id: str,
        run_id: int,
        *,
        clock: Clock,
        batch_rows: int = ACK_BATCH_ROWS,
        max_age: float = ACK_MAX_AGE,
    ) -> None:
        self._state = state
        self._sync_id = sync_id
        self._run_id = run_id
        self._batch_rows = batch_rows
        self._max_age = max_age
        self._clock = clock
        self._last_flush = clock.monotonic()
        self._pending: list[pa.RecordBatch] = []
        self._pending_rows = 0
        self._lock = asyncio.Lock()
        self._tasks: list[asyncio.Future[None]] = []

    def add(self, acks: pa.RecordBatch) -> None:
        import pyarrow as pa

        # Copy the three columns: a slice would keep the whole Arrow batch it came from
        # (records included) alive until the flush, tens of MB per flush.
        acks = pa.RecordBatch.from_arrays(
            [pa.concat_arrays([c]) for c in acks.columns], names=acks.schema.names
        )
        self._pending.append(acks)
        self._pending_rows += acks.num_rows
        # Flush by size, and by age so that a crash costs at most ~a second of resends.
        age = self._clock.monotonic() - self._last_flush
        if self._pending_rows >= self._batch_rows or age >= self._max_age:
            self._tasks.append(asyncio.ensure_future(self._write(self._take())))

    def _take(self) -> list[pa.RecordBatch]:
        """Hand over what is pending: the adds that follow start a new batch."""
        batches, self._pending, self._pending_rows = self._pending, [], 0
        self._last_flush = self._clock.monotonic()
        return batches

    async def _write(self, batches: list[pa.RecordBatch]) -> None:
        """Write ``batches``; the writes run one at a time, in the order taken."""
        import pyarrow as pa

        if not batches:
            return
        table = pa.Table.from_batches(batches).rename_columns(["k1", "k2", "hash"])
        async with self._lock:
            await asyncio.to_thread(self._state.acknowledge, self._sync_id, self._run_id, table)

    async def flush(self) -> None:
        """Write what is pending now."""
        await self._write(self._take())

    async def close(self) -> None:
        """Write what is pending; raise StateError if any write failed (the rows stay unrecorded)."""
        tasks, self._tasks = self._tasks, []
        outcomes = await asyncio.gather(*tasks, self.flush(), return_exceptions=True)
        failures = [o for o in outcomes if isinstance(o, BaseException)]
        if failures:
            raise StateError(
                f"Heap acknowledged rows that could not be recorded in the sync state ({failures[0]}); "
                "the next run sends them again."
            ) from failures[0]
