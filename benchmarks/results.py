"""Turn the measurements of each object × row count into figures, a Markdown table and a JSON document."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks.baseline import Baseline
from benchmarks.limits import DuckDBLimit, HttpLimit

RESULTS_VERSION = 2  # 2: timed runs start from empty state (no --full-refresh); the incremental scenario


@dataclass(frozen=True)
class SyncRun:
    """One timed ``heap-dbt sync`` process and what the sink saw meanwhile."""

    wall_s: float
    engine_s: float  # the sync's own ``seconds`` from heap-dbt's report
    cpu_s: float
    peak_rss_mb: float
    requests: int
    sent: int  # from here to skipped_unchanged: the sync's counts in heap-dbt's results file
    unchanged: int
    new: int
    changed: int
    skipped_unchanged: bool  # the fingerprint shortcut: no diff ran
    sink_records: int
    sink_bytes: int
    sink_requests: int
    sink_cpu_s: float


@dataclass(frozen=True)
class BenchResult:
    """Everything measured for one model at one row count."""

    object: str
    model: str
    rows: int
    runs: list[SyncRun]
    duckdb: DuckDBLimit
    http: HttpLimit
    baseline: Baseline
    concurrency: int

    @property
    def typical(self) -> SyncRun:
        """The run with the median wall time (the lower middle one for an even count)."""
        ordered = sorted(self.runs, key=lambda r: r.wall_s)
        return ordered[(len(ordered) - 1) // 2]

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.typical.wall_s

    @property
    def peak_rss_mb(self) -> float:
        return max(r.peak_rss_mb for r in self.runs)

    @property
    def limit_seconds(self) -> float:
        """A pipeline of the two halves takes as long as its slower half."""
        return max(self.duckdb.seconds, self.http.seconds)

    @property
    def limit_rows_per_s(self) -> float:
        return self.rows / self.limit_seconds

    @property
    def bound_by(self) -> str:
        return "duckdb" if self.duckdb.seconds >= self.http.seconds else "http"

    @property
    def extrapolated(self) -> bool:
        return self.baseline.rows < self.rows

    def as_dict(self) -> dict[str, Any]:
        run = self.typical
        return {
            "object": self.object,
            "model": self.model,
            "rows": self.rows,
            "heap_dbt": {
                "state_before_each_run": "empty",
                "wall_s": round(run.wall_s, 4),
                "engine_s": round(run.engine_s, 4),
                "startup_s": round(run.wall_s - run.engine_s, 4),
                "rows_per_s": round(self.rows_per_s),
                "engine_rows_per_s": round(self.rows / run.engine_s) if run.engine_s else None,
                "requests": run.requests,
                "requests_per_s": round(run.sink_requests / run.wall_s, 1),
                "cpu_s": round(run.cpu_s, 3),
                "cpu_s_per_1m_rows": round(run.cpu_s / self.rows * 1e6, 3),
                "peak_rss_mb": round(self.peak_rss_mb, 1),
                "wall_s_all_runs": [round(r.wall_s, 4) for r in self.runs],
                "runs": [asdict(r) for r in self.runs],
            },
            "sink": {
                "records": run.sink_records,
                "bytes": run.sink_bytes,
                "requests": run.sink_requests,
                "cpu_s": run.sink_cpu_s,
                "cpu_share_of_wall": round(run.sink_cpu_s / run.wall_s, 3),
            },
            "limit": {
                "duckdb": {
                    "seconds": round(self.duckdb.seconds, 4),
                    "cpu_s": round(self.duckdb.cpu_s, 3),
                    "rows_per_s": round(self.duckdb.rows_per_s),
                    "record_bytes": self.duckdb.record_bytes,
                    "avg_record_bytes": round(self.duckdb.record_bytes / max(self.duckdb.rows, 1), 1),
                },
                "http": {
                    "seconds": round(self.http.seconds, 4),
                    "cpu_s": round(self.http.cpu_s, 3),
                    "rows_per_s": round(self.http.rows_per_s),
                    "requests": self.http.requests,
                    "body_bytes": self.http.body_bytes,
                    "concurrency": self.concurrency,
                },
                "seconds": round(self.limit_seconds, 4),
                "rows_per_s": round(self.limit_rows_per_s),
                "bound_by": self.bound_by,
            },
            "baseline": {
                "rows": self.baseline.rows,
                "seconds": round(self.baseline.seconds, 4),
                "rows_per_s": round(self.baseline.rows_per_s, 1),
                "extrapolated": self.extrapolated,
                "extrapolated_seconds": round(self.rows / self.baseline.rows_per_s, 1),
            },
            "pct_of_limit": round(100 * self.rows_per_s / self.limit_rows_per_s, 1),
            "x_baseline": round(self.rows_per_s / self.baseline.rows_per_s, 1),
        }


INCREMENTAL_TARGET = 0.05
"""The incremental issue's goal: a sync of an unchanged model costs under 5% of the first sync."""


@dataclass(frozen=True)
class IncrementalResult:
    """One model's first sync from empty state, a no-op re-sync, and a re-sync after 1% changed."""

    object: str
    model: str
    rows: int
    changed_pct: int
    changed_rows: int
    first: SyncRun
    noop: SyncRun
    changed: SyncRun

    def steps(self) -> list[tuple[str, str, SyncRun]]:
        """(key, label, run) per step, in the order they ran."""
        return [
            ("first", "first sync (empty state)", self.first),
            ("noop", "no-op (same data, rebuilt)", self.noop),
            ("changed", f"{self.changed_pct}% changed ({self.changed_rows:,} rows)", self.changed),
        ]

    def as_dict(self) -> dict[str, Any]:
        first = self.first
        steps: dict[str, Any] = {}
        for key, label, run in self.steps():
            steps[key] = {
                "label": label,
                "path": _path(key, run),
                "wall_s": round(run.wall_s, 4),
                "engine_s": round(run.engine_s, 4),
                "wall_ratio_to_first": round(run.wall_s / first.wall_s, 4),
                "engine_ratio_to_first": round(run.engine_s / first.engine_s, 4) if first.engine_s else None,
                **asdict(run),
            }
        return {
            "object": self.object,
            "model": self.model,
            "rows": self.rows,
            "changed_pct": self.changed_pct,
            "changed_rows": self.changed_rows,
            "target_ratio": INCREMENTAL_TARGET,
            "noop_wall_under_target": self.noop.wall_s / first.wall_s < INCREMENTAL_TARGET,
            "noop_engine_under_target": bool(first.engine_s)
            and self.noop.engine_s / first.engine_s < INCREMENTAL_TARGET,
            "steps": steps,
        }


def _path(key: str, run: SyncRun) -> str:
    """How heap-dbt handled the step, as its results file tells."""
    if run.skipped_unchanged:
        return "fingerprint shortcut (no diff)"
    if key == "first":
        return "no state: every row sent"
    return "diff in SQL against the state"


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%" if value < 0.1 else f"{100 * value:.0f}%"


def _n(value: float) -> str:
    return f"{value:,.0f}"


def markdown_table(results: Sequence[BenchResult]) -> str:
    """One row per object × row count; the notes under it say how to read the columns."""
    head = [
        "object", "rows", "wall s", "startup s", "rows/s", "requests/s", "peak RSS MB",
        "CPU s / 1M rows", "limit rows/s (bound)", "% of limit", "baseline rows/s", "× baseline",
    ]  # fmt: skip
    lines = [
        "| " + " | ".join(head) + " |",
        "|" + "|".join("---:" if i > 0 else "---" for i in range(len(head))) + "|",
    ]
    for r in results:
        d = r.as_dict()
        h = d["heap_dbt"]
        base = f"{d['baseline']['rows_per_s']:,.0f}" + ("*" if r.extrapolated else "")
        cells = [
            r.object, _n(r.rows), f"{h['wall_s']:.2f}", f"{h['startup_s']:.2f}", _n(h["rows_per_s"]),
            f"{h['requests_per_s']:,.0f}", f"{h['peak_rss_mb']:.0f}", f"{h['cpu_s_per_1m_rows']:.1f}",
            f"{_n(d['limit']['rows_per_s'])} ({r.bound_by})", f"{d['pct_of_limit']:.0f}%", base,
            f"{d['x_baseline']:,.0f}×",
        ]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def notes(results: Sequence[BenchResult], *, repeat: int) -> str:
    """How to read the table, the memory check across row counts, and the sink's share of CPU."""
    out = [
        f"- wall s: median of {repeat} run(s) of `heap-dbt sync`, from process start to exit; "
        "startup s is wall minus the sync's own time in heap-dbt's report (imports, manifest, planning).",
        "- every timed run is a first sync: the state schema heap_dbt is dropped from the DuckDB file "
        "before each run (no --full-refresh), so every row is new and sent.",
        "- limit: DuckDB alone building the same records (heap-dbt's SQL, to /dev/null via Arrow) and "
        "plain aiohttp alone POSTing same-size bodies at the same concurrency; the limit is the slower half.",
    ]
    extrapolated = sorted({r.baseline.rows for r in results if r.extrapolated})
    if extrapolated:
        sizes = ", ".join(f"{n:,}" for n in extrapolated)
        out.append(
            f"- baseline*: one request per row, sequential (urllib, json.dumps); measured on the first "
            f"{sizes} rows and extrapolated to the full table."
        )
    for obj in dict.fromkeys(r.object for r in results):
        mine = sorted((r for r in results if r.object == obj), key=lambda r: r.rows)
        if len(mine) > 1:
            steps = " → ".join(f"{_n(r.rows)} rows: {r.peak_rss_mb:.0f} MB" for r in mine)
            out.append(f"- peak RSS, {obj}: {steps}")
    for obj in dict.fromkeys(r.object for r in results):
        r = max((r for r in results if r.object == obj), key=lambda r: r.rows)
        per_m = 1e6 / r.rows
        out.append(
            f"- CPU s per 1M rows, {obj} at {_n(r.rows)} rows: heap-dbt {r.typical.cpu_s * per_m:.1f} "
            f"(startup included), DuckDB half alone {r.duckdb.cpu_s * per_m:.1f}, aiohttp half alone "
            f"{r.http.cpu_s * per_m:.1f}; the halves overlap only as far as free cores allow."
        )
    share = max(r.typical.sink_cpu_s / r.typical.wall_s for r in results)
    out.append(f"- the sink used at most {share:.0%} of one core during a sync (its own CPU time / wall).")
    return "\n".join(out)


def incremental_table(result: IncrementalResult) -> str:
    """One row per step: first sync, no-op, 1% changed; ratios are to the first sync."""
    head = [
        "step", "rows sent", "wall s", "wall / first", "engine s", "engine / first", "CPU s",
        "peak RSS MB", "path",
    ]  # fmt: skip
    lines = [
        "| " + " | ".join(head) + " |",
        "|" + "|".join("---:" if 0 < i < len(head) - 1 else "---" for i in range(len(head))) + "|",
    ]
    first = result.first
    for key, label, run in result.steps():
        cells = [
            label, _n(run.sink_records), f"{run.wall_s:.2f}", _pct(run.wall_s / first.wall_s),
            f"{run.engine_s:.3f}", _pct(run.engine_s / first.engine_s) if first.engine_s else "n/a",
            f"{run.cpu_s:.2f}", f"{run.peak_rss_mb:.0f}", _path(key, run),
        ]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def incremental_notes(result: IncrementalResult) -> str:
    """How the incremental table was measured and whether the no-op met the target."""
    first, noop = result.first, result.noop
    target = _pct(INCREMENTAL_TARGET)

    def verdict(ratio: float) -> str:
        return f"{_pct(ratio)} ({'met' if ratio < INCREMENTAL_TARGET else 'missed'})"

    engine = verdict(noop.engine_s / first.engine_s) if first.engine_s else "n/a"
    shortcut = (
        "the no-op took the fingerprint shortcut (`skipped_unchanged` in the results file): heap-dbt "
        "hashed the model in SQL, found it equal to the last complete sync's fingerprint and skipped "
        "the diff and the send, so this row measures the shortcut, not the diff"
        if noop.skipped_unchanged
        else "the no-op did NOT take the fingerprint shortcut: it ran the diff in SQL"
    )
    return "\n".join(
        [
            f"- {result.model} at {_n(result.rows)} rows, one run per step, in order; `dbt run` before "
            "the no-op (same vars: the table is rebuilt with identical data) and before the 1% change "
            f"(var changed_pct={result.changed_pct}) is not timed. The state is dropped before the first "
            "sync.",
            "- wall s: process start to exit; engine s: the sync's `seconds` in "
            "`target/heap_sync_results.json` (time inside the engine; wall minus engine is startup: "
            "imports, manifest, planning, opening the warehouse).",
            f"- target: the no-op under {target} of the first sync. Wall: "
            f"{verdict(noop.wall_s / first.wall_s)}; engine: {engine}.",
            f"- {shortcut}; the {result.changed_pct}%-changed sync runs the diff in SQL against "
            f"{_n(result.rows)} rows of state (it cannot take the shortcut).",
            f"- checked: the sink and the results file agree on every step: first sent {_n(result.rows)}; "
            f"no-op sent 0, unchanged {_n(result.rows)}; {result.changed_pct}% changed sent and changed "
            f"{_n(result.changed_rows)}, unchanged {_n(result.rows - result.changed_rows)}.",
        ]
    )


def write_json(
    path: Path,
    results: Sequence[BenchResult],
    *,
    config: dict[str, Any],
    machine: dict[str, Any],
    incremental: IncrementalResult | None = None,
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "results_version": RESULTS_VERSION,
        "machine": machine,
        "config": config,
        "results": [r.as_dict() for r in results],
        "incremental": incremental.as_dict() if incremental is not None else None,
    }
    path.write_text(json.dumps(doc, indent=2) + "\n")
