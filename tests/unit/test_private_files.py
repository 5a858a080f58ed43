"""Files heap-dbt creates that hold row keys, identities or app_ids are the owner's only (0600)."""

from __future__ import annotations

import datetime as dt
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from heap_dbt.emulator import HeapEmulator
from heap_dbt.report import RESULTS_FILE, RowIssue, SyncReport, SyncResult
from heap_dbt.warehouse.duckdb import DuckDBReader


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(autouse=True)
def permissive_umask() -> Iterator[None]:
    """The common default umask, so that only heap-dbt's own care makes a file private."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def test_the_results_file_is_0600_even_when_it_replaces_a_0644_one(tmp_path: Path) -> None:
    dest = tmp_path / RESULTS_FILE
    dest.write_text("{}")
    dest.chmod(0o644)
    result = SyncResult(
        model="m", unique_id="model.p.m", object="user", meta_path="config.meta.heap", app_id=""
    )
    result.rejections.append(RowIssue("alice@example.com", "too long"))
    report = SyncReport(dry_run=False, started_at=dt.datetime.now(dt.UTC), syncs=[result])

    written = report.write(tmp_path)

    assert written == dest and mode(dest) == 0o600
    assert json.loads(dest.read_text())["syncs"][0]["rejections"][0]["key"] == "alice@example.com"
    assert [p.name for p in tmp_path.iterdir()] == [RESULTS_FILE]


@pytest.fixture
def warehouse(tmp_path: Path) -> Path:
    path = tmp_path / "dev.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE TABLE users AS SELECT 'a@x.com' AS email")
    return path


def test_a_state_file_heap_dbt_creates_is_0600_in_a_0700_dir(warehouse: Path, tmp_path: Path) -> None:
    state_path = tmp_path / "state" / "heap_dbt_state.duckdb"

    reader = DuckDBReader(warehouse, writable=True, state_path=state_path)
    try:
        store = reader.state(schema="heap_dbt", writable=True)
        assert store is not None
        assert mode(state_path) == 0o600
        assert mode(state_path.parent) == 0o700
    finally:
        reader.close()
    assert mode(state_path) == 0o600


def test_an_existing_state_file_keeps_the_mode_its_owner_gave_it(warehouse: Path, tmp_path: Path) -> None:
    state_path = tmp_path / "heap_dbt_state.duckdb"
    duckdb.connect(str(state_path)).close()
    state_path.chmod(0o640)

    reader = DuckDBReader(warehouse, writable=True, state_path=state_path)
    reader.close()

    assert mode(state_path) == 0o640


def test_the_emulator_state_file_is_0600_even_when_it_replaces_a_0644_one(tmp_path: Path) -> None:
    state_file = tmp_path / "heap_state.json"
    state_file.write_text("{}")
    state_file.chmod(0o644)
    emulator = HeapEmulator(state_file=state_file)

    emulator.write_state_file(force=True)

    assert mode(state_file) == 0o600
    assert set(json.loads(state_file.read_text())) >= {"users", "accounts", "events"}
    assert [p.name for p in tmp_path.iterdir()] == [state_file.name]
