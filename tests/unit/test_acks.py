"""The Acker: acknowledged rows reach the sync state in batches, by size or age, in order, or a StateError."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from heap_dbt.acks import Acker
from heap_dbt.errors import StateError
from heap_dbt.warehouse.duckdb.state import DuckDBState
from tests.fakes import FakeClock

SYNC = "a1b2c3d4e5f60718"


@pytest.fixture
def state(tmp_path: Path) -> Iterator[DuckDBState]:
    con = duckdb.connect(str(tmp_path / "wh.duckdb"))
    store = DuckDBState(con, catalog="wh", schema="heap_dbt", writable=True)
    store.open()
    yield store
    store.close()
    con.close()


def batch(start: int, n: int) -> pa.RecordBatch:
    """``n`` acknowledged rows as the sender hands them over; the names are not the state's."""
    keys = pa.array(range(start, start + n), pa.uint64())
    return pa.RecordBatch.from_arrays([keys, keys, pa.array([7] * n, pa.uint64())], names=["a", "b", "c"])


def recorded(state: DuckDBState) -> list[int]:
    """The keys in the state, read on a cursor of its own: a flush may be writing on the state's."""
    with state._con.cursor() as cursor:
        rows = cursor.execute(f"SELECT k1 FROM {state.table('sync_state')} ORDER BY k1").fetchall()
    return [r[0] for r in rows]


async def eventually_recorded(state: DuckDBState, rows: int) -> list[int]:
    """The recorded keys once ``rows`` are there (a flush runs on a worker thread), else what is."""
    deadline = time.monotonic() + 10
    while len(found := recorded(state)) < rows and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    return found


async def test_rows_wait_for_a_full_batch_then_reach_the_state(state: DuckDBState) -> None:
    acker = Acker(state, SYNC, 1, clock=FakeClock(), batch_rows=10)

    acker.add(batch(0, 4))
    acker.add(batch(4, 4))
    await asyncio.sleep(0.05)
    assert recorded(state) == []  # 8 rows: below the batch, and the clock has not moved

    acker.add(batch(8, 2))
    assert await eventually_recorded(state, 10) == list(range(10))
    await acker.close()


async def test_a_batch_older_than_max_age_is_written_at_the_next_add(state: DuckDBState) -> None:
    clock = FakeClock()
    acker = Acker(state, SYNC, 1, clock=clock, batch_rows=1000, max_age=1.0)

    acker.add(batch(0, 1))
    clock.advance(1.0)
    acker.add(batch(1, 1))

    assert await eventually_recorded(state, 2) == [0, 1]
    await acker.close()


async def test_close_writes_what_is_pending_under_the_run_and_the_state_column_names(
    state: DuckDBState,
) -> None:
    acker = Acker(state, SYNC, 42, clock=FakeClock())
    acker.add(batch(0, 3))

    await acker.close()

    rows = state._con.execute(
        f"SELECT sync_id, k1, k2, hash, run_id FROM {state.table('sync_state')}"
    ).fetchall()
    assert sorted(rows) == [(SYNC, i, i, 7, 42) for i in range(3)]


async def test_a_pending_row_keeps_no_reference_to_the_batch_it_came_from(state: DuckDBState) -> None:
    """A slice would hold the whole Arrow batch (records included) until the flush."""
    big = batch(0, 1_000_000)
    acker = Acker(state, SYNC, 1, clock=FakeClock())
    before = pa.total_allocated_bytes()

    acker.add(big.slice(5, 1))
    del big

    assert before >= 16_000_000  # two 8 MB columns (k1 and k2 share one)
    assert pa.total_allocated_bytes() < 1_000_000  # freed: the pending row is a copy
    await acker.close()
    assert recorded(state) == [5]


class SlowState:
    """A state whose writes take a while and note how many ran at once, and in what order."""

    def __init__(self, *, fail: bool = False) -> None:
        self.fail = fail
        self.written: list[list[int]] = []
        self.running = 0
        self.most_at_once = 0
        self._lock = threading.Lock()

    def acknowledge(self, sync_id: str, run_id: int, acks: pa.Table) -> None:
        with self._lock:
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        time.sleep(0.02)
        with self._lock:
            self.running -= 1
        if self.fail:
            raise RuntimeError("disk full")
        assert acks.column_names == ["k1", "k2", "hash"]
        self.written.append(acks.column("k1").to_pylist())


async def test_writes_run_one_at_a_time_in_the_order_taken() -> None:
    slow = SlowState()
    acker = Acker(slow, SYNC, 1, clock=FakeClock(), batch_rows=2)  # type: ignore[arg-type]

    for start in range(0, 10, 2):
        acker.add(batch(start, 2))
    await acker.close()

    assert slow.most_at_once == 1
    assert slow.written == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]


async def test_closing_with_nothing_pending_writes_nothing() -> None:
    slow = SlowState()
    acker = Acker(slow, SYNC, 1, clock=FakeClock())  # type: ignore[arg-type]

    await acker.flush()
    await acker.close()

    assert slow.written == []


async def test_a_failed_write_is_a_state_error_at_close_saying_the_rows_go_again() -> None:
    acker = Acker(SlowState(fail=True), SYNC, 1, clock=FakeClock(), batch_rows=2)  # type: ignore[arg-type]
    acker.add(batch(0, 2))  # written by size, in the background
    acker.add(batch(2, 1))  # written by close

    with pytest.raises(
        StateError,
        match=r"could not be recorded in the sync state \(disk full\); the next run sends them again",
    ):
        await acker.close()
