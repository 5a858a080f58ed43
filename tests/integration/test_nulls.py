"""NULLs are visible: a property that became NULL leaves Heap's value in place (Heap has no
unset), each sync counts such NULLs, and ``nulls: clear`` sends them as empty strings, on
every warehouse, against what the emulator holds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from heap_dbt.emulator import run_in_thread
from tests.conftest import APP_ID, dbt, heap_dbt
from tests.warehouses import Warehouse

pytestmark = pytest.mark.integration

COLUMNS = {"plan": "VARCHAR", "score": "BIGINT"}


def build(
    warehouse: Warehouse, project: Path, rows: dict[str, dict[str, Any]], block: dict[str, Any]
) -> None:
    """The model ``null_users`` holding ``rows`` (key -> column values), declared with ``block``, built."""
    selects = []
    for key, values in rows.items():
        cols = ", ".join(f"{warehouse.value_sql(values[c], t)} AS {c}" for c, t in COLUMNS.items())
        selects.append(f"SELECT {warehouse.value_sql(key, 'VARCHAR')} AS id, {cols}")
    models = project / "models" / "nulls"
    models.mkdir(exist_ok=True)
    (models / "null_users.sql").write_text("\nUNION ALL\n".join(selects) + "\n")
    schema = {"version": 2, "models": [{"name": "null_users", "config": {"meta": {"heap": block}}}]}
    (models / "schema.yml").write_text(yaml.safe_dump(schema))
    dbt(project, "run", "-s", "null_users", "--quiet")


def sync(project: Path, url: str, *args: str) -> tuple[int, str, dict[str, Any]]:
    proc = heap_dbt(project, "sync", "-s", "null_users", *args, base_url=url)
    assert "Traceback" not in proc.stderr, proc.stderr
    (result,) = json.loads((project / "target" / "heap_sync_results.json").read_text())["syncs"]
    return proc.returncode, proc.stdout, result


def test_a_null_keeps_heaps_value_is_counted_and_nulls_clear_sends_it_empty(
    warehouse: Warehouse, wh_project: Path
) -> None:
    keep = {"object": "user", "key": "id"}
    build(warehouse, wh_project, {"u1": {"plan": "pro", "score": 5}, "u2": {"plan": None, "score": 3}}, keep)

    with run_in_thread() as running:
        code, out, first = sync(wh_project, running.url)
        assert code == 0, out
        assert (first["sent"], first["nulls_kept"]) == (2, 1)  # u2's plan
        assert "NULLs kept 1" in out and "set `nulls: clear` in the block" in out

        # u1's plan becomes NULL: Heap has no unset, so it keeps "pro", and the sync says so.
        both_null = {"u1": {"plan": None, "score": 5}, "u2": {"plan": None, "score": 3}}
        build(warehouse, wh_project, both_null, keep)
        code, out, rehearsed = sync(wh_project, running.url, "--dry-run")
        assert code == 0, out
        assert (rehearsed["would_send"], rehearsed["changed"], rehearsed["nulls_kept"]) == (1, 1, 1)
        assert "NULLs kept 1" in out
        code, out, second = sync(wh_project, running.url)
        assert code == 0, out
        assert (second["sent"], second["unchanged"], second["nulls_kept"]) == (1, 1, 1)
        assert running.emulator.snapshot()["users"][APP_ID] == {
            "u1": {"plan": "pro", "score": 5},
            "u2": {"score": 3},
        }

        # nulls: clear changes what every record carries, so every row is sent once more.
        build(warehouse, wh_project, both_null, {**keep, "nulls": "clear"})
        code, out, cleared = sync(wh_project, running.url)
        assert code == 0, out
        assert (cleared["sent"], cleared["nulls_kept"]) == (2, 0)
        assert "NULLs kept" not in out
        assert running.emulator.snapshot()["users"][APP_ID] == {
            "u1": {"plan": "", "score": 5},
            "u2": {"plan": "", "score": 3},
        }
        code, out, again = sync(wh_project, running.url)
        assert code == 0, out
        assert (again["sent"], again["unchanged"]) == (0, 2)
