"""Through the CLI: the files a sync creates are the owner's only, DuckDB's .wal included."""

from __future__ import annotations

import contextlib
import os
import stat
import subprocess
import time
from pathlib import Path

import pytest

from heap_dbt.emulator import RunningEmulator
from tests.conftest import APP_ID, BIN, clean_env

pytestmark = pytest.mark.integration


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_sync_creates_its_state_file_its_wal_and_its_results_0600(
    project: Path, emulator: RunningEmulator
) -> None:
    state = project / "private" / "heap_state.duckdb"
    wal = state.with_name(state.name + ".wal")
    emulator.emulator.configure(delay=2.0)  # DuckDB keeps the .wal until the state is closed
    old = os.umask(0o022)  # the common default: only heap-dbt's own care makes the files private
    try:
        proc = subprocess.Popen(
            [str(BIN / "heap-dbt"), "sync", "-s", "heap_users", "--state-path", str(state)],
            cwd=project,
            env=clean_env(HEAP_BASE_URL=emulator.url, HEAP_APP_ID=APP_ID),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    finally:
        os.umask(old)
    wal_modes: set[int] = set()
    try:
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            # DuckDB may checkpoint the .wal away between the two calls.
            with contextlib.suppress(FileNotFoundError):
                if wal.exists():
                    wal_modes.add(mode(wal))
            time.sleep(0.01)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    assert proc.returncode == 0, err
    assert wal_modes == {0o600}
    assert mode(state) == 0o600 and mode(state.parent) == 0o700
    assert mode(project / "target" / "heap_sync_results.json") == 0o600
