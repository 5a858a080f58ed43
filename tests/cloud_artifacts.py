"""Real dbt artifacts for the fake dbt Cloud: one set per dbt command a dbt Cloud step would run.

``build_cloud_artifacts`` runs `dbt docs generate`, `dbt run -s ...` twice, `dbt run-operation`,
a `dbt run` in which heap_users fails on purpose, and its `dbt docs generate`, on a copy of
the sample project built by the session's `dbt build`. Serve them as steps of a FakeDbtCloud
run (``Step(name, artifacts.build)``).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import BIN, clean_env, dbt
from tests.fake_dbt_cloud import FakeDbtCloud

USERS, ACCOUNTS, EVENTS = 36, 12, 40
"""Rows of heap_users, heap_accounts and heap_purchases in the sample project."""
BREAK = json.dumps({"break_heap_users": True})


@dataclass(frozen=True)
class Artifacts:
    """What real dbt commands wrote, per command, and the project whose warehouse they built."""

    project: Path
    build: dict[str, bytes]
    docs: dict[str, bytes]
    run_users: dict[str, bytes]
    run_others: dict[str, bytes]
    failed_run: dict[str, bytes]
    failed_docs: dict[str, bytes]
    run_operation: dict[str, bytes]


def _dbt_may_fail(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "dbt"), *args, "--profiles-dir", "."],
        cwd=project, env=clean_env(), capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


def _saved(project: Path) -> dict[str, bytes]:
    target = project / "target"
    return {name: (target / name).read_bytes() for name in ("run_results.json", "manifest.json")}


def build_cloud_artifacts(built_sample: Path, dest: Path) -> Artifacts:
    """Run the dbt commands of every scenario's steps on a copy of the built sample, at ``dest``.

    The copy's DuckDB file is the warehouse those artifacts describe: heap_users' table is
    from the build (the broken run left it stale), and its target/ holds `dbt run -s
    heap_accounts` results, which disagree with every dbt Cloud scenario.
    """
    project = dest
    shutil.copytree(built_sample, project)
    build = _saved(project)  # the session's `dbt build`
    (project / "macros" / "heap_demo_noop.sql").write_text("{% macro heap_demo_noop() %}{% endmacro %}\n")
    dbt(project, "docs", "generate", "--quiet")
    docs = _saved(project)
    dbt(project, "run", "-s", "heap_users", "--quiet")
    run_users = _saved(project)
    dbt(project, "run", "-s", "heap_accounts", "heap_purchases", "--quiet")
    run_others = _saved(project)
    dbt(project, "run-operation", "heap_demo_noop", "--quiet")
    run_operation = _saved(project)
    sql = project / "models" / "marts" / "heap_users.sql"
    text = sql.read_text()
    assert "order by u.user_id" in text
    sql.write_text(text.replace(
        "order by u.user_id",
        "{% if var('break_heap_users', false) %}where no_such_column{% endif %}\norder by u.user_id",
    ))  # fmt: skip
    proc = _dbt_may_fail(project, "run", "--vars", BREAK)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    failed_run = _saved(project)
    dbt(project, "docs", "generate", "--vars", BREAK, "--quiet")
    failed_docs = _saved(project)
    statuses = {r["unique_id"]: r["status"] for r in json.loads(failed_docs["run_results.json"])["results"]}
    assert statuses["model.heap_demo.heap_users"] == "success"  # the trap: docs generate says so
    assert json.loads(run_operation["run_results.json"])["args"]["which"] == "run-operation"
    # What a sync that read the local target/ would gate on: only heap_accounts was built.
    dbt(project, "run", "-s", "heap_accounts", "--vars", BREAK, "--quiet")
    return Artifacts(project, build, docs, run_users, run_others, failed_run, failed_docs, run_operation)


def cloud_env(cloud: FakeDbtCloud, **extra: str) -> dict[str, str]:
    return {
        "DBT_CLOUD_HOST": cloud.url,
        "DBT_CLOUD_ACCOUNT_ID": str(cloud.account_id),
        "DBT_CLOUD_API_TOKEN": cloud.token,
        **extra,
    }
