"""Run ``heap-dbt sync`` as a measured child process against the sink, check every count, reset its state.

A timed sync must account for exactly the rows expected: the sink's record count and the
counts in ``target/heap_sync_results.json`` are both checked, and any mismatch stops the
benchmark, because the timing of a sync that did something else would lie.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from benchmarks.measure import run_measured
from benchmarks.project import BenchProject
from benchmarks.results import SyncRun
from benchmarks.sink import SinkProcess
from heap_dbt.report import RESULTS_FILE

APP_ID = "bench"
STATE_SCHEMA = "heap_dbt"  # heap-dbt's default state schema, inside the warehouse's DuckDB file


class BenchmarkError(RuntimeError):
    """A measurement went wrong (a failed sync, a miscount at the sink); the numbers would lie."""


def log(message: str) -> None:
    """A progress line on stderr; stdout carries only the tables."""
    sys.stderr.write(f"[bench {time.strftime('%H:%M:%S')}] {message}\n")
    sys.stderr.flush()


def heap_dbt_command() -> list[str]:
    """The ``heap-dbt`` console script next to this interpreter, else ``python -m heap_dbt``.

    heap-dbt's modules are compiled to bytecode first, as ``pip install`` leaves them: with
    PYTHONDONTWRITEBYTECODE set (as on the CI machine) an editable install would otherwise
    compile every module again at each timed start, 0.05 s that no installed copy pays.
    """
    import compileall

    import heap_dbt

    compileall.compile_dir(str(Path(heap_dbt.__file__).parent), quiet=1)
    script = Path(sys.executable).parent / "heap-dbt"
    return [str(script)] if script.exists() else [sys.executable, "-m", "heap_dbt"]


def expect_records(what: str, counted: int, expected: int) -> None:
    if counted != expected:
        raise BenchmarkError(f"{what}: the sink counted {counted:,} records, expected exactly {expected:,}.")


def drop_state(project: BenchProject) -> None:
    """Forget every sync: drop heap-dbt's state schema from the DuckDB file (no sync may be running)."""
    import duckdb

    con = duckdb.connect(str(project.database))
    try:
        con.execute(f'DROP SCHEMA IF EXISTS "{STATE_SCHEMA}" CASCADE')
        left = con.execute(
            "SELECT count(*) FROM information_schema.schemata WHERE schema_name = ?", [STATE_SCHEMA]
        ).fetchall()
    finally:
        con.close()
    if left[0][0]:
        raise BenchmarkError(f"The state schema {STATE_SCHEMA} is still in {project.database} after DROP.")


def results_file(project: BenchProject) -> Path:
    return project.root / "target" / RESULTS_FILE


def time_sync(
    project: BenchProject,
    sink: SinkProcess,
    obj: str,
    *,
    expect: Mapping[str, int],
    concurrency: int,
    timeout: float,
) -> SyncRun:
    """Run ``heap-dbt sync`` for ``obj``'s model as a child process and check what it did.

    ``expect`` maps counts of the sync's entry in the results file (``read``, ``sent``,
    ``unchanged``, ``new``, ``changed``, ...) to their exact values; the sink must have
    received exactly ``expect["sent"]`` records.
    """
    model = project.model(obj)
    sink.reset()
    results = results_file(project)
    results.unlink(missing_ok=True)  # a stale file must not pass for this run's
    cmd = [
        *heap_dbt_command(), "sync", "--select", model,
        "--events-per-minute", "0", "--events-per-identity-per-minute", "0",
        "--app-id", APP_ID, "--concurrency", str(concurrency), "--json",
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "HEAP_DBT_STATE_PATH"}  # state in the warehouse
    env |= {"HEAP_BASE_URL": sink.url, "DBT_PROFILES_DIR": str(project.root)}
    run = run_measured(cmd, cwd=project.root, env=env, timeout=timeout)
    stats = sink.stats()
    if run.returncode != 0:
        tail = "\n".join(run.stderr.splitlines()[-20:])
        if results.exists():  # the sync's own account of what went wrong (--json keeps stderr quiet)
            tail += "\n" + "\n".join(_excerpt(sync) for sync in json.loads(results.read_text())["syncs"])
        raise BenchmarkError(f"heap-dbt sync --select {model} exited {run.returncode}:\n{tail}")
    if not results.exists():
        raise BenchmarkError(f"heap-dbt sync --select {model} wrote no {results}.")
    (sync,) = json.loads(results.read_text())["syncs"]
    wrong = {k: (sync.get(k), v) for k, v in expect.items() if sync.get(k) != v}
    if wrong:
        found = ", ".join(f"{k} {got} (expected {want:,})" for k, (got, want) in wrong.items())
        raise BenchmarkError(f"heap-dbt sync of {model}: {found}; {_excerpt(sync)}")
    expect_records(f"heap-dbt sync of {model}", stats.records, expect["sent"])
    return SyncRun(
        wall_s=run.wall_s,
        engine_s=float(sync["seconds"]),
        cpu_s=run.cpu_s,
        peak_rss_mb=run.peak_rss_mb,
        requests=int(sync["requests"]),
        sent=int(sync["sent"]),
        unchanged=int(sync["unchanged"]),
        new=int(sync["new"]),
        changed=int(sync["changed"]),
        skipped_unchanged=bool(sync["skipped_unchanged"]),
        sink_records=stats.records,
        sink_bytes=stats.byte_count,
        sink_requests=stats.requests,
        sink_cpu_s=stats.cpu_s,
    )


def _excerpt(sync: dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in sync.items() if k not in ("rejections", "failures")})[:2000]
