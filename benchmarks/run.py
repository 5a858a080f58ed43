"""The benchmark's command line: build the project, start the sink, time each sync and its references, report.

    python -m benchmarks.run --rows 100000,1000000 --objects user,account,event
    python -m benchmarks.run --smoke        # 10k rows, one run each; what CI runs

Per row count it runs ``dbt run`` (not timed), then per object: ``heap-dbt sync`` as a
child process against the sink (timed, ``--repeat`` times; each a true first sync, as the
state schema is dropped from the DuckDB file before it), DuckDB alone and aiohttp alone
(the limit), and the naive one-request-per-row script (the baseline). Then, unless
``--no-incremental``, the incremental scenario on the user model at the largest row count
(``benchmarks.incremental``): first sync, no-op re-sync, re-sync after 1% changed. Every
step checks that the sink counted exactly the records sent, and stops the run if not.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python benchmarks/run.py`: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.baseline import naive_baseline
from benchmarks.incremental import run_incremental
from benchmarks.limits import duckdb_limit, http_limit, plan_sync
from benchmarks.project import MODELS, OBJECTS, BenchProject, ProjectBuildError, build, write_project
from benchmarks.results import (
    BenchResult,
    IncrementalResult,
    incremental_notes,
    incremental_table,
    markdown_table,
    notes,
    write_json,
)
from benchmarks.sink import SinkProcess
from benchmarks.syncs import APP_ID, BenchmarkError, drop_state, expect_records, log, time_sync

OUT_DIR = Path(__file__).resolve().parent / "out"
SMOKE_ROWS = 10_000
SMOKE_BASELINE_ROWS = 1_000


def _row_counts(text: str) -> list[int]:
    counts = [int(part.strip().replace("_", "")) for part in text.split(",") if part.strip()]
    if not counts or any(n < 1 for n in counts):
        raise argparse.ArgumentTypeError(f"expected positive row counts like 100000,1000000, got {text!r}")
    return counts


def _objects(text: str) -> list[str]:
    objects = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [o for o in objects if o not in MODELS]
    if not objects or unknown:
        raise argparse.ArgumentTypeError(f"objects are {', '.join(MODELS)}; got {text!r}")
    return objects


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run", description="Benchmark heap-dbt sync against a local counting sink."
    )
    parser.add_argument(
        "--rows",
        type=_row_counts,
        default=[100_000, 1_000_000],
        help="Comma-separated row counts per model (default 100000,1000000; 10000000 works).",
    )
    parser.add_argument(
        "--objects",
        type=_objects,
        default=list(OBJECTS),
        help="Comma-separated: user,account,event (the default), wide (151 columns).",
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="JSON results file (default: benchmarks/out/results.json, or results-smoke.json).",
    )
    parser.add_argument(
        "--repeat", type=int, default=3, help="Timed heap-dbt runs per object and size (median)."
    )
    parser.add_argument(
        "--baseline-rows",
        type=int,
        default=20_000,
        help="Rows the naive baseline sends before its rate is extrapolated.",
    )
    parser.add_argument(
        "--concurrency", type=int, default=8, help="Requests in flight, for heap-dbt and the limit."
    )
    parser.add_argument(
        "--timeout", type=float, default=3600.0, help="Seconds before a sync process is killed."
    )
    parser.add_argument(
        "--workdir", type=Path, help="Build the dbt project here and keep it (default: a temp dir)."
    )
    parser.add_argument(
        "--no-incremental",
        dest="incremental",
        action="store_false",
        help="Skip the incremental scenario (first sync, no-op, 1%% changed) on the user model.",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help=f"CI mode: {SMOKE_ROWS:,} rows, one run, {SMOKE_BASELINE_ROWS:,} baseline rows.",
    )
    args = parser.parse_args(argv)
    if args.smoke:
        args.rows, args.repeat, args.baseline_rows = [SMOKE_ROWS], 1, SMOKE_BASELINE_ROWS
    if args.out is None:
        args.out = OUT_DIR / ("results-smoke.json" if args.smoke else "results.json")
    if args.repeat < 1 or args.baseline_rows < 1:
        parser.error("--repeat and --baseline-rows must be at least 1")
    return args


def bench_object(
    project: BenchProject, sink: SinkProcess, obj: str, rows: int, args: argparse.Namespace
) -> BenchResult:
    """Time heap-dbt, its two limits and the naive baseline for one model at one row count."""
    plan = plan_sync(project, obj)
    runs = []
    for i in range(args.repeat):
        drop_state(project)  # a true first sync: every row is new
        run = time_sync(
            project,
            sink,
            obj,
            expect={"read": rows, "sent": rows, "unchanged": 0, "new": rows},
            concurrency=args.concurrency,
            timeout=args.timeout,
        )
        log(f"{obj} {rows:,}: heap-dbt run {i + 1}/{args.repeat}: {run.wall_s:.2f} s wall, "
             f"{run.peak_rss_mb:.0f} MB peak RSS")  # fmt: skip
        runs.append(run)
    duck = duckdb_limit(project, plan)
    if duck.rows != rows:
        raise BenchmarkError(f"DuckDB produced {duck.rows:,} {obj} records, expected {rows:,}.")
    sink.reset()
    http = http_limit(sink.url, obj, duck.sample, rows, concurrency=args.concurrency, app_id=APP_ID)
    expect_records(f"aiohttp limit for {obj}", sink.stats().records, rows)
    log(f"{obj} {rows:,}: limit: DuckDB {duck.seconds:.2f} s, aiohttp {http.seconds:.2f} s")
    sink.reset()
    base = naive_baseline(project, plan, sink.url, rows=min(rows, args.baseline_rows), app_id=APP_ID)
    expect_records(f"naive baseline for {obj}", sink.stats().records, base.rows)
    log(f"{obj} {rows:,}: baseline: {base.rows:,} rows in {base.seconds:.2f} s")
    return BenchResult(obj, project.model(obj), rows, runs, duck, http, base, args.concurrency)


@contextlib.contextmanager
def _workdir(path: Path | None) -> Iterator[Path]:
    if path is not None:
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="heap-dbt-bench-") as tmp:
        yield Path(tmp)


def _source_tree() -> dict[str, Any]:
    """The commit of heap-dbt measured, and whether its package had uncommitted changes."""
    root = Path(__file__).resolve().parent.parent
    git = ["git", "-C", str(root)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False)
    dirty = subprocess.run(
        [*git, "status", "--porcelain", "heap_dbt"], capture_output=True, text=True, check=False
    )
    return {"commit": head.stdout.strip() or None, "heap_dbt_dirty": bool(dirty.stdout.strip())}


def _machine() -> dict[str, Any]:
    import duckdb

    from heap_dbt import __version__

    return {
        **_source_tree(),
        "cpus": os.cpu_count(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        "platform": platform.platform(),
        "python": platform.python_version(),
        "duckdb": duckdb.__version__,
        "heap_dbt": __version__,
    }


def run_benchmark(args: argparse.Namespace) -> tuple[list[BenchResult], IncrementalResult | None]:
    results: list[BenchResult] = []
    incremental = None
    with _workdir(args.workdir) as root, SinkProcess() as sink:
        project = write_project(root)
        log(f"project in {project.root}; sink at {sink.url}")
        for rows in args.rows:
            seconds = build(project, rows=rows, objects=args.objects)
            log(f"dbt run with {rows:,} rows per model: {seconds:.1f} s (not timed)")
            for obj in args.objects:
                results.append(bench_object(project, sink, obj, rows, args))
        if args.incremental:
            largest = max(args.rows)
            incremental = run_incremental(
                project,
                sink,
                largest,
                concurrency=args.concurrency,
                timeout=args.timeout,
                built=args.rows[-1] == largest and "user" in args.objects,
            )
    return results, incremental


def _compile_package() -> None:
    """Byte-compile heap_dbt as ``pip install`` does, so that no timed run compiles its source.

    An editable install under PYTHONDONTWRITEBYTECODE=1 (this machine) would otherwise
    recompile every module in every run, ~40 ms that no installed heap-dbt pays.
    """
    import compileall

    import heap_dbt

    compileall.compile_dir(Path(heap_dbt.__file__).parent, quiet=1)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    machine = _machine()
    _compile_package()
    try:
        results, incremental = run_benchmark(args)
    except (BenchmarkError, ProjectBuildError) as exc:
        sys.stderr.write(f"Error: {exc}\n")
        return 1
    config = {
        "rows": args.rows, "objects": args.objects, "repeat": args.repeat, "smoke": args.smoke,
        "baseline_rows": args.baseline_rows, "concurrency": args.concurrency,
        "sync_flags": [], "timed_runs_start_from_empty_state": True, "incremental": args.incremental,
    }  # fmt: skip
    machine["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    write_json(args.out, results, config=config, machine=machine, incremental=incremental)
    print(markdown_table(results))
    print()
    print(notes(results, repeat=args.repeat))
    print(
        f"- machine: {machine['cpus']} CPUs, load average {machine['loadavg_at_start'][0]} at start and "
        f"{machine['loadavg_at_end'][0]} at end (shared machine: wall times are noisy, CPU seconds less so)."
    )
    if incremental is not None:
        print(f"\nIncremental: {incremental.model}, {incremental.rows:,} rows\n")
        print(incremental_table(incremental))
        print()
        print(incremental_notes(incremental))
    print(f"\nJSON results: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
