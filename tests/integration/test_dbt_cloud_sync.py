"""heap-dbt sync --dbt-cloud-run/--dbt-cloud-job end to end: the real CLI, the fake dbt Cloud
Admin API serving artifacts of real dbt commands, and the Heap emulator, on DuckDB.

The artifacts come from real `dbt build`, `dbt run` and `dbt docs generate` runs of a copy of
the sample project, one per dbt Cloud step; the warehouse heap-dbt reads is that copy's
DuckDB file, with a local target/ whose artifacts disagree with dbt Cloud's, so that a
sync that read them would send something else.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from heap_dbt.emulator import RunningEmulator
from tests.cloud_artifacts import ACCOUNTS, EVENTS, USERS, Artifacts, build_cloud_artifacts, cloud_env
from tests.conftest import APP_ID, clean_env, heap_dbt
from tests.fake_dbt_cloud import FakeDbtCloud, Step

pytestmark = pytest.mark.integration

BUILD = "Invoke dbt with `dbt build`"
DOCS = "Invoke dbt with `dbt docs generate`"


@pytest.fixture(scope="module")
def artifacts(built_sample: Path, tmp_path_factory: pytest.TempPathFactory) -> Artifacts:
    return build_cloud_artifacts(built_sample, tmp_path_factory.mktemp("cloud") / "heap_demo")


@pytest.fixture
def local(artifacts: Artifacts, tmp_path: Path) -> Path:
    """A private copy of the warehouse's project. Its target/ holds `dbt run -s heap_accounts`
    results: a sync that read them would skip heap_users and heap_purchases."""
    dest = tmp_path / "heap_demo"
    shutil.copytree(artifacts.project, dest)
    return dest


def sync(project: Path, cloud: FakeDbtCloud, emulator: RunningEmulator, *args: str, **env: str) -> Any:
    return heap_dbt(project, "sync", *args, base_url=emulator.url, **cloud_env(cloud, **env))


def results_file(project: Path) -> dict[str, Any]:
    return json.loads((project / "target" / "heap_sync_results.json").read_text())  # type: ignore[no-any-return]


def received(emulator: RunningEmulator) -> tuple[int, int, int]:
    state = emulator.emulator.snapshot()
    return (
        len(state["users"].get(APP_ID, {})),
        len(state["accounts"].get(APP_ID, {})),
        len(state["events"]),
    )


def no_token(cloud: FakeDbtCloud, proc: Any, project: Path) -> None:
    assert cloud.token not in proc.stdout and cloud.token not in proc.stderr
    results = project / "target" / "heap_sync_results.json"
    if results.exists():
        assert cloud.token not in results.read_text()


def as_on_dbt_cloud(files: dict[str, bytes]) -> dict[str, bytes]:
    """The artifacts with the args dbt Cloud's machine records: its own paths and target (here
    the sample's `ci` target, whose DuckDB file does not exist locally)."""
    doc = json.loads(files["run_results.json"])
    doc["args"].update(project_dir="/tmp/jobs/100/target/heap_demo", profiles_dir="/tmp/jobs/100/.dbt",
                       target="ci")  # fmt: skip
    return {**files, "run_results.json": json.dumps(doc).encode()}


def test_a_job_syncs_its_latest_successful_run_and_ignores_the_local_target(
    artifacts: Artifacts, local: Path, dbt_cloud: FakeDbtCloud, emulator: RunningEmulator
) -> None:
    build = as_on_dbt_cloud(artifacts.build)
    dbt_cloud.add_run(100, job_id=1, steps=[Step(BUILD, build), Step(DOCS, as_on_dbt_cloud(artifacts.docs))])
    dbt_cloud.add_run(
        101, job_id=1, status=20, steps=[Step("Invoke dbt with `dbt run`", artifacts.failed_run, 20)]
    )

    proc = sync(local, dbt_cloud, emulator, "--dbt-cloud-job", "1")

    assert proc.returncode == 0, proc.stderr
    assert received(emulator) == (USERS, ACCOUNTS, EVENTS)  # the local target would send accounts only
    report = results_file(local)
    assert report["dbt_cloud"] == {
        "host": dbt_cloud.url, "account_id": dbt_cloud.account_id, "run_id": 100, "job_id": 1,
        "status": 10, "steps": [4],
    }  # fmt: skip
    assert report["dbt_success"] is True and report["skipped"] == [] and report["warnings"] == []
    assert "runs/100/artifacts/manifest.json?step=4" in dbt_cloud.paths()
    assert not any("run_results.json?step=5" in p for p in dbt_cloud.paths())  # never docs generate's
    no_token(dbt_cloud, proc, local)


def test_no_local_target_is_needed_and_the_results_file_goes_there(
    artifacts: Artifacts, local: Path, dbt_cloud: FakeDbtCloud, emulator: RunningEmulator
) -> None:
    shutil.rmtree(local / "target")
    dbt_cloud.add_run(100, job_id=1, steps=[Step(BUILD, artifacts.build)])

    proc = sync(local, dbt_cloud, emulator, "--dbt-cloud-job", "1")

    assert proc.returncode == 0, proc.stderr
    assert received(emulator) == (USERS, ACCOUNTS, EVENTS)
    assert sorted(p.name for p in (local / "target").iterdir()) == ["heap_sync_results.json"]
    assert results_file(local)["dbt_cloud"]["run_id"] == 100


def test_a_failed_run_whose_last_step_is_docs_generate_syncs_only_what_it_built(
    artifacts: Artifacts, local: Path, dbt_cloud: FakeDbtCloud, emulator: RunningEmulator
) -> None:
    dbt_cloud.add_run(200, job_id=2, status=20, steps=[
        Step("Invoke dbt with `dbt run`", artifacts.failed_run, status=20),
        Step(DOCS, artifacts.failed_docs),
    ])  # fmt: skip

    proc = sync(local, dbt_cloud, emulator, "--dbt-cloud-run", "200", "--json")

    assert proc.returncode == 1, proc.stderr
    assert received(emulator) == (0, ACCOUNTS, EVENTS)  # no stale heap_users row reached Heap
    assert (
        "Warning: dbt Cloud run 200 failed (status error); heap-dbt synced only the models that "
        "succeeded in it." in proc.stderr
    )
    doc = json.loads(proc.stdout)
    assert doc["skipped"] == [{"model": "heap_users", "unique_id": "model.heap_demo.heap_users",
                               "reason": "failed in the last dbt run"}]  # fmt: skip
    assert doc["dbt_success"] is False and doc["success"] is False
    assert sorted(s["model"] for s in doc["syncs"]) == ["heap_accounts", "heap_purchases"]
    assert all(s["status"] == "success" for s in doc["syncs"])
    assert results_file(local) == doc
    no_token(dbt_cloud, proc, local)


def test_a_job_with_two_run_steps_gates_on_both(
    artifacts: Artifacts, local: Path, dbt_cloud: FakeDbtCloud, emulator: RunningEmulator
) -> None:
    dbt_cloud.add_run(300, job_id=3, steps=[
        Step("Invoke dbt with `dbt run -s heap_users`", artifacts.run_users),
        Step("Invoke dbt with `dbt run-operation heap_demo_noop`", artifacts.run_operation),
        Step("Invoke dbt with `dbt run -s heap_accounts heap_purchases`", artifacts.run_others),
        Step(DOCS, artifacts.docs),
    ])  # fmt: skip

    proc = sync(local, dbt_cloud, emulator, "--dbt-cloud-run", "300")

    assert proc.returncode == 0, proc.stderr
    assert received(emulator) == (USERS, ACCOUNTS, EVENTS)
    assert results_file(local)["dbt_cloud"]["steps"] == [4, 6]
    assert proc.stdout.startswith("dbt Cloud run 300 of job 3, the results of steps 4, 6.\n")
    assert "SKIP" not in proc.stdout and "Warning" not in proc.stderr


@pytest.mark.parametrize(
    "wait", [["--wait", "30"], ["--wait"], ["--wait=30"]], ids=["seconds", "bare", "equals"]
)
def test_wait_polls_a_run_in_progress_until_it_finishes(
    artifacts: Artifacts, local: Path, dbt_cloud: FakeDbtCloud, emulator: RunningEmulator, wait: list[str]
) -> None:
    dbt_cloud.add_run(400, job_id=4, polls=3, steps=[Step(BUILD, artifacts.build)])

    proc = sync(
        local, dbt_cloud, emulator, "--dbt-cloud-run", "400", *wait, "--dbt-cloud-poll-interval", "0.05"
    )

    assert proc.returncode == 0, proc.stderr
    assert received(emulator) == (USERS, ACCOUNTS, EVENTS)
    assert dbt_cloud.paths().count("runs/400/?include_related=['run_steps','job']") == 4


def test_a_job_with_wait_waits_for_its_run_in_progress(
    artifacts: Artifacts, local: Path, dbt_cloud: FakeDbtCloud, emulator: RunningEmulator
) -> None:
    dbt_cloud.add_run(
        400, job_id=4, status=20, steps=[Step("Invoke dbt with `dbt run`", artifacts.failed_run, 20)]
    )
    dbt_cloud.add_run(401, job_id=4, polls=2, steps=[Step(BUILD, artifacts.build)])

    proc = sync(
        local, dbt_cloud, emulator, "--dbt-cloud-job", "4", "--wait", "--dbt-cloud-poll-interval", "0.05"
    )

    assert proc.returncode == 0, proc.stderr
    assert results_file(local)["dbt_cloud"]["run_id"] == 401
    assert received(emulator) == (USERS, ACCOUNTS, EVENTS)


def test_a_run_in_progress_without_wait_is_refused(
    artifacts: Artifacts, local: Path, dbt_cloud: FakeDbtCloud, emulator: RunningEmulator
) -> None:
    dbt_cloud.add_run(400, job_id=4, polls=99, steps=[Step(BUILD, artifacts.build)])

    proc = sync(local, dbt_cloud, emulator, "--dbt-cloud-run", "400")
    assert proc.returncode == 2
    assert (
        "Error: dbt Cloud run 400 is still running; run heap-dbt again when it has finished, or pass --wait"
        in proc.stderr
    )

    timed_out = sync(local, dbt_cloud, emulator, "--dbt-cloud-run", "400", "--wait", "0.2",
                     "--dbt-cloud-poll-interval", "0.05")  # fmt: skip
    assert timed_out.returncode == 2
    assert "is still running after waiting 0.2 s; give --wait-timeout more seconds" in timed_out.stderr
    assert received(emulator) == (0, 0, 0)


ERRORS = [
    pytest.param({"artifacts_saved": False}, ["--dbt-cloud-run", "500"], {},
                 "Error: dbt Cloud run 500 saved no artifacts", id="no-artifacts"),
    pytest.param({}, ["--dbt-cloud-run", "500"], {"DBT_CLOUD_API_TOKEN": "dbtc_wrong"},
                 "Error: dbt Cloud refused the API token (HTTP 401)", id="bad-token"),
    pytest.param({}, ["--dbt-cloud-run", "777"], {},
                 "has no run 777 in account 43 (HTTP 404)", id="unknown-run"),
    pytest.param({}, ["--dbt-cloud-run", "500", "--dbt-cloud-account-id", "44"], {},
                 "has no account 44 (HTTP 404)", id="unknown-account"),
    pytest.param({}, ["--dbt-cloud-job", "9"], {}, "has no job 9 in account 43", id="unknown-job"),
    pytest.param({"status": 20}, ["--dbt-cloud-job", "5"], {},
                 "Error: dbt Cloud job 5 has no successful run yet", id="job-without-success"),
    pytest.param({"steps": "run-operation"}, ["--dbt-cloud-run", "500"], {},
                 "Error: dbt Cloud run 500 has no `dbt run` or `dbt build` step", id="no-run-step"),
    pytest.param({}, ["--dbt-cloud-run", "500", "--dbt-cloud-host", "http://cloud.getdbt.com"], {},
                 "plain http to cloud.getdbt.com, which would send the API token unencrypted", id="http"),
    pytest.param({}, ["--dbt-cloud-run", "500"], {"DBT_CLOUD_API_TOKEN": ""},
                 "Error: No dbt Cloud API token; set DBT_CLOUD_API_TOKEN", id="no-token"),
    pytest.param({}, ["--wait"], {}, "Error: --wait waits for a dbt Cloud run", id="wait-without-cloud"),
]  # fmt: skip


@pytest.mark.parametrize(("run", "args", "env", "says"), ERRORS)
def test_errors_are_one_sentence_and_exit_2(
    artifacts: Artifacts, local: Path, dbt_cloud: FakeDbtCloud, emulator: RunningEmulator,
    run: dict[str, Any], args: list[str], env: dict[str, str], says: str,
) -> None:  # fmt: skip
    steps = [Step(BUILD, artifacts.build)]
    if run.pop("steps", None) == "run-operation":
        steps = [Step("Invoke dbt with `dbt run-operation heap_demo_noop`", artifacts.run_operation),
                 Step(DOCS, artifacts.docs)]  # fmt: skip
    dbt_cloud.add_run(500, job_id=5, steps=steps, **run)
    before = (local / "target" / "run_results.json").read_bytes()

    proc = sync(local, dbt_cloud, emulator, *args, **env)

    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert says in proc.stderr and proc.stderr.count("Error:") == 1 and "Traceback" not in proc.stderr
    assert received(emulator) == (0, 0, 0) and proc.stdout == ""
    assert not (local / "target" / "heap_sync_results.json").exists()
    assert (local / "target" / "run_results.json").read_bytes() == before
    no_token(dbt_cloud, proc, local)
    assert "dbtc_wrong" not in proc.stderr


def test_a_host_that_cannot_be_reached(
    local: Path, emulator: RunningEmulator, dbt_cloud: FakeDbtCloud
) -> None:
    proc = heap_dbt(local, "sync", "--dbt-cloud-run", "1", base_url=emulator.url,
                    **cloud_env(dbt_cloud, DBT_CLOUD_HOST="http://127.0.0.1:9"))  # fmt: skip
    assert proc.returncode == 2
    assert "Error: Cannot reach dbt Cloud at http://127.0.0.1:9" in proc.stderr
    no_token(dbt_cloud, proc, local)


def test_the_token_is_not_in_help() -> None:
    proc = heap_dbt(
        Path.cwd(), "sync", "--help", DBT_CLOUD_API_TOKEN="dbtc_in-the-environment", COLUMNS="200"
    )
    assert proc.returncode == 0 and "--dbt-cloud-token" in proc.stdout and "--wait-timeout" in proc.stdout
    assert "dbtc_in-the-environment" not in proc.stdout


async def test_the_python_api_syncs_a_cloud_run_on_the_running_loop(
    artifacts: Artifacts, local: Path, dbt_cloud: FakeDbtCloud, emulator: RunningEmulator
) -> None:
    import heap_dbt

    dbt_cloud.add_run(200, job_id=2, status=20, steps=[
        Step("Invoke dbt with `dbt run`", artifacts.failed_run, status=20), Step(DOCS, artifacts.failed_docs),
    ])  # fmt: skip
    cloud = heap_dbt.CloudConfig.resolve(cloud_env(dbt_cloud))

    report = await heap_dbt.sync_cloud_async(
        cloud=cloud, run_id=200, project_dir=local, app_id=APP_ID, base_url=emulator.url, env=clean_env()
    )

    assert report.exit_code == 1 and report.dbt_success is False
    assert (
        report.dbt_cloud is not None
        and report.dbt_cloud["run_id"] == 200
        and report.dbt_cloud["steps"] == [4]
    )
    assert [m.model for m in report.skipped] == ["heap_users"]
    assert received(emulator) == (0, ACCOUNTS, EVENTS)
    assert report.warnings == [
        "dbt Cloud run 200 failed (status error); heap-dbt synced only the models that succeeded in it."
    ]
