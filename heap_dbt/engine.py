"""The sync pipeline: plan (manifest, meta, columns), then per sync read -> frame -> send -> account.

The warehouse builds every record (``heap_dbt.sql``); this module streams those records as
Arrow batches from a worker thread, cuts them into bulk requests, and keeps up to
``concurrency`` requests in flight while the next batch is read. Every row read ends in
exactly one count of its ``SyncResult``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import importlib
import random
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from heap_dbt import heap, sql
from heap_dbt.config import SyncSpec, parse_specs, resolve_columns
from heap_dbt.errors import ConfigError, RetriableAPIError, StateError, WarehouseError
from heap_dbt.manifest import Manifest, load_manifest, load_run_results, select_models
from heap_dbt.profiles import ProjectPaths, resolve_project, resolve_target
from heap_dbt.ratelimit import Clock, EventRateLimiter, SystemClock
from heap_dbt.report import RowIssue, SyncReport, SyncResult
from heap_dbt.state import UNCOMPACTED, DuckDBState, rows_as_dicts
from heap_dbt.warehouse import Column, MissingRelationError, WarehouseReader, open_reader

if TYPE_CHECKING:
    import pyarrow as pa

    from heap_dbt.transport import Transport

OBJECT_ORDER = {"user": 0, "account": 1, "event": 2}
ACK_BATCH_ROWS = 122_880
ACK_MAX_AGE = 1.0  # seconds
NO_APP_ID = "<app_id>"
ARROW_BATCH_ROWS = 10_000
SAMPLE_RECORDS = 3
ProgressFn = Callable[[str, int, int | None], None]
"""progress(sync label, rows just done, total rows or None)"""


@dataclass(frozen=True, kw_only=True)
class SyncOptions:
    """Everything ``heap-dbt sync`` takes; the CLI fills it from flags and the environment."""

    project_dir: Path | None = None
    profiles_dir: Path | None = None
    target: str | None = None
    target_path: Path | None = None
    select: list[str] | None = None
    exclude: list[str] | None = None
    app_id: str | None = None
    region: str = "us"
    base_url: str | None = None
    concurrency: int = 8
    batch_size: int = heap.MAX_ITEMS_PER_REQUEST
    events_per_minute: int = 15_000
    events_per_identity_per_minute: int = 1_000
    max_attempts: int = 6
    timeout: float = 30.0
    dry_run: bool = False
    full_refresh: bool = False
    state_path: Path | None = None
    """Keep the sync state in this local DuckDB file instead of the warehouse."""
    state_schema: str = "heap_dbt"
    memory_limit: str | None = None
    """DuckDB's memory limit (default 64MB, or HEAP_DBT_MEMORY_LIMIT)."""
    env: Mapping[str, str] = field(default_factory=dict)


def plan_specs(options: SyncOptions) -> tuple[ProjectPaths, Manifest, list[SyncSpec], list[str]]:
    """Read the manifest and the meta of the selected models; no warehouse access.

    Returns the paths, the manifest, the specs that parsed, and every problem found.
    """
    paths = resolve_project(project_dir=options.project_dir, target_path=options.target_path, env=options.env)
    manifest = load_manifest(paths.target_path / "manifest.json")
    chosen = select_models(manifest, select=options.select, exclude=options.exclude)
    models = sorted((m for m in manifest.heap_models() if m.unique_id in chosen), key=lambda m: m.unique_id)
    problems: list[str] = []
    specs = parse_specs(models, problems)
    return paths, manifest, specs, problems


def _resolve_app_id(spec: SyncSpec, options: SyncOptions) -> str | None:
    return spec.app_id or options.app_id or options.env.get("HEAP_APP_ID") or None


def base_url(options: SyncOptions) -> str:
    if options.base_url:
        return options.base_url
    if options.env.get("HEAP_BASE_URL"):
        return options.env["HEAP_BASE_URL"]
    if options.region.lower() == "eu":
        return heap.EU_BASE_URL
    if options.region.lower() != "us":
        raise ConfigError(f"Unknown --region {options.region!r}; use us or eu.")
    return heap.US_BASE_URL


@dataclass
class _Prepared:
    spec: SyncSpec
    app_id: str
    query: sql.RecordQuery
    columns: list[Column] = field(default_factory=list)

    def build(
        self, *, previous: str | None, duplicates_table: str | None, identities: bool
    ) -> sql.RecordQuery:
        """The record query: only rows that differ from ``previous`` when given, with the
        duplicate-key join only when the probe found a repeated key, and event identities
        only for a rate limiter that counts them."""
        return sql.record_query(
            self.spec,
            self.columns,
            model_label=self.spec.label,
            previous=previous,
            duplicates=duplicates_table is not None,
            duplicates_table=duplicates_table,
            identities=identities,
        )


def _prepare(
    specs: list[SyncSpec], reader: WarehouseReader, options: SyncOptions, problems: list[str]
) -> list[_Prepared]:
    """Check every spec against its table and build its query; collect all problems."""
    prepared: list[_Prepared] = []
    for spec in specs:
        where = f"model {spec.model.name}, {spec.meta_path}"
        app_id = _resolve_app_id(spec, options)
        if app_id is None and not options.dry_run:
            problems.append(
                f"{where}: no Heap app_id; pass --app-id, set HEAP_APP_ID, or set app_id in the block."
            )
        assert spec.model.relation_name is not None  # parse_specs skips ephemeral models
        try:
            columns = reader.columns(spec.model.relation_name)
        except MissingRelationError:
            problems.append(
                f"{where}: the table {spec.model.relation_name} does not exist; run `dbt run` "
                f"(or `dbt build`) for {spec.model.name} first."
            )
            continue
        found = len(problems)
        resolved = resolve_columns(spec, [c.name for c in columns], problems)
        types = {c.name: c.type for c in columns}
        if resolved.timestamp and resolved.timestamp in types:
            kind = types[resolved.timestamp].kind
            if kind not in ("timestamp", "timestamptz", "date"):
                problems.append(
                    f"{where}.timestamp: column {resolved.timestamp!r} is {types[resolved.timestamp].sql}; "
                    "cast it to a TIMESTAMP in the model."
                )
        if len(problems) > found:
            continue
        query = sql.record_query(resolved, columns, model_label=spec.label)
        prepared.append(_Prepared(resolved, app_id or NO_APP_ID, query, columns))
    prepared.sort(key=lambda p: (OBJECT_ORDER[p.spec.object], p.spec.model.name, p.spec.meta_path))
    return prepared


@dataclass
class _Chunk:
    """Up to one request's worth of valid records, with their keys."""

    records: pa.Array
    keys: pa.Array
    identities: pa.Array | None
    acks: pa.RecordBatch | None = None
    """What the state records once Heap acknowledges these rows (k1, k2, hash)."""

    def __len__(self) -> int:
        return len(self.records)

    def slice(self, start: int, length: int | None = None) -> _Chunk:
        def cut(a: pa.Array | None) -> pa.Array | None:
            return None if a is None else a.slice(start, length)

        acks = None if self.acks is None else self.acks.slice(start, length)
        return _Chunk(
            self.records.slice(start, length), self.keys.slice(start, length), cut(self.identities), acks
        )

    def filter(self, mask: pa.Array) -> _Chunk:
        def keep(a: pa.Array | None) -> pa.Array | None:
            return None if a is None else a.filter(mask)

        acks = None if self.acks is None else self.acks.filter(mask)
        return _Chunk(self.records.filter(mask), self.keys.filter(mask), keep(self.identities), acks)

    def split(self) -> tuple[_Chunk, _Chunk]:
        mid = len(self) // 2
        return self.slice(0, mid), self.slice(mid)

    def joined(self) -> memoryview:
        """The records joined by commas: a view of the Arrow buffer, nothing copied.

        Every record already ends with ``sql.SEPARATOR``; only the last one is cut off.
        """
        offsets, base, data = _string_buffers(self.records)
        end = offsets[base + len(self.records)] - len(sql.SEPARATOR)
        return data[offsets[base] : end]

    def identity_counts(self) -> dict[str, int]:
        import pyarrow.compute as pc

        if self.identities is None:
            return {}
        counts = pc.value_counts(self.identities).to_pylist()
        return {c["values"]: c["counts"] for c in counts}


def _string_buffers(records: pa.Array) -> tuple[memoryview, int, memoryview]:
    """A string array's value offsets, the index of its first value in them, and its bytes."""
    if str(records.type) not in ("string", "large_string"):
        import pyarrow as pa

        records = records.cast(pa.large_string())
    _, offsets, data = records.buffers()
    view = memoryview(offsets)
    values = memoryview(data) if data is not None else memoryview(b"")
    return view.cast("i") if str(records.type) == "string" else view.cast("q"), records.offset, values


def request_bounds(records: pa.Array, *, max_items: int, max_bytes: int) -> Iterator[tuple[int, int]]:
    """Cut ``records`` (each ending with SEPARATOR) into [start, end) runs within both limits.

    Full runs of ``max_items`` when they fit in ``max_bytes``, which they do unless the
    records are large; else by each record's size (``cut_chunks``).
    """
    n = len(records)
    offsets, base, _ = _string_buffers(records)
    by_count = [(i, min(i + max_items, n)) for i in range(0, n, max_items)]
    if all(offsets[base + end] - offsets[base + start] <= max_bytes for start, end in by_count):
        return iter(by_count)
    sep = len(sql.SEPARATOR)
    lengths = [offsets[base + i + 1] - offsets[base + i] - sep for i in range(n)]
    return cut_chunks(lengths, max_items=max_items, max_bytes=max_bytes)


def cut_chunks(lengths: list[int], *, max_items: int, max_bytes: int) -> Iterator[tuple[int, int]]:
    """Cut records of the given byte ``lengths`` into [start, end) runs within both limits.

    A record larger than ``max_bytes`` goes alone; Heap then decides (413 splits it out).
    """
    start = 0
    size = 0
    for i, n in enumerate(lengths):
        if i > start and (i - start >= max_items or size + n + 1 > max_bytes):
            yield start, i
            start, size = i, 0
        size += n + 1
    if start < len(lengths):
        yield start, len(lengths)


class _SyncRun:
    """Sends the records of one sync and keeps its counts."""

    def __init__(
        self,
        prepared: _Prepared,
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
        self.abort = abort

    def _fail(self, chunk: _Chunk, reason: str) -> None:
        self.result.failed += len(chunk)
        self.result.failures += [RowIssue(k, reason) for k in chunk.keys.to_pylist()]

    async def send(self, chunk: _Chunk) -> None:
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
                reason = f"HTTP {response.status}: {heap.error_excerpt(response.text) or 'no message'}"
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

    async def send_in_slot(self, chunk: _Chunk) -> None:
        try:
            await self.send(chunk)
        finally:
            self.slots.release()


def _take_sample(records: pa.Array, app_id: str, obj: str) -> list[Any]:
    _, array = heap.ENDPOINTS[obj]
    sep = len(sql.SEPARATOR)
    items = [msgspec.json.decode(r[:-sep]) for r in records.slice(0, SAMPLE_RECORDS).to_pylist()]
    shown = app_id if app_id == NO_APP_ID else heap.mask_app_id(app_id)
    return [{"app_id": shown, array: items}]


class Acker:
    """Writes acknowledged rows to the state in batches, never before Heap's 2xx."""

    def __init__(
        self,
        state: DuckDBState,
        sync_id: str,
        run_id: int,
        *,
        batch_rows: int = ACK_BATCH_ROWS,
        max_age: float = ACK_MAX_AGE,
    ) -> None:
        self._state = state
        self._sync_id = sync_id
        self._run_id = run_id
        self._batch_rows = batch_rows
        self._max_age = max_age
        self._last_flush = time.monotonic()
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
        if self._pending_rows >= self._batch_rows or time.monotonic() - self._last_flush >= self._max_age:
            self._tasks.append(asyncio.ensure_future(self._write(self._take())))

    def _take(self) -> list[pa.RecordBatch]:
        """Hand over what is pending: the adds that follow start a new batch."""
        batches, self._pending, self._pending_rows = self._pending, [], 0
        self._last_flush = time.monotonic()
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


async def _stream(
    prepared: _Prepared,
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
            reasons = batch.column(sql.REASON)
            rows = _Chunk(
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
                    result.sample = _take_sample(rows.records, prepared.app_id, spec.object)
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


async def _run_one(
    prepared: _Prepared,
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
            fingerprint = prepared.query.fingerprint(probe)
            if stored is not None and stored == fingerprint:
                # The model is exactly as it was when Heap acknowledged every row of it.
                result.read = result.unchanged = total
                result.skipped_unchanged = True
                outcome = "success"
                return
            if writing:
                assert state is not None
                state.set_fingerprint(sync_id, None, run_id=run_id)
            if state is not None and state.exists and options.full_refresh:
                result.removed = state.remove_missing(sync_id, prepared.query.keys_sql, apply=writing)
                if writing:
                    state.forget(sync_id)
            previous = None
            known_keys = 0
            if known and state is not None:
                if writing:
                    state.recover(sync_id, before=run_id)
                compact = writing or not state.interrupted(sync_id)
                previous = state.latest_sql(sync_id, compact=compact)
                known_keys = state.count_keys(sync_id, before=run_id if writing else None)
                if known_keys == 0:  # Heap holds nothing of this sync yet: every row is new, no join
                    previous = None
            if repeated is None:
                if not options.dry_run:
                    _import_in_background("aiohttp")
                repeated = int(reader.fetch_one(prepared.query.duplicates_sql)[0])
            dup_table = None
            if repeated > 0:  # rare: list the repeated keys once, then join that small table
                dup_table = reader.register("heap_dbt_dup_keys", prepared.query.duplicate_keys_sql)
            query = prepared.build(
                previous=previous, duplicates_table=dup_table, identities=run.limiter is not None
            )
            if previous is None and dup_table is None:
                reader.fit(query.width, pipeline=True)
            streamed = await _stream(prepared, query, reader, run, dry_run=options.dry_run, progress=progress)
            result.read = total
            result.unchanged = total - streamed
        if run.acker is not None:
            await run.acker.close()
        if previous is not None and state is not None:
            # Without repeated keys, every key Heap holds that is still in the model was either
            # unchanged or streamed as known; fewer than that means keys left the model.
            missing = known_keys - (result.unchanged + run.known_streamed)
            if missing > 0 or repeated > 0:
                result.removed = state.remove_missing(
                    sync_id, prepared.query.keys_sql, apply=writing, before_run=run_id if writing else None
                )
        if writing:
            assert state is not None
            state.compact(sync_id, run_id=run_id)
            if result.ok:
                state.set_fingerprint(sync_id, fingerprint, run_id=run_id)
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
    plan: list[_Prepared],
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
    paths, manifest, specs, problems = plan_specs(options)
    run_results = load_run_results(paths.target_path / "run_results.json")
    run_args = run_results.args if run_results else {}
    url = base_url(options)
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
        plan = _prepare(specs, reader, options, problems)
        if problems:
            raise ConfigError(
                f"The Heap sync configuration has {len(problems)} problem"
                f"{'s' if len(problems) > 1 else ''}; nothing was sent. Fix "
                f"{'them' if len(problems) > 1 else 'it'} and re-run:",
                problems=problems,
            )
        state = reader.state(schema=options.state_schema, writable=not options.dry_run)
        if run_results and run_results.invocation_id == manifest.invocation_id:
            for p in plan:
                status = run_results.statuses.get(p.spec.model.unique_id)
                if status in ("error", "skipped"):
                    report.warnings.append(
                        f"dbt reported {p.spec.model.name} as {status} in its last run; its table "
                        "may be stale."
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
