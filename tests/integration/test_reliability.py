"""The reliability suite in --quick mode: every fault survived, no row lost, no event stored twice.

It runs ``python -m benchmarks.reliability --quick`` (what ``make reliability-quick`` runs) on the
session's dbt-built sample project, so CI exercises the same harness that makes the README's table.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, clean_env

pytestmark = pytest.mark.integration

SCENARIOS = ["load", "5xx", "429", "drop", "outage", "long outage", "SIGKILL"]


# About 35 s on an idle machine (one `dbt run`, about 15 heap-dbt runs, the SIGKILL waits);
# the limit leaves room for a machine shared with other test runs.
@pytest.mark.timeout(180)
def test_quick_reliability_suite_survives_every_fault(built_sample: Path, tmp_path: Path) -> None:
    out = tmp_path / "reliability.json"
    cmd = [sys.executable, "-m", "benchmarks.reliability", "--quick", "--sample", str(built_sample)]
    done = subprocess.run(
        [*cmd, "--workdir", str(tmp_path / "work"), "--out", str(out)],
        cwd=ROOT,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=170,
        check=False,
    )

    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert done.stdout.startswith("| check | result | ok |\n|---|---|---|\n")
    assert "**NO**" not in done.stdout
    doc = json.loads(out.read_text())
    scenarios = {s["name"]: s for s in doc["scenarios"]}
    assert list(scenarios) == SCENARIOS
    rows = 2 * doc["sizes"]["rows"]
    for name, s in scenarios.items():
        assert s["survived"] and s["ok"], name
        assert (s["figures"]["lost"], s["figures"]["duplicated"]) == (0, 0), name
    figures = {name: s["figures"] for name, s in scenarios.items()}
    assert figures["load"]["read"] == rows and figures["load"]["peak_in_flight"] > 1
    assert figures["5xx"]["status_500"] > 0 and figures["429"]["status_429"] > 0
    assert figures["drop"]["dropped"] > 0 and figures["drop"]["resent_deduplicated"] > 0
    assert figures["outage"]["outage_refused"] > 0
    assert figures["long outage"]["first_failed"] == rows and figures["long outage"]["second_sent"] == rows
    assert figures["SIGKILL"]["kills"] == doc["sizes"]["kills"]
    assert 0 < figures["SIGKILL"]["final_sent"] < rows
    bad = doc["bad_input"]
    assert bad["tried"] >= 3 and bad["clear"] == bad["tried"] and bad["unclear"] == []
    checks = [r["check"] for r in doc["rows"]]
    assert "rows lost, all scenarios" in checks and "events stored twice, all scenarios" in checks
    assert all(set(r) == {"check", "result", "ok"} for r in doc["rows"])
