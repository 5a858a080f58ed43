"""Artifacts of dbt 1.12 and dbt Fusion (dbt Core 2.0) sync as dbt 1.11's do.

The shapes (``tests.artifact_shapes``) are the sample project's real dbt 1.11 artifacts with
the documented differences applied. Each test runs the real CLI against the Heap emulator,
from a local target/ and from dbt Cloud.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from heap_dbt.emulator import RunningEmulator
from tests.artifact_shapes import SHAPES, Files, fusion
from tests.cloud_artifacts import ACCOUNTS, EVENTS, USERS, cloud_env
from tests.conftest import APP_ID, heap_dbt
from tests.fake_dbt_cloud import FakeDbtCloud, Step

pytestmark = pytest.mark.integration


def saved(project: Path) -> Files:
    return {name: (project / "target" / name).read_bytes() for name in ("manifest.json", "run_results.json")}


def put(project: Path, files: Files) -> None:
    for name, data in files.items():
        (project / "target" / name).write_bytes(data)


def received(emulator: RunningEmulator) -> tuple[int, int, int]:
    state = emulator.emulator.snapshot()
    return (
        len(state["users"].get(APP_ID, {})),
        len(state["accounts"].get(APP_ID, {})),
        len(state["events"]),
    )


def report(proc: Any) -> dict[str, Any]:
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


@pytest.mark.parametrize("shape", list(SHAPES))
def test_the_artifacts_of_each_dbt_sync_every_model_the_build_built(
    shape: str, project: Path, emulator: RunningEmulator
) -> None:
    put(project, SHAPES[shape](saved(project)))

    doc = report(heap_dbt(project, "sync", "--json", base_url=emulator.url))

    assert received(emulator) == (USERS, ACCOUNTS, EVENTS)
    assert doc["skipped"] == [] and doc["warnings"] == []
    assert sorted(s["model"] for s in doc["syncs"]) == ["heap_accounts", "heap_purchases", "heap_users"]


def test_fusion_gates_on_a_model_that_failed(project: Path, emulator: RunningEmulator) -> None:
    """`reused` and `no-op` count as built; `error` still skips its model."""
    files = fusion(saved(project))
    results = json.loads(files["run_results.json"])
    for r in results["results"]:
        if r["unique_id"] == "model.heap_demo.heap_users":
            r["status"] = "error"
    put(project, {**files, "run_results.json": json.dumps(results).encode()})

    doc = report(heap_dbt(project, "sync", "--json", base_url=emulator.url))

    assert received(emulator) == (0, ACCOUNTS, EVENTS)
    assert [(s["model"], s["reason"]) for s in doc["skipped"]] == [
        ("heap_users", "failed in the last dbt run")
    ]


def test_fusion_results_of_a_command_that_builds_nothing_are_said_so(
    project: Path, emulator: RunningEmulator
) -> None:
    """Fusion's args name only the command: `dbt compile` results are not a run's."""
    files = fusion(saved(project), command="compile")
    results = json.loads(files["run_results.json"])
    results["results"] = [r for r in results["results"] if r["unique_id"] == "model.heap_demo.heap_users"]
    put(project, {**files, "run_results.json": json.dumps(results).encode()})

    doc = report(heap_dbt(project, "sync", "--json", base_url=emulator.url))

    assert received(emulator) == (USERS, ACCOUNTS, EVENTS)
    assert doc["skipped"] == []
    assert any("is from `dbt compile`, which builds no model" in w for w in doc["warnings"])


@pytest.mark.parametrize("shape", ["dbt-1.12", "fusion"])
def test_dbt_cloud_artifacts_of_each_dbt_sync_as_well(
    shape: str, project: Path, dbt_cloud: FakeDbtCloud, emulator: RunningEmulator
) -> None:
    files = SHAPES[shape](saved(project))
    dbt_cloud.add_run(100, job_id=1, steps=[Step("Invoke dbt with `dbt build`", files)])

    proc = heap_dbt(
        project, "sync", "--json", "--dbt-cloud-job", "1", base_url=emulator.url, **cloud_env(dbt_cloud)
    )

    doc = report(proc)
    assert received(emulator) == (USERS, ACCOUNTS, EVENTS)
    assert doc["skipped"] == [] and doc["dbt_cloud"]["run_id"] == 100


@pytest.mark.parametrize("shape", ["dbt-1.12", "fusion"])
async def test_heap_dbt_serve_syncs_a_run_with_the_artifacts_of_each_dbt(
    shape: str, project: Path, dbt_cloud: FakeDbtCloud, emulator: RunningEmulator
) -> None:
    from tests.integration.test_server import JOB, RUN, delivery, running_server

    files = SHAPES[shape](saved(project))
    dbt_cloud.add_run(RUN, job_id=JOB, steps=[Step("Invoke dbt with `dbt build`", files)])

    async with running_server(project, emulator, dbt_cloud) as srv:
        status, _ = await srv.post(delivery("wev_newer"))
        await srv.idle()

    assert status == 202
    assert received(emulator) == (USERS, ACCOUNTS, EVENTS)
    done = next(e for e in srv.logs if e.get("event_id") == "wev_newer" and e["event"] == "sync finished")
    assert done["outcome"].startswith(f"success: sent {USERS + ACCOUNTS + EVENTS},")
