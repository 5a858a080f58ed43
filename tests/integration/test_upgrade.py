"""Upgrading heap-dbt resends nothing and duplicates nothing: a state written by the release
before sync names (tests/fixtures/legacy_state) is adopted under the sync's name, with the
idempotency keys and row hashes that release used."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import duckdb
import pytest

from heap_dbt.emulator import RunningEmulator
from tests.conftest import dbt, heap_dbt
from tests.integration.test_identity import (
    EVENTS,
    EVENTS_SQL,
    SELECT,
    USERS,
    USERS_SQL,
    by_name,
    heap_model,
    write,
)

pytestmark = pytest.mark.integration

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "legacy_state"


@pytest.fixture
def upgraded(built_sample: Path, tmp_path: Path) -> Path:
    """The identity models built in DuckDB, with the state the earlier release left."""
    project = tmp_path / "heap_demo"
    shutil.copytree(built_sample, project)
    write(
        project,
        {"id_events.sql": EVENTS_SQL, "id_users.sql": USERS_SQL},
        [heap_model("id_events", EVENTS), heap_model("id_users", USERS)],
    )
    dbt(project, "run", "-s", SELECT, "--quiet")
    tables = json.loads((FIXTURE / "duckdb_state.json").read_text())
    with duckdb.connect(str(project / "heap_demo.duckdb")) as con:
        con.execute("CREATE SCHEMA heap_dbt")
        for name, table in tables.items():
            con.execute(table["ddl"])
            for row in table["rows"]:
                con.execute(f'INSERT INTO heap_dbt."{name}" VALUES ({", ".join("?" * len(row))})', row)
    return project


def sync(project: Path, emulator: RunningEmulator, *args: str) -> dict[str, Any]:
    proc = heap_dbt(project, "sync", "-s", SELECT, *args, base_url=emulator.url)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "new sync" not in proc.stdout
    return by_name(json.loads((project / "target" / "heap_sync_results.json").read_text()))


def test_upgrading_resends_nothing_and_keeps_every_event_key(
    upgraded: Path, emulator: RunningEmulator
) -> None:
    first = sync(upgraded, emulator)
    assert (first["event:Ping:id"]["sent"], first["event:Ping:id"]["unchanged"]) == (0, 50)
    assert (first["user:email"]["sent"], first["user:email"]["unchanged"]) == (0, 10)
    assert first["event:Ping:id"]["skipped_unchanged"]  # the earlier release's fingerprint still matches

    # Adopted under its name, the sync now survives a rename as any other does.
    write(
        upgraded,
        {"fct_pings.sql": EVENTS_SQL, "dim_people.sql": USERS_SQL},
        [heap_model("fct_pings", EVENTS), heap_model("dim_people", USERS)],
    )
    dbt(upgraded, "run", "-s", SELECT, "--quiet")
    renamed = sync(upgraded, emulator)
    assert renamed["event:Ping:id"]["sent"] == renamed["user:email"]["sent"] == 0
    assert emulator.emulator.snapshot()["events"] == []

    # Sent again on purpose, the events carry the keys the earlier release gave them, so Heap
    # (which keeps the first event of a key) holds none of them twice.
    resent = sync(upgraded, emulator, "--full-refresh")
    assert resent["event:Ping:id"]["sent"] == 50
    held = json.loads((FIXTURE / "heap.json").read_text())
    keys = sorted(e["idempotency_key"] for e in emulator.emulator.snapshot()["events"])
    assert keys == held["event_keys"]
