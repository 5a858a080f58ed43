"""The benchmark harness in --smoke mode: it runs, the sink counts every row, the JSON has the figures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SMOKE_ROWS = 10_000
OBJECTS = ["user", "account", "event"]


@pytest.mark.integration
@pytest.mark.timeout(90)
def test_benchmark_smoke_counts_every_row(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    cmd = [sys.executable, "-m", "benchmarks.run", "--smoke", "--out", str(out)]
    done = subprocess.run(
        [*cmd, "--workdir", str(tmp_path / "project")],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=80,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "| object | rows |" in done.stdout

    doc = json.loads(out.read_text())
    assert {"results_version", "machine", "config", "results"} <= doc.keys()
    assert doc["config"]["smoke"] is True
    assert [(r["object"], r["rows"]) for r in doc["results"]] == [(o, SMOKE_ROWS) for o in OBJECTS]
    for result in doc["results"]:
        assert {"heap_dbt", "sink", "limit", "baseline", "pct_of_limit", "x_baseline"} <= result.keys()
        assert result["sink"]["records"] == SMOKE_ROWS
        assert result["sink"]["requests"] >= SMOKE_ROWS // 1000  # bulk bodies of at most 1000
        heap_dbt = result["heap_dbt"]
        for key in ("wall_s", "rows_per_s", "requests_per_s", "peak_rss_mb", "cpu_s_per_1m_rows"):
            assert heap_dbt[key] > 0, key
        assert {"duckdb", "http", "rows_per_s", "bound_by"} <= result["limit"].keys()
        assert result["baseline"]["extrapolated"] is True
        assert result["baseline"]["rows_per_s"] > 0
