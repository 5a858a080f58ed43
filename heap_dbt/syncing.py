"""One model's sync: probe, diff, stream, frame, send, acknowledge, account.

The warehouse builds every record (``heap_dbt.sql``); this module streams those records as
Arrow batches from a worker thread, cuts them into bulk requests (``heap_dbt.bodies``), and
keeps up to ``concurrency`` requests in flight (``heap_dbt.sender``) while the next batch is
read. Acknowledged rows go to the state (``heap_dbt.acks``). Every row read ends in exactly
one count of its ``SyncResult``. ``heap_dbt.engine`` plans the syncs and runs them here.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import itertools
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from heap_dbt import heap, identity, sql
from heap_dbt.acks import Acker
from heap_dbt.bodies import Chunk, request_bounds
from heap_dbt.clock import Clock
from heap_dbt.errors import OutOfMemoryError, StateError, WarehouseError
from heap_dbt.plan import Prepared, SyncOptions
from heap_dbt.ratelimit import RateLimits
from heap_dbt.report import RowIssue, SyncReport, SyncResult, take_sample
from heap_dbt.sender import Cancellation, Delivery, Sender
from heap_dbt.state import UNCOMPACTED, StateStore
from heap_dbt.warehouse import WarehouseReader, hash_sum

if TYPE_CHECKING:
    from heap_dbt.transport import Transport

ProgressFn = Callable[[str, int, int | None], None]
"""progress(sync label, rows just done, total rows or None)"""


@dataclass
class SyncContext:
    """What every sync of one ``run_sync`` shares."""

    reader: WarehouseReader
    state: StateStore | None
    options: SyncOptions
    clock: Clock
    progress: ProgressFn | None
    transport: Transport | None
    slots: asyncio.Semaphore
    """One per request in flight, across all syncs."""
    limits: RateLimits
    """Heap's limits and the pause after a 429, one set per app_id."""
    cancellation: Cancellation

    @property
    def writing(self) -> bool:
        return self.state is not None and not self.options.dry_run


class SyncRun:
    """One sync's sender, acknowledgements and counts."""

    def __init__(self, prepared: Prepared, result: SyncResult, ctx: SyncContext) -> None:
        self.prepared = prepared
        self.spec = prepared.spec
        self.result = result
        self.frame = heap.Frame.of(self.spec.object, prepared.app_id)
        self.identity = identity.resolve(self.spec, prepared.app_id, ctx.state)
        self.sync_id = self.identity.sync_id
        self.prepared = prepared.identified(
            key_seed=self.identity.key_seed, definition_seed=self.identity.definition_seed
        )
        result.sync_name = self.spec.name
        result.new_sync = not self.identity.known
        limits = ctx.limits.for_app(prepared.app_id)
        events = self.spec.object == "event"
        self.sender: Sender | None = None
        if ctx.transport is not None:  # else a dry run, which sends nothing
            policy = heap.RetryPolicy(max_attempts=ctx.options.max_attempts)
            self.sender = Sender(
                ctx.transport, clock=ctx.clock, policy=policy, limits=limits, events=events,
                cancellation=ctx.cancellation,
            )  # fmt: skip
        self.batch_limit = min(ctx.options.batch_size, heap.MAX_ITEMS_PER_REQUEST)
        if events:
            self.batch_limit = limits.max_batch(self.batch_limit)
        self.counts_identities = events and limits.events is not None
        self.run_id = 0
        """This sync's row in the run log (0 when nothing is written)."""
        self.acker: Acker | None = None
        self.known_streamed = 0
        """Streamed rows whose key Heap already had (changed or now rejected)."""
        self.batches = 0
        """Batches read: before the first one, nothing was sent or counted."""
        self.hash_sum: int | None = None
        """The sum of the streamed rows' hashes, when the fingerprint is added up from the stream."""
        self.notes: list[str] = []
        """Warnings for the report."""

    def account(self, delivery: Delivery) -> None:
        """Add what became of a chunk to the counts; record what Heap acknowledged."""
        result = self.result
        result.sent += delivery.sent
        result.rejected += len(delivery.rejected)
        result.rejections += delivery.rejected
        result.failed += len(delivery.failed)
        result.failures += delivery.failed
        result.requests += delivery.requests
        result.retries += delivery.retries
        if self.acker is not None:
            for part in delivery.delivered:
                if part.acks is not None:
                    self.acker.add(part.acks)  # only ever after a 2xx

    async def send_in_slot(self, chunk: Chunk, slots: asyncio.Semaphore) -> None:
        try:
            assert self.sender is not None  # dry runs never send
            self.account(await self.sender.send(self.frame, chunk))
        finally:
            slots.release()


async def _stream(ctx: SyncContext, run: SyncRun, query: sql.RecordQuery) -> int:
    """Stream the rows ``query`` yields, reject, send; return how many rows it yielded.

    The common path touches each batch only through Arrow metadata and one buffer slice
    per request; pyarrow.compute runs only for rejected rows, truncation counts and the
    per-identity event limit.
    """
    result = run.result
    stream = ctx.reader.records(query, batch_rows=ctx.options.arrow_batch_rows)
    pending: asyncio.Future[Any] = asyncio.ensure_future(asyncio.to_thread(next, stream, None))
    tasks: set[asyncio.Task[None]] = set()
    streamed = 0
    try:
        # Shielded: a cancelled sync waits (below) for the batch being read, so that the reader
        # is never closed under a thread still reading from it.
        while (batch := await asyncio.shield(pending)) is not None:
            # Read the next batch while this one is framed and sent.
            pending = asyncio.ensure_future(asyncio.to_thread(next, stream, None))
            n = batch.num_rows
            streamed += n
            run.batches += 1
            reasons = batch.column(sql.REASON)
            rows = Chunk(
                batch.column(sql.RECORD),
                batch.column(sql.KEY),
                batch.column(sql.IDENTITY) if query.has_identity else None,
                batch.select([sql.K1, sql.K2, sql.HASH]),
            )
            new = batch.column(sql.NEW)
            nulls = batch.column(sql.NULLS) if query.counts_nulls else None
            run.known_streamed += n - new.true_count
            if run.hash_sum is not None:
                run.hash_sum += hash_sum(batch.column(sql.HASH))
            if reasons.null_count != n:
                import pyarrow.compute as pc

                bad = pc.is_valid(reasons)
                for key, why in zip(
                    rows.keys.filter(bad).to_pylist(), reasons.filter(bad).to_pylist(), strict=True
                ):
                    result.rejections.append(RowIssue(key, why))
                result.rejected += n - reasons.null_count
                good = pc.invert(bad)
                rows = rows.filter(good)
                new = new.filter(good)
                nulls = nulls.filter(good) if nulls is not None else None
            fresh = new.true_count
            result.new += fresh
            result.changed += len(rows) - fresh
            if query.can_truncate:
                import pyarrow.compute as pc

                result.truncated += int(pc.sum(batch.column(sql.TRUNCATED)).as_py() or 0)
            if nulls is not None:
                import pyarrow.compute as pc

                result.nulls_kept += int(pc.sum(nulls).as_py() or 0)
            if ctx.options.dry_run:
                result.would_send += len(rows)
                if not result.sample and len(rows):
                    result.sample = take_sample(rows.records, run.prepared.app_id, run.spec.object)
            elif len(rows):
                limits = {"max_items": run.batch_limit, "max_bytes": run.frame.room}
                for start, end in request_bounds(rows.records, **limits):
                    await ctx.slots.acquire()
                    task = asyncio.create_task(run.send_in_slot(rows.slice(start, end - start), ctx.slots))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
            if ctx.progress is not None:
                ctx.progress(result.model, n, None)
    finally:
        if tasks:
            await asyncio.gather(*tasks)
        if not pending.done():
            await asyncio.wait([pending])
    return streamed


def _import_in_background(module: str) -> None:
    """Start importing ``module`` on a thread; the first real import waits for it.

    A failure is left to that real import to report. Not a daemon thread: the interpreter
    shutting down while a daemon thread is inside an extension module's import can abort it.
    """
    if module in sys.modules:
        return

    def load() -> None:
        with contextlib.suppress(Exception):
            importlib.import_module(module)

    threading.Thread(target=load, name=f"import {module}").start()


@dataclass
class _Read:
    """What the read phase of one sync learnt, for the bookkeeping after it."""

    fingerprint: str
    skipped: bool = False
    previous: str | None = None
    known_keys: int = 0
    repeated: int = 0


async def _read_and_send(ctx: SyncContext, run: SyncRun, *, lean: bool) -> _Read:
    """Probe the model, then (unless it is unchanged) diff it against the state and send it,
    all on one snapshot of the warehouse. ``lean``: lower DuckDB's memory for a plain stream."""
    result, options, state, reader = run.result, ctx.options, ctx.state, ctx.reader
    query = run.prepared.query
    sync_id, run_id, writing = run.sync_id, run.run_id, ctx.writing
    with reader.snapshot():
        known = state is not None and state.exists and not options.full_refresh
        stored = state.fingerprint(sync_id) if known and state is not None else None
        repeated: int | None = None
        probe: tuple[Any, ...] | None = None
        if stored is None:  # nothing to compare with: scan for the keys (and the fingerprint)
            if not options.dry_run:
                _import_in_background("aiohttp")  # 0.1 s, hidden behind the warehouse's work
            _import_in_background("duckdb")  # the formatting DuckDB of another warehouse
            # Where the fingerprint is the sum of the row hashes, a sync that streams every
            # row adds it up from the stream (below): the model is scanned once less.
            if not reader.dialect.streamed_fingerprint:
                probe = reader.fetch_one(query.probe_duplicates_sql)
                repeated = int(probe[2])
        else:
            probe = reader.fetch_one(query.probe_sql)
        read = _Read(query.fingerprint(probe) if probe is not None else "")  # else after the stream
        if stored is not None and stored == read.fingerprint:
            # The model is exactly as it was when Heap acknowledged every row of it.
            assert probe is not None
            result.read = result.unchanged = int(probe[0])
            result.skipped_unchanged = read.skipped = True
            return read
        if writing:
            assert state is not None
            state.set_fingerprint(sync_id, None, run_id=run_id)
        if state is not None and state.exists and options.full_refresh:
            result.removed += state.remove_missing(sync_id, query.keys_sql, apply=writing)
            if writing:
                state.forget(sync_id)
        if known and state is not None:
            if writing:
                state.recover(sync_id, before=run_id)
            compact = writing or not state.interrupted(sync_id)
            read.known_keys = state.count_keys(sync_id, before=run_id if writing else None)
            if read.known_keys:  # else Heap holds nothing of this sync yet: every row is new, no join
                read.previous = state.latest_sql(sync_id, compact=compact)
        if probe is None and read.previous is not None:  # only part of the model streams
            probe = reader.fetch_one(query.probe_sql)
            read.fingerprint = query.fingerprint(probe)
        if repeated is None:
            if not options.dry_run:
                _import_in_background("aiohttp")
            repeated = int(reader.fetch_one(query.duplicates_sql)[0])
        read.repeated = repeated
        dup_table = None
        if repeated > 0:  # rare: list the repeated keys once, then join that small table
            dup_table = reader.register("heap_dbt_dup_keys", query.duplicate_keys_sql)
        records = run.prepared.build(
            previous=read.previous, duplicates_table=dup_table, identities=run.counts_identities
        )
        if lean and read.previous is None and dup_table is None:
            reader.fit(records.width, pipeline=True)
        summing = probe is None  # every row streams: the fingerprint is their hashes' sum
        run.hash_sum = 0 if summing else None
        streamed = await _stream(ctx, run, records)
        if probe is None:
            probe = (streamed, str(run.hash_sum))
            read.fingerprint = query.fingerprint(probe)
        result.read = int(probe[0])
        result.unchanged = result.read - streamed
    return read


async def _run_one(ctx: SyncContext, run: SyncRun) -> None:
    """One sync: skip it if the model is unchanged, else diff in the warehouse and send."""
    result, state, reader = run.result, ctx.state, ctx.reader
    spec, sync_id = run.spec, run.sync_id
    writing = ctx.writing
    if writing:
        assert state is not None
        if run.identity.record != run.identity.stored:
            state.record_sync_name(run.identity.record)
        run.run_id = state.begin_run(
            sync_id=sync_id, model=spec.model.name, obj=spec.object, meta_path=spec.meta_path,
            app_id=result.app_id, full_refresh=ctx.options.full_refresh,
        )  # fmt: skip
        run.acker = Acker(state, sync_id, run.run_id, clock=ctx.clock)
        result.run_id = run.run_id
    outcome: str | None = "error"
    try:
        reader.fit(run.prepared.query.width)
        for attempt in itertools.count():
            try:
                read = await _read_and_send(ctx, run, lean=attempt == 0)
                break
            except OutOfMemoryError:
                # The warehouse aborted the snapshot. Before the first batch nothing was sent
                # or counted, so the sync can start over with more memory.
                if run.batches or (grown := reader.grow()) is None:
                    raise
                run.notes.append(
                    f"{spec.model.name}: DuckDB ran out of memory; heap-dbt started the sync again with "
                    f"{grown}. Pass --memory-limit {grown} (or more) to start there."
                )
        if read.skipped:
            outcome = "success"
            return
        if run.acker is not None:
            await run.acker.close()
        if read.previous is not None and state is not None:
            # Without repeated keys, every key Heap holds that is still in the model was either
            # unchanged or streamed as known; fewer than that means keys left the model.
            missing = read.known_keys - (result.unchanged + run.known_streamed)
            if missing > 0 or read.repeated > 0:
                result.removed = state.remove_missing(
                    sync_id, run.prepared.query.keys_sql, apply=writing,
                    before_run=run.run_id if writing else None,
                )  # fmt: skip
        if writing:
            assert state is not None
            state.compact(sync_id, run_id=run.run_id)
            if result.ok:
                state.set_fingerprint(sync_id, read.fingerprint, run_id=run.run_id)
        outcome = "success" if result.ok else "partial"
    except (WarehouseError, StateError) as exc:
        # Mid-run, such an error ends this sync only: it is reported, and the exit code is 1.
        result.error = str(exc)
        if not result.read:
            # The read stopped part-way: what was read is exactly what was handled.
            result.read = result.accounted
        if run.acker is not None and state is not None:
            # Rows Heap acknowledged stay acknowledged, and the state keeps one row per key.
            with contextlib.suppress(StateError):
                await run.acker.close()
            try:
                state.compact(sync_id, run_id=run.run_id)
            except StateError:
                outcome = UNCOMPACTED  # the next run dedupes the state first
    except asyncio.CancelledError:
        # Stopped from outside (``heap-dbt serve`` shutting down): keep what Heap acknowledged,
        # and leave the run unfinished, as a crash leaves it, so that the run log shows it
        # interrupted and the next run compacts the state before it diffs.
        outcome = None
        if run.acker is not None:
            with contextlib.suppress(StateError):
                await run.acker.close()
        raise
    finally:
        if writing and state is not None and outcome is not None:
            state.finish_run(run.run_id, counts=result.counts(), outcome=outcome)


async def run_all(ctx: SyncContext, plan: list[Prepared], report: SyncReport) -> None:
    """Run the planned syncs one after another, each into a SyncResult of ``report``."""
    for prepared in plan:
        spec = prepared.spec
        result = SyncResult(
            model=spec.model.name,
            unique_id=spec.model.unique_id,
            object=spec.object,
            meta_path=spec.meta_path,
            app_id=heap.NO_APP_ID if prepared.app_id == heap.NO_APP_ID else heap.mask_app_id(prepared.app_id),
        )
        report.syncs.append(result)
        run = SyncRun(prepared, result, ctx)
        if not run.identity.known:
            declared = {(p.spec.object, p.spec.name) for p in plan}
            for old in identity.orphans(spec, ctx.state, declared):
                report.warnings.append(
                    f"{spec.label}: sync {spec.name!r} is new, so heap-dbt holds no state for it and "
                    f"{'would send' if ctx.options.dry_run else 'sends'} every row"
                    f"{' (events under new idempotency keys)' if spec.object == 'event' else ''}. The state "
                    f"holds sync {old.name!r} of this model, which nothing declares now: if it is the same "
                    f"sync, set `name: {old.name}` in the block to continue it."
                )
        started = ctx.clock.monotonic()
        await _run_one(ctx, run)
        report.warnings += run.notes
        result.seconds = ctx.clock.monotonic() - started
