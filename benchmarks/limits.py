"""The two halves of a sync measured alone: DuckDB building heap-dbt's records, and aiohttp shipping bodies.

Both use heap-dbt's own pieces where they define the work: the planning (``plan_specs``,
``resolve_columns``), the exact SQL (``sql.record_query``), the reader with its memory
limit, the Arrow batch size, the body framing and the connection limit. A sync can go no
faster than the slower half, so ``pipeline_seconds`` is the larger of the two times.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass

import aiohttp

from benchmarks.project import HEAP_OBJECT, BenchProject
from heap_dbt import heap, sql
from heap_dbt.config import SyncSpec, resolve_columns
from heap_dbt.plan import SyncOptions, plan_specs
from heap_dbt.warehouse.duckdb import DuckDBReader


class PlanError(RuntimeError):
    """The generated project did not plan into exactly one valid sync."""


@dataclass(frozen=True)
class SyncPlan:
    """What heap-dbt would run for one model: the resolved spec and its record query."""

    spec: SyncSpec
    query: sql.RecordQuery

    @property
    def relation(self) -> str:
        assert self.spec.model.relation_name is not None
        return self.spec.model.relation_name


def plan_sync(project: BenchProject, obj: str) -> SyncPlan:
    """Plan the sync of ``obj``'s model exactly as ``heap-dbt sync`` does (manifest, meta, columns)."""
    _, _, specs, problems = plan_specs(SyncOptions(project_dir=project.root, select=[project.model(obj)]))
    if problems or len(specs) != 1:
        raise PlanError(f"Planning {project.model(obj)} gave {len(specs)} syncs and problems {problems}.")
    spec = specs[0]
    assert spec.model.relation_name is not None
    reader = DuckDBReader(project.database)
    try:
        columns = reader.columns(spec.model.relation_name)
    finally:
        reader.close()
    resolved = resolve_columns(spec, [c.name for c in columns], problems)
    if problems:
        raise PlanError(f"Resolving {project.model(obj)}: {problems}")
    # The models have no repeated key, so heap-dbt leaves out the duplicate-key join; so does the limit.
    query = sql.record_query(
        resolved,
        columns,
        key_seed=spec.name,
        definition_seed=spec.name,
        dialect=reader.dialect,
        duplicates=False,
    )
    return SyncPlan(resolved, query)


@dataclass(frozen=True)
class DuckDBLimit:
    seconds: float
    cpu_s: float  # this process's CPU time, DuckDB's threads included
    rows: int
    record_bytes: int
    sample: list[bytes]
    """The first records (up to one request's worth), to build same-size bodies from."""

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds


def duckdb_limit(project: BenchProject, plan: SyncPlan) -> DuckDBLimit:
    """Stream the sync's record query through heap-dbt's reader into an Arrow IPC stream on /dev/null."""
    import pyarrow as pa
    import pyarrow.compute as pc

    keep = heap.MAX_ITEMS_PER_REQUEST
    rows = size = 0
    sample: list[bytes] = []
    started, cpu_started = time.perf_counter(), time.process_time()
    reader = DuckDBReader(project.database)
    reader.fit(plan.query.width)  # sized for the model's width, as heap-dbt sizes its queries
    writer: pa.ipc.RecordBatchStreamWriter | None = None
    try:
        with pa.OSFile(os.devnull, "wb") as devnull:
            for batch in reader.stream(plan.query.sql, batch_rows=SyncOptions().arrow_batch_rows):
                records = batch.column(sql.RECORD)
                if writer is None:
                    writer = pa.ipc.new_stream(devnull, pa.schema([pa.field(sql.RECORD, records.type)]))
                writer.write_batch(pa.record_batch([records], names=[sql.RECORD]))
                rows += len(records)
                size += pc.sum(pc.binary_length(records)).as_py() or 0
                if len(sample) < keep:
                    sample += [r.encode() for r in records.slice(0, keep - len(sample)).to_pylist()]
            if writer is not None:
                writer.close()
    finally:
        reader.close()
    return DuckDBLimit(time.perf_counter() - started, time.process_time() - cpu_started, rows, size, sample)


@dataclass(frozen=True)
class HttpLimit:
    seconds: float
    cpu_s: float  # the client's CPU time only; the sink runs in its own process
    rows: int
    requests: int
    body_bytes: int

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds


def bulk_bodies(obj: str, sample: list[bytes], rows: int, *, app_id: str) -> Iterator[tuple[bytes, int]]:
    """(body, records) pairs carrying ``rows`` records in full requests built from ``sample``."""
    prefix, suffix = heap.body_frame(HEAP_OBJECT[obj], app_id)  # type: ignore[arg-type]  # a Heap object
    per = min(heap.MAX_ITEMS_PER_REQUEST, len(sample))
    if per == 0:
        return
    full = prefix + b",".join(sample[:per]) + suffix
    for _ in range(rows // per):
        yield full, per
    if rows % per:
        yield prefix + b",".join(sample[: rows % per]) + suffix, rows % per


async def _ship(url: str, bodies: Iterator[tuple[bytes, int]], *, concurrency: int) -> tuple[int, int]:
    requests = size = 0
    connector = aiohttp.TCPConnector(limit=concurrency)
    headers = {"Content-Type": "application/json", "User-Agent": "heap-dbt-bench"}
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:

        async def worker() -> None:
            nonlocal requests, size
            for body, _ in bodies:  # one shared iterator: each body goes once
                async with session.post(url, data=body) as response:
                    await response.read()
                    if response.status != 200:
                        raise RuntimeError(f"The sink answered {response.status}.")
                requests += 1
                size += len(body)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return requests, size


def http_limit(
    base_url: str, obj: str, sample: list[bytes], rows: int, *, concurrency: int, app_id: str
) -> HttpLimit:
    """POST ``rows`` records as same-size bulk bodies with plain aiohttp, ``concurrency`` in flight."""
    path, _ = heap.ENDPOINTS[HEAP_OBJECT[obj]]
    bodies = bulk_bodies(obj, sample, rows, app_id=app_id)
    started, cpu_started = time.perf_counter(), time.process_time()
    requests, size = asyncio.run(_ship(base_url + path, bodies, concurrency=concurrency))
    return HttpLimit(time.perf_counter() - started, time.process_time() - cpu_started, rows, requests, size)
