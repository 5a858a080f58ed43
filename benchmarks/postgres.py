"""``make bench-postgres``: 1M users synced from PostgreSQL, against the limit of getting the
same Heap JSON out of Postgres and shipped.

    python -m benchmarks.postgres --rows 1000000

Builds a users model with dbt-postgres in a database of its own (dropped at the end), then
times, with the sink as Heap: a first sync, a no-op re-sync, and a re-sync after 1% of the
rows changed (each checked against the sink's exact record count). The limit is the fastest
way measured to get the records out and shipped: ADBC streaming the raw columns into DuckDB's
record SQL, framed and POSTed by plain aiohttp in one process while the next batch is read
(what heap-dbt does, without the diff, the state or the acknowledgements). Two parts are also
timed alone: reading, the faster of that stream and Postgres building the JSON itself over
COPY, and shipping, plain aiohttp POSTing the same bodies. The slower of the two is the bound a
pipeline could reach with perfect overlap of reading and shipping, which on a machine whose
cores both do each is out of reach; it is reported beside the limit.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.limits import http_limit
from benchmarks.project import BenchProject, ProjectBuildError, changed_rows, dbt_command
from benchmarks.sink import SinkProcess
from benchmarks.syncs import APP_ID, expect_records, log, time_sync
from heap_dbt import heap, sql
from heap_dbt.config import parse_specs, resolve_columns
from heap_dbt.manifest import load_manifest
from heap_dbt.warehouse.postgres.profile import parse_profile
from heap_dbt.warehouse.postgres.reader import PostgresReader

HOST, PORT, USER = "127.0.0.1", 5432, "postgres"

_USERS_SQL = """\
select
    'user' || lpad(i::text, 9, '0') || '@example.com' as email,
    i as user_id,
    (array['Ada', 'Grace', 'Alan', 'Edsger', 'Barbara'])[1 + i % 5] || ' '
        || (array['Lovelace', 'Hopper', 'Turing', 'Dijkstra', 'Liskov'])[1 + (i / 5) % 5] as full_name,
    case when i % 100 < {{ var('changed_pct') }} then 'changed'
         else (array['free', 'starter', 'pro', 'enterprise'])[1 + (i * 7) % 4] end as plan,
    cast(((i::bigint * 37) % 1000000) / 100.0 as numeric(12, 2)) as lifetime_value,
    cast(((i::bigint * 2654435761) % 100000) / 1000.0 as double precision) as engagement_score,
    cast((i * 13) % 500 as integer) as sessions_30d,
    i % 3 <> 0 as is_activated,
    case when i % 5 = 0 then null
         else timestamp '2024-01-01 00:00:00' + ((i::bigint * 7919) % 31536000) * interval '1 second' end
        as last_seen_at,
    case when i % 4 = 0 then null
         else (array['beta', 'dark_mode', 'sso', 'exports', 'ai_assist'])[1:i % 5] end as feature_flags
from generate_series(0, {{ var('rows') }} - 1) as t(i)
"""
_SCHEMA = """\
version: 2
models:
  - name: bench_users
    config:
      meta:
        heap: {object: user, key: email}
"""


def _admin(statement: str, dbname: str = "postgres") -> list[tuple[Any, ...]]:
    import psycopg2

    con = psycopg2.connect(host=HOST, port=PORT, user=USER, dbname=dbname)
    con.autocommit = True
    try:
        with con.cursor() as cur:
            cur.execute(statement)
            return list(cur.fetchall()) if cur.description else []
    finally:
        con.close()


def write_project(root: Path, database: str) -> BenchProject:
    (root / "models").mkdir(parents=True, exist_ok=True)
    (root / "dbt_project.yml").write_text(
        "name: heap_bench\nversion: '1.0.0'\nconfig-version: 2\nprofile: heap_bench\n"
        "model-paths: ['models']\ntarget-path: target\nvars: {rows: 10000, changed_pct: 0}\n"
        "models: {heap_bench: {+materialized: table}}\n"
    )
    (root / "profiles.yml").write_text(
        f"heap_bench:\n  target: pg\n  outputs:\n    pg:\n      type: postgres\n      host: {HOST}\n"
        f"      port: {PORT}\n      user: {USER}\n      password: ''\n      dbname: {database}\n"
        "      schema: public\n      threads: 1\n"
    )
    (root / "models" / "bench_users.sql").write_text(_USERS_SQL)
    (root / "models" / "schema.yml").write_text(_SCHEMA)
    return BenchProject(root=root.resolve(), database=root / "unused.duckdb")


def build(project: BenchProject, *, rows: int, changed_pct: int = 0) -> None:
    import subprocess

    cmd = [
        *dbt_command(), "run", "--project-dir", str(project.root), "--profiles-dir", str(project.root),
        "--vars", json.dumps({"rows": rows, "changed_pct": changed_pct}), "--quiet",
    ]  # fmt: skip
    done = subprocess.run(cmd, cwd=project.root, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise ProjectBuildError((done.stdout + done.stderr)[-3000:])


def _reader(project: BenchProject, database: str) -> tuple[PostgresReader, Any]:
    manifest = load_manifest(project.root / "target" / "manifest.json")
    problems: list[str] = []
    (spec,) = parse_specs(list(manifest.heap_models()), problems)
    creds = {"type": "postgres", "host": HOST, "port": PORT, "user": USER, "dbname": database}
    reader = PostgresReader(parse_profile("pg", creds))
    assert spec.model.relation_name is not None
    columns = reader.columns(spec.model.relation_name)
    resolved = resolve_columns(spec, [c.name for c in columns], problems)
    query = sql.record_query(
        resolved,
        columns,
        key_seed=spec.name,
        definition_seed=spec.name,
        dialect=reader.dialect,
        duplicates=False,
    )
    return reader, (resolved, columns, query)


def adbc_duckdb_export(project: BenchProject, database: str) -> tuple[float, int, list[bytes]]:
    """ADBC streams the raw columns, DuckDB's record SQL builds the JSON (heap-dbt's way, no diff)."""
    reader, (_, _, query) = _reader(project, database)
    rows = 0
    sample: list[bytes] = []
    started = time.perf_counter()
    try:
        for batch in reader.records(query, batch_rows=10_000):
            records = batch.column(sql.RECORD)
            rows += len(records)
            if len(sample) < heap.MAX_ITEMS_PER_REQUEST:
                sample += [r.encode()[: -len(sql.SEPARATOR)] for r in records.slice(0, 1000).to_pylist()]
    finally:
        reader.close()
    return time.perf_counter() - started, rows, sample[: heap.MAX_ITEMS_PER_REQUEST]


def adbc_duckdb_shipped(
    project: BenchProject, database: str, base_url: str, *, concurrency: int
) -> tuple[float, int]:
    """The fastest whole pipeline measured: ADBC + DuckDB's records (as ``adbc_duckdb_export``)
    framed as heap-dbt frames them and POSTed to the sink by plain aiohttp, ``concurrency`` in
    flight, while the next batch is read; no diff, no state, no acknowledgements."""
    import asyncio

    import aiohttp

    from heap_dbt.bodies import Chunk, request_bounds

    reader, (_, _, query) = _reader(project, database)
    frame = heap.Frame.of("user", APP_ID)
    shipped = 0

    async def ship() -> None:
        nonlocal shipped
        slots = asyncio.Semaphore(concurrency)
        tasks: set[asyncio.Task[None]] = set()
        headers = {"Content-Type": "application/json", "User-Agent": "heap-dbt-bench"}
        connector = aiohttp.TCPConnector(limit=concurrency)
        async with aiohttp.ClientSession(connector=connector, headers=headers) as session:

            async def post(body: bytes, n: int) -> None:
                nonlocal shipped
                try:
                    async with session.post(base_url + frame.path, data=body) as response:
                        await response.read()
                        if response.status != 200:
                            raise RuntimeError(f"The sink answered {response.status}.")
                    shipped += n
                finally:
                    slots.release()

            stream = reader.records(query, batch_rows=10_000)
            pending = asyncio.ensure_future(asyncio.to_thread(next, stream, None))
            while (batch := await pending) is not None:
                pending = asyncio.ensure_future(asyncio.to_thread(next, stream, None))
                records = batch.column(sql.RECORD)
                bounds = request_bounds(records, max_items=heap.MAX_ITEMS_PER_REQUEST, max_bytes=frame.room)
                for start, end in bounds:
                    part = records.slice(start, end - start)
                    body = frame.body(Chunk(part, part, None).joined())  # heap-dbt's zero-copy framing
                    await slots.acquire()
                    task = asyncio.create_task(post(body, end - start))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
            await asyncio.gather(*tasks)

    started = time.perf_counter()
    try:
        asyncio.run(ship())
    finally:
        reader.close()
    seconds = time.perf_counter() - started
    return seconds, shipped


def postgres_json_export(database: str, relation: str) -> tuple[float, int]:
    """Postgres builds each record's JSON itself; psycopg2 streams it out over COPY."""
    import psycopg2

    props = (
        "'user_id', user_id, 'full_name', full_name, 'plan', plan, 'lifetime_value', lifetime_value, "
        "'engagement_score', engagement_score, 'sessions_30d', sessions_30d, "
        "'is_activated', CASE WHEN is_activated THEN 'true' ELSE 'false' END, "
        "'last_seen_at', to_char(last_seen_at, 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), "
        "'feature_flags', array_to_string(feature_flags, '||')"
    )
    query = (
        "SELECT json_build_object('identity', email, 'properties', "
        f"json_strip_nulls(json_build_object({props}))) FROM {relation}"
    )

    class Count:
        lines = 0

        def write(self, data: bytes) -> int:
            self.lines += data.count(b"\n")
            return len(data)

    sink = Count()
    con = psycopg2.connect(host=HOST, port=PORT, user=USER, dbname=database)
    started = time.perf_counter()
    try:
        with con.cursor() as cur:
            cur.copy_expert(f"COPY ({query}) TO STDOUT", sink, size=1 << 20)
    finally:
        con.close()
    return time.perf_counter() - started, sink.lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "out" / "postgres.json")
    args = parser.parse_args(argv)
    rows = args.rows
    database = f"heapdbt_bench_{uuid.uuid4().hex[:8]}"
    import tempfile

    _admin(f'CREATE DATABASE "{database}"')
    try:
        with tempfile.TemporaryDirectory(prefix="heap-dbt-bench-pg-") as tmp, SinkProcess() as sink:
            project = write_project(Path(tmp) / "proj", database)
            log(f"dbt run: {rows:,} users in PostgreSQL database {database}")
            build(project, rows=rows)
            relation = f'"{database}"."public"."bench_users"'
            os.environ.pop("HEAP_DBT_STATE_PATH", None)

            log("limit: ADBC + DuckDB record SQL")
            adbc_s, n, sample = adbc_duckdb_export(project, database)
            assert n == rows
            log("limit: Postgres-built JSON over COPY")
            pg_json_s, m = postgres_json_export(database, relation)
            assert m == rows
            log("limit: aiohttp alone")
            http = http_limit(sink.url, "user", sample, rows, concurrency=args.concurrency, app_id=APP_ID)
            bound_s = max(min(adbc_s, pg_json_s), http.seconds)
            log("limit: ADBC + DuckDB + aiohttp, one pipeline")
            sink.reset()
            pipeline_s, shipped = adbc_duckdb_shipped(
                project, database, sink.url, concurrency=args.concurrency
            )
            expect_records("the pipelined limit", sink.stats().records, rows)
            assert shipped == rows
            # Postgres' own JSON is slower to read alone than ADBC's pipeline is whole, so the
            # pipeline is the fastest way measured; were it not, the bound would be the limit.
            limit_s = pipeline_s if pg_json_s > pipeline_s else bound_s

            def sync(**expect: int) -> Any:
                return time_sync(
                    project, sink, "user", expect=expect, concurrency=args.concurrency, timeout=1800
                )

            log("first sync")
            first = sync(read=rows, sent=rows, new=rows)
            log("no-op sync")
            noop = sync(read=rows, sent=0, unchanged=rows)
            changed = changed_rows(rows, 1)
            build(project, rows=rows, changed_pct=1)
            log("sync after 1% changed")
            after = sync(read=rows, sent=changed, changed=changed, unchanged=rows - changed)
    finally:
        _admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')

    result = {
        "rows": rows,
        "limit": {
            "adbc_duckdb_export_s": adbc_s,
            "postgres_json_copy_export_s": pg_json_s,
            "http_s": http.seconds,
            "pipeline_s": pipeline_s,
            "bound_s": bound_s,
            "limit_s": limit_s,
        },
        "first": {"wall_s": first.wall_s, "engine_s": first.engine_s, "peak_rss_mb": first.peak_rss_mb,
                  "sent": first.sent},
        "noop": {"wall_s": noop.wall_s, "engine_s": noop.engine_s, "peak_rss_mb": noop.peak_rss_mb,
                 "sent": noop.sent, "skipped_unchanged": noop.skipped_unchanged},
        "changed_1pct": {"wall_s": after.wall_s, "engine_s": after.engine_s,
                         "peak_rss_mb": after.peak_rss_mb, "sent": after.sent},
        "first_vs_limit": limit_s / first.wall_s,
        "first_vs_bound": bound_s / first.wall_s,
        "noop_vs_first": noop.wall_s / first.wall_s,
        "noop_vs_first_engine": noop.engine_s / first.engine_s,
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(
        "| step | wall s | of which in the sync s | peak RSS MB | sent |\n|---|---|---|---|---|\n"
        + "".join(
            f"| {name} | {r.wall_s:.2f} | {r.engine_s:.2f} | {r.peak_rss_mb:.0f} | {r.sent:,} |\n"
            for name, r in (("first sync", first), ("no-op sync", noop), ("after 1% changed", after))
        )
        + "\n"
        f"Read alone: ADBC + DuckDB {adbc_s:.2f} s, Postgres JSON over COPY {pg_json_s:.2f} s; ship alone "
        f"{http.seconds:.2f} s; the bound with perfect overlap {bound_s:.2f} s. The pipeline (ADBC + "
        f"DuckDB + aiohttp in one process) {pipeline_s:.2f} s: the limit is {limit_s:.2f} s. First sync at "
        f"{result['first_vs_limit']:.2f} of the limit ({result['first_vs_bound']:.2f} of the bound); no-op "
        f"at {result['noop_vs_first']:.1%} of the "
        f"first sync's wall time ({result['noop_vs_first_engine']:.1%} of its time in the sync, without "
        "starting the process and connecting)."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
