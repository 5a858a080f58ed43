"""The Python API under concurrency: syncs from one event loop share an app's rate limit, and
two syncs of one project run one after the other. Real dbt-built projects, real HTTP to the emulator.

Heap's limits count events per minute. So that a test need not wait minutes, heap-dbt and
the emulator both read one clock that runs ``SPEED`` times faster than real time: a
minute of limits passes in a few real seconds, and both sides agree on it.

heap-dbt counts an event when it lets the request go, the emulator when the request
arrives. A request that spends longer in flight than the one admitted a minute after it
arrives late enough to look like one too many, so the emulator's window is shorter than a
minute by ``IN_FLIGHT`` (0.4 s of real time): the time a request may spend on loopback on a
loaded machine.
"""

from __future__ import annotations

import asyncio
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import heap_dbt
from heap_dbt.emulator import (
    RATE_WINDOW_SECONDS,
    HeapEmulator,
    KeyedRateWindow,
    RunningEmulator,
    run_in_thread,
)
from heap_dbt.report import SyncReport
from heap_dbt.warehouse.duckdb import DuckDBReader
from tests.conftest import APP_ID, clean_env

pytestmark = pytest.mark.integration

SPEED = 5.0
LIMIT = 50
"""Events per (emulated) minute, for the emulator and heap-dbt alike; each project has 40 events."""
IN_FLIGHT = 2.0
"""Emulated seconds a request may spend between heap-dbt's limiter and the emulator."""


class FastClock:
    """Real time, ``SPEED`` times faster: what heap-dbt waits for and the emulator counts."""

    def __init__(self) -> None:
        self._start = time.monotonic()

    def monotonic(self) -> float:
        return (time.monotonic() - self._start) * SPEED

    def time(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds) / SPEED)


@pytest.fixture
def clock() -> FastClock:
    return FastClock()


@pytest.fixture
def limited(clock: FastClock) -> Iterator[RunningEmulator]:
    """An emulator that answers 429 to any request that would pass LIMIT events per minute per app
    (less IN_FLIGHT)."""
    emulator = HeapEmulator(events_per_minute=LIMIT, time_fn=clock.monotonic)
    emulator._app_window = KeyedRateWindow(LIMIT, window=RATE_WINDOW_SECONDS - IN_FLIGHT)
    with run_in_thread(emulator=emulator) as running:
        yield running


@pytest.fixture
def two_projects(project: Path, built_sample: Path, tmp_path: Path) -> tuple[Path, Path]:
    """Two dbt projects (two warehouses) whose events go to one Heap app."""
    other = tmp_path / "other" / "heap_demo"
    shutil.copytree(built_sample, other)
    return project, other


def purchases(project: Path, emulator: RunningEmulator, clock: FastClock) -> dict[str, object]:
    return {
        "project_dir": project, "select": "heap_purchases", "app_id": APP_ID, "base_url": emulator.url,
        "events_per_minute": LIMIT, "events_per_identity_per_minute": 0, "batch_size": 10,
        "clock": clock, "env": clean_env(),
    }  # fmt: skip


def delivered(report: SyncReport) -> int:
    (result,) = report.syncs
    assert result.ok and result.read == 40, result
    return result.sent


@pytest.mark.timeout(120)  # two emulated minutes of rate limits, plus two syncs on a loaded machine
def test_two_concurrent_syncs_of_one_app_share_its_limit(
    two_projects: tuple[Path, Path], limited: RunningEmulator, clock: FastClock
) -> None:
    async def both() -> list[SyncReport]:
        return list(
            await asyncio.gather(*(heap_dbt.sync_async(**purchases(p, limited, clock)) for p in two_projects))
        )

    started = clock.monotonic()
    reports = asyncio.run(both())
    took = clock.monotonic() - started

    state = limited.emulator.snapshot()
    assert [delivered(r) for r in reports] == [40, 40]
    assert len(state["events"]) == 40 and state["duplicate_events"] == 40  # the same events, twice
    # The emulator refuses any request that would pass LIMIT events in a minute: no refusal
    # means the two syncs together kept within one limit; 80 events need more than a minute.
    assert state["status_counts"].get("429", 0) == 0, state["status_counts"]
    assert took > RATE_WINDOW_SECONDS


@pytest.mark.timeout(120)  # as above
def test_syncs_in_two_event_loops_do_not_share_a_limit(
    two_projects: tuple[Path, Path], limited: RunningEmulator, clock: FastClock
) -> None:
    """The control: each thread's loop has its own limiter, so together they pass Heap's
    limit and the emulator refuses some requests (heap-dbt then waits and retries)."""
    reports: list[SyncReport] = []
    start = threading.Barrier(2)

    def one(project: Path) -> None:
        start.wait()
        reports.append(heap_dbt.sync(**purchases(project, limited, clock)))

    threads = [threading.Thread(target=one, args=(p,)) for p in two_projects]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=100)

    assert [delivered(r) for r in reports] == [40, 40]
    assert limited.emulator.snapshot()["status_counts"].get("429", 0) > 0


def test_two_concurrent_syncs_of_one_project_run_one_after_the_other(
    project: Path, emulator: RunningEmulator
) -> None:
    """They would write one sync state: the second waits, then finds every row unchanged."""
    options = {"project_dir": project, "app_id": APP_ID, "base_url": emulator.url, "env": clean_env()}

    async def both() -> list[SyncReport]:
        return list(await asyncio.gather(heap_dbt.sync_async(**options), heap_dbt.sync_async(**options)))

    first, second = sorted(asyncio.run(both()), key=lambda r: r.started_at)
    if sum(s.sent for s in second.syncs):  # whichever took the lock first sent everything
        first, second = second, first

    assert first.exit_code == second.exit_code == 0
    assert sum(s.sent for s in first.syncs) == 36 + 12 + 40
    assert all(s.skipped_unchanged and s.unchanged == s.read > 0 for s in second.syncs)
    state = emulator.emulator.snapshot()
    assert len(state["events"]) == 40 and state["duplicate_events"] == 0


def test_a_sync_from_another_thread_of_the_same_state_is_refused_clearly(
    project: Path, emulator: RunningEmulator
) -> None:
    """Another thread's event loop cannot wait on this one's lock: DuckDB opens a file once
    per process, and heap-dbt says so instead of passing DuckDB's error on."""
    holder = DuckDBReader((project / "heap_demo.duckdb").resolve(), writable=True)  # a sync in progress
    try:
        with pytest.raises(heap_dbt.StateError, match="another sync in this process has it open") as caught:
            heap_dbt.sync(project_dir=project, app_id=APP_ID, base_url=emulator.url, env=clean_env())
    finally:
        holder.close()
    assert caught.value.exit_code == 2
    assert emulator.emulator.snapshot()["requests"] == {}
