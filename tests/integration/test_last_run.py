"""Sync what the last dbt run built: real dbt runs of the sample project, the real CLI, the emulator.

A model that fails to build is skipped and named while the models that built are synced,
even though an old table of it is still there; so are models the run did not build, and,
with --require-tests, models whose tests failed. Results that are not a run's, or that
belong to another invocation than the manifest, are said so.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import duckdb
import pytest

from heap_dbt.emulator import RunningEmulator
from tests.conftest import APP_ID, BIN, clean_env, dbt, heap_dbt

pytestmark = pytest.mark.integration

USERS = "model.heap_demo.heap_users"
FAILED = {"model": "heap_users", "unique_id": USERS, "reason": "failed in the last dbt run"}
BREAK = {"break_heap_users": True}


def dbt_may_fail(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """A real dbt command whose failure (exit 1, a model or test failed) the test expects."""
    return subprocess.run(
        [str(BIN / "dbt"), *args, "--profiles-dir", "."],
        cwd=project, env=clean_env(), capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


def breakable(project: Path) -> None:
    """Make heap_users fail to build when the var break_heap_users is true."""
    sql = project / "models" / "marts" / "heap_users.sql"
    text = sql.read_text()
    assert "order by u.user_id" in text
    sql.write_text(
        text.replace(
            "order by u.user_id",
            "{% if var('break_heap_users', false) %}where no_such_column{% endif %}\norder by u.user_id",
        )
    )


def users_table_rows(project: Path) -> int:
    with duckdb.connect(str(project / "heap_demo.duckdb"), read_only=True) as con:
        return int(con.execute('SELECT count(*) FROM "main"."heap_users"').fetchall()[0][0])


@pytest.fixture(scope="module")
def failed_run(built_sample: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The built sample after a `dbt run` in which heap_users failed and the rest built;
    heap_users' table from the earlier build is still there (stale)."""
    project = tmp_path_factory.mktemp("failed") / "heap_demo"
    shutil.copytree(built_sample, project)
    breakable(project)
    proc = dbt_may_fail(project, "run", "--vars", json.dumps(BREAK))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert users_table_rows(project) == 36  # the stale table of the model that failed
    return project


@pytest.fixture
def after_failure(failed_run: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "heap_demo"
    shutil.copytree(failed_run, dest)
    return dest


def results_file(project: Path) -> dict[str, Any]:
    return json.loads((project / "target" / "heap_sync_results.json").read_text())  # type: ignore[no-any-return]


def synced(doc: dict[str, Any]) -> list[str]:
    return sorted(s["model"] for s in doc["syncs"])


def test_a_failed_model_is_skipped_and_the_models_that_built_are_synced(
    after_failure: Path, emulator: RunningEmulator
) -> None:
    proc = heap_dbt(after_failure, "sync", base_url=emulator.url)

    assert proc.returncode == 0, proc.stderr
    state = emulator.emulator.snapshot()
    assert APP_ID not in state["users"]  # no stale row of heap_users reached Heap
    assert len(state["accounts"][APP_ID]) == 12 and len(state["events"]) == 40
    assert "SKIP heap_users" in proc.stdout and "failed in the last dbt run" in proc.stdout
    assert "skipped models 1" in proc.stdout
    report = results_file(after_failure)
    assert report["skipped"] == [FAILED]
    assert synced(report) == ["heap_accounts", "heap_purchases"] and report["success"] is True

    as_json = heap_dbt(after_failure, "sync", "--dry-run", "--json", base_url=emulator.url)
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout)["skipped"] == [FAILED]


def test_all_syncs_the_failed_models_stale_table_and_says_so(
    after_failure: Path, emulator: RunningEmulator
) -> None:
    proc = heap_dbt(after_failure, "sync", "--all", "--dry-run", "--json", base_url=emulator.url)

    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert synced(doc) == ["heap_accounts", "heap_purchases", "heap_users"] and doc["skipped"] == []
    assert (
        "Warning: dbt reported heap_users as error in its last run and --all syncs it anyway" in proc.stderr
    )


def test_a_manifest_from_another_invocation_gates_on_the_run_results(
    after_failure: Path, emulator: RunningEmulator
) -> None:
    dbt(after_failure, "ls", "--quiet")  # rewrites manifest.json with a new invocation id
    manifest = json.loads((after_failure / "target" / "manifest.json").read_text())
    results = json.loads((after_failure / "target" / "run_results.json").read_text())
    assert manifest["metadata"]["invocation_id"] != results["metadata"]["invocation_id"]

    proc = heap_dbt(after_failure, "sync", "--dry-run", "--json", base_url=emulator.url)

    assert proc.returncode == 0, proc.stderr
    message = " ".join(proc.stderr.split())
    assert (
        f"Warning: {after_failure}/target/run_results.json is from another dbt invocation than "
        f"{after_failure}/target/manifest.json"
    ) in message
    doc = json.loads(proc.stdout)
    assert doc["skipped"] == [FAILED] and synced(doc) == ["heap_accounts", "heap_purchases"]


def test_models_not_in_the_run_are_skipped(project: Path, emulator: RunningEmulator) -> None:
    dbt(project, "run", "-s", "heap_accounts", "--quiet")

    proc = heap_dbt(project, "sync", "--json", base_url=emulator.url)

    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert synced(doc) == ["heap_accounts"]
    assert {s["model"]: s["reason"] for s in doc["skipped"]} == {
        "heap_purchases": "not built in the last dbt run",
        "heap_users": "not built in the last dbt run",
    }
    state = emulator.emulator.snapshot()
    assert len(state["accounts"][APP_ID]) == 12 and state["events"] == [] and APP_ID not in state["users"]


def test_require_tests_skips_a_model_whose_test_failed(project: Path, emulator: RunningEmulator) -> None:
    (project / "tests").mkdir(exist_ok=True)
    (project / "tests" / "heap_accounts_is_empty.sql").write_text(
        "select * from {{ ref('heap_accounts') }}\n"
    )
    proc = dbt_may_fail(project, "build", "-s", "heap_accounts")
    assert proc.returncode == 1, proc.stdout + proc.stderr  # the singular test failed

    strict = heap_dbt(project, "sync", "--require-tests", "--dry-run", "--json", base_url=emulator.url)
    lenient = heap_dbt(project, "sync", "--dry-run", "--json", base_url=emulator.url)

    assert (strict.returncode, lenient.returncode) == (0, 0), strict.stderr + lenient.stderr
    skipped = {s["model"]: s["reason"] for s in json.loads(strict.stdout)["skipped"]}
    assert skipped["heap_accounts"] == "test heap_accounts_is_empty failed in the last dbt run"
    assert synced(json.loads(strict.stdout)) == []
    assert synced(json.loads(lenient.stdout)) == ["heap_accounts"]


def test_results_of_docs_generate_are_not_run_results(project: Path, emulator: RunningEmulator) -> None:
    dbt(project, "docs", "generate", "--quiet")

    proc = heap_dbt(project, "sync", "--dry-run", "--json", base_url=emulator.url)

    assert proc.returncode == 0, proc.stderr
    message = " ".join(proc.stderr.split())
    assert (
        f"Warning: {project}/target/run_results.json is from `dbt docs generate`, which builds no model"
        in (message)
    )
    doc = json.loads(proc.stdout)
    assert synced(doc) == ["heap_accounts", "heap_purchases", "heap_users"] and doc["skipped"] == []


def test_a_missing_table_the_run_results_do_not_explain_is_a_config_error(
    project: Path, emulator: RunningEmulator
) -> None:
    """The last build reports heap_accounts built, yet its table is gone: that is not a skip."""
    with duckdb.connect(str(project / "heap_demo.duckdb")) as con:
        con.execute('DROP TABLE "main"."heap_accounts"')

    proc = heap_dbt(project, "sync", base_url=emulator.url)

    assert proc.returncode == 2
    assert "heap_accounts" in proc.stderr and "does not exist" in proc.stderr
    assert emulator.emulator.snapshot()["requests"] == {}


# --- heap-dbt run ------------------------------------------------------------------------------------


def test_run_syncs_what_dbt_built_and_names_the_model_that_failed(
    project: Path, emulator: RunningEmulator
) -> None:
    breakable(project)

    proc = heap_dbt(project, "run", "run", "--vars", json.dumps(BREAK), base_url=emulator.url)

    assert proc.returncode == 1, proc.stderr
    assert "SKIP heap_users" in proc.stdout and "failed in the last dbt run" in proc.stdout
    assert "ERROR creating sql table model" in proc.stderr or "Database Error" in proc.stderr  # dbt's log
    state = emulator.emulator.snapshot()
    assert APP_ID not in state["users"]
    assert len(state["accounts"][APP_ID]) == 12 and len(state["events"]) == 40
    report = results_file(project)
    assert report["skipped"] == [FAILED] and report["dbt_success"] is False
    assert synced(report) == ["heap_accounts", "heap_purchases"]


def test_run_with_json_keeps_dbt_off_stdout_and_exits_0(project: Path, emulator: RunningEmulator) -> None:
    proc = heap_dbt(project, "run", "--json", "--", "run", "-s", "heap_accounts", base_url=emulator.url)

    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)  # dbt's log went to stderr
    assert synced(doc) == ["heap_accounts"] and doc["dbt_success"] is True
    assert doc["skipped"] == []  # the models dbt was not asked to build are not "skipped"
    assert len(emulator.emulator.snapshot()["accounts"][APP_ID]) == 12


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("run", "--target", "nope"), "dbt could not run `dbt run --target nope`"),
        (
            ("compile",),
            "heap-dbt run syncs what `dbt run` or `dbt build` built, and `dbt compile` builds no model",
        ),
    ],
    ids=["dbt-cannot-start", "command-builds-nothing"],
)
def test_run_exits_2_when_dbt_cannot_build(
    project: Path, emulator: RunningEmulator, args: tuple[str, ...], says: str
) -> None:
    proc = heap_dbt(project, "run", *args, base_url=emulator.url)

    assert proc.returncode == 2, proc.stderr
    assert says in " ".join(proc.stderr.split()) and "Traceback" not in proc.stderr
    assert emulator.emulator.snapshot()["requests"] == {}
