"""What heap-dbt says so that nothing passes silently: a manifest older than the project's model
files, the state a dry run diffed against, and each event sync's event name and timestamp in
`ls`. The real CLI on a copy of the dbt-built sample project, with the Heap emulator.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from heap_dbt.emulator import RunningEmulator
from tests.cloud_artifacts import cloud_env
from tests.conftest import heap_dbt
from tests.fake_dbt_cloud import FakeDbtCloud, Step

pytestmark = pytest.mark.integration

STALE = (
    "is newer than {manifest}, so the manifest may not hold its changes; run `dbt parse` (or build) first."
)


def edited_after_the_manifest(project: Path, name: str) -> None:
    """``name`` changed a minute after dbt wrote the manifest (an edit without `dbt parse`)."""
    written = (project / "target" / "manifest.json").stat().st_mtime
    os.utime(project / name, (written + 60, written + 60))


def one_line(text: str) -> str:
    return " ".join(text.split())  # typer and rich may wrap long lines


@pytest.mark.parametrize("name", ["models/marts/schema.yml", "models/staging/stg_orders.sql"])
def test_a_model_file_newer_than_the_manifest_gets_a_warning(
    name: str, project: Path, emulator: RunningEmulator
) -> None:
    edited_after_the_manifest(project, name)

    proc = heap_dbt(project, "sync", "--dry-run", base_url=emulator.url)

    assert proc.returncode == 0, proc.stderr
    manifest = project / "target" / "manifest.json"
    assert f"Warning: {name} {STALE.format(manifest=manifest)}" in one_line(proc.stderr)


def test_a_manifest_newer_than_the_model_files_gets_none(project: Path, emulator: RunningEmulator) -> None:
    proc = heap_dbt(project, "sync", "--dry-run", base_url=emulator.url)

    assert proc.returncode == 0, proc.stderr
    assert "is newer than" not in proc.stderr


def test_dbt_cloud_artifacts_get_no_warning_about_local_files(
    project: Path, dbt_cloud: FakeDbtCloud, emulator: RunningEmulator
) -> None:
    files = {n: (project / "target" / n).read_bytes() for n in ("manifest.json", "run_results.json")}
    dbt_cloud.add_run(100, job_id=1, steps=[Step("Invoke dbt with `dbt build`", files)])
    edited_after_the_manifest(project, "models/marts/schema.yml")

    proc = heap_dbt(
        project, "sync", "--dry-run", "--dbt-cloud-job", "1", base_url=emulator.url, **cloud_env(dbt_cloud)
    )

    assert proc.returncode == 0, proc.stderr
    assert "is newer than" not in proc.stderr


def dry_run(project: Path, emulator: RunningEmulator, *args: str, app_id: str | None) -> dict[str, object]:
    proc = heap_dbt(project, "sync", "--dry-run", "--json", *args, base_url=emulator.url, app_id=app_id)
    assert proc.returncode == 0, proc.stderr
    text = heap_dbt(project, "sync", "--dry-run", *args, base_url=emulator.url, app_id=app_id)
    doc: dict[str, object] = json.loads(proc.stdout)
    assert f"DRY RUN: nothing was sent.\n{doc['state']}\n" in text.stdout
    return doc


def test_a_dry_run_says_which_state_it_diffed_against(project: Path, emulator: RunningEmulator) -> None:
    no_app_id = dry_run(project, emulator, app_id=None)
    first = dry_run(project, emulator, app_id="1234567890")
    synced = heap_dbt(project, "sync", base_url=emulator.url, app_id="1234567890")
    assert synced.returncode == 0, synced.stderr
    again = dry_run(project, emulator, app_id="1234567890")
    refresh = dry_run(project, emulator, "--full-refresh", app_id="1234567890")

    assert no_app_id["state"] == (
        "State: no app_id, so heap-dbt cannot know what Heap holds; every row counts as new. Pass "
        "--app-id or set HEAP_APP_ID to diff against the sync state."
    )
    assert (
        first["state"]
        == "State: no sync state yet in schema heap_dbt of target 'dev'; every row counts as new."
    )
    assert again["state"] == "State: diffed against the sync state in schema heap_dbt of target 'dev'."
    assert again["totals"]["unchanged"] == again["totals"]["read"] == 88  # type: ignore[index]
    assert refresh["state"] == "State: --full-refresh ignores the sync state; every row counts as new."


def test_a_dry_run_names_the_state_file(project: Path, emulator: RunningEmulator, tmp_path: Path) -> None:
    path = tmp_path / "state.duckdb"

    doc = dry_run(project, emulator, "--state-path", str(path), app_id="1234567890")

    assert doc["state"] == f"State: no sync state yet in the state file {path}; every row counts as new."


def test_ls_shows_each_event_sync_s_event_name_and_timestamp_column(project: Path) -> None:
    proc = heap_dbt(project, "ls")

    assert proc.returncode == 0, proc.stderr
    (line,) = [row for row in proc.stdout.splitlines() if row.startswith("heap_purchases")]
    assert line.split()[3:6] == ["key=purchase_id", "event=Purchase", "timestamp=purchased_at"]


def test_a_selection_typo_against_dbt_cloud_artifacts_is_a_usage_error(
    project: Path, dbt_cloud: FakeDbtCloud, emulator: RunningEmulator
) -> None:
    files = {n: (project / "target" / n).read_bytes() for n in ("manifest.json", "run_results.json")}
    dbt_cloud.add_run(100, job_id=1, steps=[Step("Invoke dbt with `dbt build`", files)])

    proc = heap_dbt(
        project,
        "sync",
        "--dbt-cloud-job",
        "1",
        "-s",
        "customrs",
        base_url=emulator.url,
        **cloud_env(dbt_cloud),
    )

    assert proc.returncode == 2
    message = one_line(proc.stderr)
    assert (
        "Error: Nothing in the manifest at dbt Cloud run 100/manifest.json matches this criterion" in message
    )
    assert "--select 'customrs'" in message and "heap_accounts, heap_purchases, heap_users" in message
    assert emulator.emulator.snapshot()["requests"] == {}
