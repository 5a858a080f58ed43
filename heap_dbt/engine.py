"""The sync pipeline: per planned sync (``heap_dbt.plan``), read -> frame -> send -> acknowledge -> account.

The warehouse builds every record (``heap_dbt.sql``); this module streams those records as
Arrow batches from a worker thread, cuts them into bulk requests (``heap_dbt.bodies``), and
keeps up to ``concurrency`` requests in flight while the next batch is read. Acknowledged
rows go to the state (``heap_dbt.acks``). Every row read ends in exactly one count of its
``SyncResult``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import importlib
import itertools
import random
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from heap_dbt import heap, sql
from heap_dbt.acks import Acker
from heap_dbt.bodies import Chunk, request_bounds, take_sample
from heap_dbt.errors import ConfigError, OutOfMemoryError, RetriableAPIError, StateError, WarehouseError
from heap_dbt.manifest import load_run_results
from heap_dbt.plan import NO_APP_ID, Prepared, SyncOptions, base_url, plan_specs, prepare
from heap_dbt.profiles import ProjectPaths, resolve_project, resolve_target
from heap_dbt.ratelimit import Clock, EventRateLimiter, SystemClock
from heap_dbt.report import RowIssue, SyncReport, SyncResult
from heap_dbt.state import UNCOMPACTED, DuckDBState, rows_as_dicts
from heap_dbt.warehouse import WarehouseReader, open_reader

if TYPE_CHECKING:
    from heap_dbt.transport import Transport

ARROW_BATCH_ROWS = 10_000
ProgressFn = Callable[[str, int, int | None], None]
"""progress(sync label, rows just done, total rows or None)"""


class _SyncRun:
    """Sends the records of one sync and keeps its counts."""

    def __init__(
        self,
        prepared: Prepared,
        result: SyncResult,
        *,
        transport: Transport | None,
        slots: asyncio.Semaphore,
        limiter: EventRateLimiter | None,
        options: SyncOptions,
        clock: Clock,
        abort: dict[str, str],
        rng: random.Random | None = None,
        acker: Acker | None = None,
    ) -> None:
        self.spec = prepared.spec
        self.result = result
        self.path, _ = heap.ENDPOINTS[self.spec.object]
        self.app_id = prepared.app_id
        self.prefix, self.suffix = heap.body_frame(self.spec.object, prepared.app_id)
        self.transport = transport
        self.slots = slots
        self.limiter = limiter if self.spec.object == "event" else None
        self.policy = heap.RetryPolicy(max_attempts=options.max_attempts)
        self.clock = clock
        self.rng = rng or random.Random()  # noqa: S311  # jitter, not crypto
        self.acker = acker
        self.batch_size = options.batch_size
        self.known_streamed = 0
        """Streamed rows whose key Heap already had (changed or now rejected)."""
        self.batches = 0
        """Batches read: before the first one, nothing was sent or counted."""
        self.notes: list[str] = []
        """Warnings for the report."""
        self.abort = abort

    def _fail(self, chunk: Chunk, reason: str) -> None:
        self.result.failed += len(chunk)
        self.result.failures += [RowIssue(k, reason) for k in chunk.keys.to_pylist()]

    async def send(self, chunk: Chunk) -> None:
        """Deliver ``chunk``: retry what may pass later, bisect what Heap refuses."""
        attempt = 0
        body = b"".join((self.prefix, chunk.joined(), self.suffix))
        while True:
            if "reason" in self.abort:
                self._fail(chunk, f"not sent: {self.abort['reason']}")
                return
            attempt += 1
            if self.limiter is not None:
                await self.limiter.admit(len(chunk), chunk.identity_counts())
            assert self.transport is not None  # dry runs never send
            retry_after: float | None = None
            try:
                response = await self.transport.post(self.path, body)
            except RetriableAPIError as exc:
                outcome, reason = heap.Outcome.RETRY, str(exc)
            else:
                self.result.requests += 1
                outcome = heap.classify(response.status)
                excerpt = heap.error_excerpt(response.text, secret=self.app_id)  # may echo the body
                reason = f"HTTP {response.status}: {excerpt or 'no message'}"
                retry_after = heap.parse_retry_after(response.retry_after, now=time.time())
            if outcome is heap.Outcome.DELIVERED:
                self.result.sent += len(chunk)
                if self.acker is not None and chunk.acks is not None:
                    self.acker.add(chunk.acks)  # only ever after a 2xx
                return
            if outcome is heap.Outcome.SPLIT:
                if len(chunk) == 1:
                    self.result.rejected += 1
                    self.result.rejections.append(
                        RowIssue(chunk.keys[0].as_py(), f"Heap refused the record: {reason}")
                    )
                    return
                left, right = chunk.split()
                await asyncio.gather(self.send(left), self.send(right))
                return
            if outcome is heap.Outcome.FATAL:
                self.abort.setdefault("reason", f"Heap refused a request with {reason}")
                self._fail(chunk, reason)
                return
            if attempt >= self.policy.max_attempts:
                self._fail(chunk, f"{reason} (gave up after {attempt} attempts)")
                return
            self.result.retries += 1
            await self.clock.sleep(self.policy.delay(attempt, retry_after=retry_after, rng=self.rng))

    async def send_in_slot(self, chunk: Chunk) -> None:
        try:
            await self.send(chunk)
        finally:
            self.slots.release()


async def _stream(
    prepared: Prepared,
    query: sql.RecordQuery,
    reader: WarehouseReader,
    run: _SyncRun,
    *,
    dry_run: bool,
    progress: ProgressFn | None,
) -> int:
    """Stream the rows ``query`` yields, reject, send; return how many rows it yielded.

    The common path touches each batch only through Arrow metadata and one buffer slice
    per request; pyarrow.compute runs only for rejected rows, truncation counts and the
    per-identity event limit.
    """
    result = run.result
    spec = prepared.spec
    limit = min(run.batch_size, heap.MAX_ITEMS_PER_REQUEST)
    if run.limiter is not None:
        limit = run.limiter.max_batch(limit)
    stream = reader.stream(query.sql, batch_rows=ARROW_BATCH_ROWS)
    pending: asyncio.Future[Any] = asyncio.ensure_future(asyncio.to_thread(next, stream, None))
    tasks: set[asyncio.Task[None]] = set()
    streamed = 0
    try:
        while (batch := await pending) is not None:
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
            run.known_streamed += n - new.true_count
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
            fresh = new.true_count
            result.new += fresh
            result.changed += len(rows) - fresh
            if query.can_truncate:
                import pyarrow.compute as pc

                result.truncated += int(pc.sum(batch.column(sql.TRUNCATED)).as_py() or 0)
            if dry_run:
                result.would_send += len(rows)
                if not result.sample and len(rows):
                    result.sample = take_sample(rows.records, prepared.app_id, spec.object)
            elif len(rows):
                bounds = request_bounds(rows.records, max_items=limit, max_bytes=heap.MAX_BODY_BYTES)
                for start, end in bounds:
                    await run.slots.acquire()
                    task = asyncio.create_task(run.send_in_slot(rows.slice(start, end - start)))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
            if progress is not None:
                progress(result.model, n, None)
    finally:
        if tasks:
            await asyncio.gather(*tasks)
        if not pending.done():
            await asyncio.wait([pending])
    return streamed


def _import_in_background(module: str) -> None:
    """Start importing ``module`` on a daemon thread; the first real import waits for it.

    A failure is left to that real import to report.
    """
    if module in sys.modules:
        return

    def load() -> None:
        with contextlib.suppress(Exception):
            importlib.import_module(module)

    threading.Thread(target=load, name=f"import {module}", daemon=True).start()


@dataclass
class _Read:
    """What the read phase of one sync learnt, for the bookkeeping after it."""

    fingerprint: str
    skipped: bool = False
    previous: str | None = None
    known_keys: int = 0
    repeated: int = 0


async def _read_and_send(
    prepared: Prepared,
    reader: WarehouseReader,
    run: _SyncRun,
    *,
    state: DuckDBState | None,
    options: SyncOptions,
    progress: ProgressFn | None,
    sync_id: str,
    run_id: int,
    lean: bool,
) -> _Read:
    """Probe the model, then (unless it is unchanged) diff it against the state and send it,
    all on one snapshot of the warehouse. ``lean``: lower DuckDB's memory for a plain stream."""
    result = run.result
    writing = state is not None and not options.dry_run
    with reader.snapshot():
        known = state is not None and state.exists and not options.full_refresh
        stored = state.fingerprint(sync_id) if known and state is not None else None
        repeated: int | None = None
        if stored is None:  # nothing to compare with: one scan for the fingerprint and the keys
            if not options.dry_run:
                _import_in_background("aiohttp")  # 0.1 s, hidden behind the DuckDB work
            probe = reader.fetch_one(prepared.query.probe_duplicates_sql)
            repeated = int(probe[2])
        else:
            probe = reader.fetch_one(prepared.query.probe_sql)
        total = int(probe[0])
        read = _Read(prepared.query.fingerprint(probe))
        if stored is not None and stored == read.fingerprint:
            # The model is exactly as it was when Heap acknowledged every row of it.
            result.read = result.unchanged = total
            result.skipped_unchanged = read.skipped = True
            return read
        if writing:
            assert state is not None
            state.set_fingerprint(sync_id, None, run_id=run_id)
        if state is not None and state.exists and options.full_refresh:
            result.removed += state.remove_missing(sync_id, prepared.query.keys_sql, apply=writing)
            if writing:
                state.forget(sync_id)
        if known and state is not None:
            if writing:
                state.recover(sync_id, before=run_id)
            compact = writing or not state.interrupted(sync_id)
            read.known_keys = state.count_keys(sync_id, before=run_id if writing else None)
            if read.known_keys:  # else Heap holds nothing of this sync yet: every row is new, no join
                read.previous = state.latest_sql(sync_id, compact=compact)
        if repeated is None:
            if not options.dry_run:
                _import_in_background("aiohttp")
            repeated = int(reader.fetch_one(prepared.query.duplicates_sql)[0])
        read.repeated = repeated
        dup_table = None
        if repeated > 0:  # rare: list the repeated keys once, then join that small table
            dup_table = reader.register("heap_dbt_dup_keys", prepared.query.duplicate_keys_sql)
        query = prepared.build(
            previous=read.previous, duplicates_table=dup_table, identities=run.limiter is not None
        )
        if lean and read.previous is None and dup_table is None:
            reader.fit(query.width, pipeline=True)
        streamed = await _stream(prepared, query, reader, run, dry_run=options.dry_run, progress=progress)
        result.read = total
        result.unchanged = total - streamed
    return read


async def _run_one(
    prepared: Prepared,
    reader: WarehouseReader,
    run: _SyncRun,
    *,
    state: DuckDBState | None,
    options: SyncOptions,
    progress: ProgressFn | None,
) -> None:
    """One sync: skip it if the model is unchanged, else diff in the warehouse and send."""
    result = run.result
    spec = prepared.spec
    sync_id = spec.sync_id(prepared.app_id)
    writing = state is not None and not options.dry_run
    run_id = 0
    if writing:
        assert state is not None
        run_id = state.begin_run(
            sync_id=sync_id, model=spec.model.name, obj=spec.object, meta_path=spec.meta_path,
            app_id=result.app_id, full_refresh=options.full_refresh,
        )  # fmt: skip
        run.acker = Acker(state, sync_id, run_id)
    outcome = "error"
    try:
        reader.fit(prepared.query.width)
        for attempt in itertools.count():
            try:
                read = await _read_and_send(
                    prepared, reader, run, state=state, options=options, progress=progress,
                    sync_id=sync_id, run_id=run_id, lean=attempt == 0,
                )  # fmt: skip
                break
            except OutOfMemoryError:
                # DuckDB aborted the snapshot. Before the first batch nothing was sent or
                # counted, so the sync can start over with more memory.
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
                    sync_id, prepared.query.keys_sql, apply=writing, before_run=run_id if writing else None
                )
        if writing:
            assert state is not None
            state.compact(sync_id, run_id=run_id)
            if result.ok:
                state.set_fingerprint(sync_id, read.fingerprint, run_id=run_id)
        outcome = "success" if result.ok else "partial"
    except (WarehouseError, StateError) as exc:
        result.error = str(exc)
        if not result.read:
            # The read stopped part-way: what was read is exactly what was handled.
            result.read = result.accounted
        if run.acker is not None and state is not None:
            # Rows Heap acknowledged stay acknowledged, and the state keeps one row per key.
            with contextlib.suppress(StateError):
                await run.acker.close()
            try:
                state.compact(sync_id, run_id=run_id)
            except StateError:
                outcome = UNCOMPACTED  # the next run dedupes the state first
    finally:
        if writing and state is not None:
            state.finish_run(run_id, counts=result.counts(), outcome=outcome)


async def _run_async(
    plan: list[Prepared],
    reader: WarehouseReader,
    report: SyncReport,
    options: SyncOptions,
    *,
    state: DuckDBState | None,
    transport: Transport | None,
    clock: Clock,
    progress: ProgressFn | None,
) -> None:
    slots = asyncio.Semaphore(options.concurrency)
    limiter = EventRateLimiter(
        per_app=options.events_per_minute,
        per_identity=options.events_per_identity_per_minute,
        clock=clock,
    )
    abort: dict[str, str] = {}
    for prepared in plan:
        result = SyncResult(
            model=prepared.spec.model.name,
            unique_id=prepared.spec.model.unique_id,
            object=prepared.spec.object,
            meta_path=prepared.spec.meta_path,
            app_id=heap.mask_app_id(prepared.app_id) if prepared.app_id != NO_APP_ID else NO_APP_ID,
        )
        report.syncs.append(result)
        run = _SyncRun(
            prepared, result, transport=transport, slots=slots,
            limiter=limiter if limiter.active else None, options=options, clock=clock, abort=abort,
        )  # fmt: skip
        started = time.perf_counter()
        await _run_one(prepared, reader, run, state=state, options=options, progress=progress)
        report.warnings += run.notes
        result.seconds = time.perf_counter() - started


def run_sync(
    options: SyncOptions,
    *,
    transport: Transport | None = None,
    clock: Clock | None = None,
    progress: ProgressFn | None = None,
) -> SyncReport:
    """Run ``heap-dbt sync``: validate everything, then send, and write the results file.

    Never exits the process. Raises ConfigError (nothing was sent) for any configuration
    problem, StateError for an unusable state; row-level problems go into the report.
    """
    report = SyncReport(
        dry_run=options.dry_run, full_refresh=options.full_refresh, started_at=dt.datetime.now(dt.UTC)
    )
    url = base_url(options)  # a plain http URL to another host is refused before anything is read
    paths, manifest, specs, problems = plan_specs(options)
    run_results = load_run_results(paths.target_path / "run_results.json")
    run_args = run_results.args if run_results else {}
    if not specs and not problems:
        report.finished_at = dt.datetime.now(dt.UTC)
        report.write(paths.target_path)
        return report
    target = resolve_target(
        paths, profiles_dir=options.profiles_dir, target=options.target, run_args=run_args, env=options.env
    )
    reader = open_reader(
        target,
        project_dir=paths.project_dir,
        writable=not options.dry_run,
        state_path=_state_path(options, paths),
        memory_limit=options.memory_limit or options.env.get("HEAP_DBT_MEMORY_LIMIT"),
    )
    try:
        plan = prepare(specs, reader, options, problems)
        if problems:
            raise ConfigError(
                f"The Heap sync configuration has {len(problems)} problem"
                f"{'s' if len(problems) > 1 else ''}; nothing was sent. Fix "
                f"{'them' if len(problems) > 1 else 'it'} and re-run:",
                problems=problems,
            )
        state = reader.state(schema=options.state_schema, writable=not options.dry_run)
        if run_results:
            # Another invocation's results (after `dbt parse`, which writes only the manifest)
            # still tell the last build of a model that has not been built since.
            same = run_results.invocation_id == manifest.invocation_id
            for p in plan:
                status = run_results.statuses.get(p.spec.model.unique_id)
                if status in ("error", "skipped"):
                    name = p.spec.model.name
                    when = "its last run" if same else (
                        f"an earlier run ({paths.target_path / 'run_results.json'} is from another "
                        "dbt invocation than manifest.json)"
                    )  # fmt: skip
                    report.warnings.append(
                        f"dbt reported {name} as {status} in {when}; its table may be stale. "
                        f"Rebuild it first (`dbt run -s +{name}`)."
                    )
        clk = clock or SystemClock()

        async def main() -> None:
            async def go(http: Transport | None) -> None:
                await _run_async(
                    plan, reader, report, options, state=state, transport=http, clock=clk, progress=progress
                )

            if options.dry_run or transport is not None:
                await go(transport)
                return
            from heap_dbt.transport import AiohttpTransport  # aiohttp costs 0.2 s to import

            async with AiohttpTransport(
                url, concurrency=options.concurrency, timeout=options.timeout
            ) as http:
                await go(http)

        asyncio.run(main())
    finally:
        reader.close()
    report.finished_at = dt.datetime.now(dt.UTC)
    report.write(paths.target_path)
    return report


def _state_path(options: SyncOptions, paths: ProjectPaths) -> Path | None:
    path = options.state_path
    if path is None and options.env.get("HEAP_DBT_STATE_PATH"):
        path = Path(options.env["HEAP_DBT_STATE_PATH"])
    if path is not None and not path.is_absolute():
        path = paths.project_dir / path
    return path


def read_history(options: SyncOptions, *, limit: int) -> list[dict[str, Any]]:
    """The last ``limit`` runs from the run log, newest first."""
    paths = resolve_project(project_dir=options.project_dir, target_path=options.target_path, env=options.env)
    run_results = load_run_results(paths.target_path / "run_results.json")
    target = resolve_target(
        paths, profiles_dir=options.profiles_dir, target=options.target,
        run_args=run_results.args if run_results else {}, env=options.env,
    )  # fmt: skip
    reader = open_reader(target, project_dir=paths.project_dir, state_path=_state_path(options, paths))
    try:
        state = reader.state(schema=options.state_schema, writable=False)
        return rows_as_dicts(state.history(limit=limit)) if state is not None else []
    finally:
        reader.close()
