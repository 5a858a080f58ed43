"""The benchmark harness in --smoke mode: it runs, the sink counts every row, the JSON has the figures.

It also runs the incremental scenario: a no-op re-sync sends nothing, a 1% change sends exactly 1%.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SMOKE_ROWS = 10_000
OBJECTS = ["user", "account", "event"]


@pytest.mark.integration
@pytest.mark.timeout(240)  # dbt runs and a dozen syncs in child processes; over 80 s on a busy machine
def test_benchmark_smoke_counts_every_row(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    cmd = [sys.executable, "-m", "benchmarks.run", "--smoke", "--out", str(out)]
    done = subprocess.run(
        [*cmd, "--workdir", str(tmp_path / "project")],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=230,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "| object | rows |" in done.stdout
    assert "| step | rows sent |" in done.stdout

    doc = json.loads(out.read_text())
    assert {"results_version", "machine", "config", "results", "incremental"} <= doc.keys()
    assert doc["config"]["smoke"] is True
    assert doc["config"]["timed_runs_start_from_empty_state"] is True
    assert doc["config"]["sync_flags"] == []  # no --full-refresh: the state is dropped instead
    assert [(r["object"], r["rows"]) for r in doc["results"]] == [(o, SMOKE_ROWS) for o in OBJECTS]
    for result in doc["results"]:
        assert {"heap_dbt", "sink", "limit", "baseline", "pct_of_limit", "x_baseline"} <= result.keys()
        assert result["sink"]["records"] == SMOKE_ROWS
        assert result["sink"]["requests"] >= SMOKE_ROWS // 1000  # bulk bodies of at most 1000
        heap_dbt = result["heap_dbt"]
        assert heap_dbt["state_before_each_run"] == "empty"
        for run in heap_dbt["runs"]:
            assert (run["sent"], run["new"], run["unchanged"]) == (SMOKE_ROWS, SMOKE_ROWS, 0)
        for key in ("wall_s", "rows_per_s", "requests_per_s", "peak_rss_mb", "cpu_s_per_1m_rows"):
            assert heap_dbt[key] > 0, key
        assert {"duckdb", "http", "rows_per_s", "bound_by"} <= result["limit"].keys()
        assert result["baseline"]["extrapolated"] is True
        assert result["baseline"]["rows_per_s"] > 0

    incremental = doc["incremental"]
    assert (incremental["object"], incremental["rows"]) == ("user", SMOKE_ROWS)
    steps = incremental["steps"]
    assert list(steps) == ["first", "noop", "changed"]
    first, noop, changed = steps["first"], steps["noop"], steps["changed"]
    assert (first["sent"], first["sink_records"], first["new"]) == (SMOKE_ROWS, SMOKE_ROWS, SMOKE_ROWS)
    assert (noop["sent"], noop["sink_records"], noop["unchanged"]) == (0, 0, SMOKE_ROWS)
    one_pct = SMOKE_ROWS // 100
    assert incremental["changed_rows"] == one_pct
    assert (changed["sent"], changed["sink_records"], changed["changed"]) == (one_pct, one_pct, one_pct)
    assert changed["unchanged"] == SMOKE_ROWS - one_pct
    for step in steps.values():
        assert step["wall_s"] > 0 and step["engine_s"] >= 0
        assert step["wall_ratio_to_first"] > 0
