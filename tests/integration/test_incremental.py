"""Incremental syncs: state in the warehouse, diff in SQL, only changed rows leave, nothing lost."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import duckdb
import pytest

from heap_dbt.emulator import RunningEmulator
from tests.conftest import APP_ID, BIN, clean_env, dbt, heap_dbt
from tests.warehouses import Warehouse

pytestmark = pytest.mark.integration

INC_USERS = """
select 'u' || i || '@example.com' as email,
       case when i < {{ var('changed', 0) }} then 'vip' else 'plan' || (i % 3) end as plan,
       {% if var('bio', false) %} repeat('b', case when i = 0 then 2000 else 10 end) as bio, {% endif %}
       i * 10 as score
from {{ numbers(var('n', 100)) }}
"""

INC_EVENTS = """
select 'ev' || i as id, 'u' || (i % 10) || '@example.com' as who, i as n,
       {{ var('event_value', 1) }} as v
from {{ numbers(var('n', 100)) }}
"""

INC_SCHEMA = """
version: 2
models:
  - name: inc_users
    config:
      meta:
        heap: {object: user, key: email, fields: {plan: plan, score: score}}
  - name: inc_events
    config:
      meta:
        heap: {object: event, key: id, identity: who, event_name: Ping}
"""


def _add_inc_models(project: Path) -> Path:
    models = project / "models" / "inc"
    models.mkdir()
    (models / "inc_users.sql").write_text(INC_USERS)
    (models / "inc_events.sql").write_text(INC_EVENTS)
    (models / "schema.yml").write_text(INC_SCHEMA)
    dbt(project, "run", "-s", "inc_users inc_events", "--quiet")
    return project


@pytest.fixture(scope="module")
def inc_base(warehouse: Warehouse, wh_built_sample: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _add_inc_models(warehouse.copy(wh_built_sample, tmp_path_factory.mktemp("inc") / "heap_demo"))


@pytest.fixture
def inc(warehouse: Warehouse, inc_base: Path, tmp_path: Path) -> Path:
    """A private copy of the incremental models, in each warehouse."""
    return warehouse.copy(inc_base, tmp_path / "heap_demo")


@pytest.fixture(scope="module")
def duck_inc_base(built_sample: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    project = tmp_path_factory.mktemp("duck-inc") / "heap_demo"
    shutil.copytree(built_sample, project)
    return _add_inc_models(project)


@pytest.fixture
def duck_inc(duck_inc_base: Path, tmp_path: Path) -> Path:
    """The incremental models in DuckDB, for what only DuckDB has (a local file, memory sizing)."""
    project = tmp_path / "heap_demo"
    shutil.copytree(duck_inc_base, project)
    return project


def rebuild(project: Path, **variables: Any) -> None:
    dbt(project, "run", "-s", "inc_users inc_events", "--vars", json.dumps(variables), "--quiet")


def sync(project: Path, emulator: RunningEmulator, *args: str) -> dict[str, dict[str, Any]]:
    proc = heap_dbt(project, "sync", "-s", "inc_users inc_events", *args, base_url=emulator.url)
    assert proc.returncode in (0, 1), proc.stdout + proc.stderr
    report = json.loads((project / "target" / "heap_sync_results.json").read_text())
    out = {s["model"]: s for s in report["syncs"]}
    for s in out.values():  # every row of the model is in exactly one count
        assert s["read"] == s["sent"] + s["unchanged"] + s["rejected"] + s["failed"] + s.get("would_send", 0)
    out["_exit"] = {"code": proc.returncode}
    return out


def counts(s: dict[str, Any], *names: str) -> tuple[int, ...]:
    return tuple(s[n] for n in names)


@pytest.mark.timeout(180)  # four dbt invocations and four syncs, each a process of its own
def test_only_changed_new_and_removed_rows_are_handled(inc: Path, emulator: RunningEmulator) -> None:
    first = sync(inc, emulator)
    assert counts(first["inc_users"], "read", "sent", "unchanged") == (100, 100, 0)
    assert counts(first["inc_events"], "read", "sent", "unchanged") == (100, 100, 0)

    rebuild(inc)  # same data, freshly built by dbt
    noop = sync(inc, emulator)
    assert counts(noop["inc_users"], "read", "sent", "unchanged") == (100, 0, 100)
    assert counts(noop["inc_events"], "read", "sent", "unchanged") == (100, 0, 100)
    requests_after_noop = emulator.emulator.snapshot()["requests"]

    rebuild(inc, changed=3, n=110, event_value=2)
    changed = sync(inc, emulator)
    users = changed["inc_users"]
    assert counts(users, "read", "sent", "unchanged", "new", "changed") == (110, 13, 97, 10, 3)
    # An event already in Heap is never sent again, even if its row changed.
    assert counts(changed["inc_events"], "read", "sent", "unchanged") == (110, 10, 100)
    state = emulator.emulator.snapshot()
    assert state["users"][APP_ID]["u1@example.com"]["plan"] == "vip"
    assert len(state["events"]) == 110 and state["duplicate_events"] == 0

    rebuild(inc, changed=3, n=90, event_value=2)
    removed = sync(inc, emulator)
    assert counts(removed["inc_users"], "read", "sent", "unchanged", "removed") == (90, 0, 90, 20)
    assert counts(removed["inc_events"], "read", "sent", "removed") == (90, 0, 20)
    assert requests_after_noop == {"/api/add_user_properties": 1, "/api/track": 1}


def test_a_changed_mapping_resends_the_affected_rows(inc: Path, emulator: RunningEmulator) -> None:
    sync(inc, emulator)
    schema = inc / "models" / "inc" / "schema.yml"
    schema.write_text(
        schema.read_text().replace(
            "fields: {plan: plan, score: score}", "fields: {plan: plan, points: score}"
        )
    )
    dbt(inc, "parse", "--quiet")

    again = sync(inc, emulator)

    assert counts(again["inc_users"], "sent", "changed", "unchanged") == (100, 100, 0)
    assert emulator.emulator.snapshot()["users"][APP_ID]["u5@example.com"]["points"] == 50


def test_full_refresh_resends_everything_and_rebuilds_the_state(inc: Path, emulator: RunningEmulator) -> None:
    sync(inc, emulator)

    full = sync(inc, emulator, "--full-refresh")
    after = sync(inc, emulator)

    assert counts(full["inc_users"], "sent", "unchanged") == (100, 0)
    assert counts(full["inc_events"], "sent", "unchanged") == (100, 0)
    state = emulator.emulator.snapshot()
    assert len(state["events"]) == 100 and state["duplicate_events"] == 100  # Heap dedups the resend
    assert counts(after["inc_users"], "sent", "unchanged") == (0, 100)


@pytest.mark.timeout(180)  # three dbt runs and three syncs, each a process of its own
def test_rejected_rows_are_tried_again_on_the_next_run(inc: Path, emulator: RunningEmulator) -> None:
    schema = inc / "models" / "inc" / "schema.yml"
    schema.write_text(
        schema.read_text().replace("{plan: plan, score: score}", "{plan: plan, score: score, bio: bio}")
    )
    rebuild(inc, bio=True)

    first = sync(inc, emulator)
    second = sync(inc, emulator)
    rebuild(inc, bio=False)
    schema.write_text(schema.read_text().replace(", bio: bio}", "}"))
    rebuild(inc)
    third = sync(inc, emulator)

    assert first["_exit"]["code"] == 1
    assert counts(first["inc_users"], "sent", "rejected") == (99, 1)
    assert counts(second["inc_users"], "sent", "unchanged", "rejected") == (0, 99, 1)
    assert second["inc_users"]["rejections"][0]["key"] == "u0@example.com"
    # With the mapping changed back every row differs from what Heap holds, u0 included.
    assert third["inc_users"]["rejected"] == 0 and third["inc_users"]["sent"] == 100
    assert "u0@example.com" in emulator.emulator.snapshot()["users"][APP_ID]


def test_rows_that_failed_are_not_recorded_and_go_next_time(inc: Path, emulator: RunningEmulator) -> None:
    emulator.emulator.configure(script=[500, 500])

    first = sync(inc, emulator, "--max-attempts", "2")
    second = sync(inc, emulator)

    assert counts(first["inc_users"], "sent", "failed") == (0, 100)
    assert counts(second["inc_users"], "sent", "unchanged", "new") == (100, 0, 100)
    assert len(emulator.emulator.snapshot()["users"][APP_ID]) == 100


def test_a_lost_answer_is_not_acknowledged(inc: Path, emulator: RunningEmulator) -> None:
    # Heap stored the request, but the answer never arrived: heap-dbt cannot know, so it retries
    # and only records the row once a 2xx comes back. Events are deduplicated by Heap.
    emulator.emulator.configure(drop_response_next=2)

    first = sync(inc, emulator)

    assert counts(first["inc_events"], "sent", "failed") == (100, 0)
    state = emulator.emulator.snapshot()
    assert len(state["events"]) == 100


def test_dry_run_reports_the_diff_and_writes_no_state(inc: Path, emulator: RunningEmulator) -> None:
    sync(inc, emulator)
    rebuild(inc, changed=2, n=105)
    history_before = heap_dbt(inc, "history", "--json").stdout

    dry = sync(inc, emulator, "--dry-run")
    history_after_dry_run = heap_dbt(inc, "history", "--json").stdout
    real = sync(inc, emulator)

    users = dry["inc_users"]
    assert counts(users, "would_send", "new", "changed", "unchanged", "rejected") == (7, 5, 2, 98, 0)
    assert history_after_dry_run == history_before
    assert real["inc_users"]["sent"] == 7


def test_history_shows_the_runs(inc: Path, emulator: RunningEmulator) -> None:
    sync(inc, emulator)
    sync(inc, emulator)

    proc = heap_dbt(inc, "history", "--json", "--limit", "3")
    runs = json.loads(proc.stdout)["runs"]

    assert proc.returncode == 0
    assert [r["run_id"] for r in runs] == [4, 3, 2]
    assert runs[0]["model"] in ("inc_users", "inc_events") and runs[0]["outcome"] == "success"
    assert runs[-1]["sent"] == 100 and APP_ID not in proc.stdout
    text = heap_dbt(inc, "history").stdout
    assert "inc_users" in text and "success" in text


def test_local_state_file_for_read_only_warehouses(
    inc: Path, warehouse: Warehouse, emulator: RunningEmulator
) -> None:
    state = inc / ".heap_dbt" / "state.duckdb"
    first = sync(inc, emulator, "--state-path", str(state))
    rebuild(inc, changed=3, n=90)
    second = sync(inc, emulator, "--state-path", str(state))

    assert state.exists()
    assert counts(first["inc_users"], "sent") == (100,)
    assert counts(second["inc_users"], "sent", "changed", "unchanged", "removed") == (3, 3, 87, 10)
    assert counts(second["inc_events"], "sent", "unchanged", "removed") == (0, 90, 10)
    assert emulator.emulator.snapshot()["users"][APP_ID]["u1@example.com"]["plan"] == "vip"
    assert "heap_dbt" not in warehouse.schemas(inc)  # nothing was written to the warehouse


@pytest.mark.parametrize(
    ("statement", "message"),
    [
        ("UPDATE heap_dbt.state_info SET version = 99", "has version 99; this heap-dbt reads version 1"),
        ("ALTER TABLE heap_dbt.sync_state DROP COLUMN hash", "is corrupt: table sync_state lacks hash"),
        ("DELETE FROM heap_dbt.state_info", "is corrupt"),
        ("DROP TABLE heap_dbt.state_info", "has no state_info table"),
    ],
    ids=["other-version", "missing-column", "empty-info", "foreign-schema"],
)
def test_an_unusable_state_is_a_clear_error_not_a_wrong_diff(
    inc: Path, warehouse: Warehouse, emulator: RunningEmulator, statement: str, message: str
) -> None:
    sync(inc, emulator)
    warehouse.execute(inc, statement)
    requests = emulator.emulator.snapshot()["requests"]

    proc = heap_dbt(inc, "sync", "-s", "inc_users", base_url=emulator.url)

    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert emulator.emulator.snapshot()["requests"] == requests


def test_a_state_file_that_is_not_duckdb_is_a_clear_error(duck_inc: Path, emulator: RunningEmulator) -> None:
    state = duck_inc / "state.duckdb"
    state.write_bytes(b"this is not a database" * 100)

    proc = heap_dbt(duck_inc, "sync", "--state-path", str(state), base_url=emulator.url)

    assert proc.returncode == 2
    assert "state file" in proc.stderr and "Traceback" not in proc.stderr


def test_a_second_concurrent_sync_is_refused_and_the_first_completes(
    inc: Path, emulator: RunningEmulator
) -> None:
    # Long enough that the first sync still holds the state while the second starts up.
    emulator.emulator.configure(delay=2.0)
    first = subprocess.Popen(
        [str(BIN / "heap-dbt"), "sync", "-s", "inc_users inc_events", "--concurrency", "1"],
        cwd=inc,
        env=clean_env(HEAP_BASE_URL=emulator.url, HEAP_APP_ID=APP_ID),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not emulator.emulator.snapshot()["requests"] and time.monotonic() < deadline:
            time.sleep(0.05)
        second = heap_dbt(inc, "sync", "-s", "inc_users", base_url=emulator.url)
    finally:
        out, err = first.communicate(timeout=60)

    assert second.returncode == 2
    assert "another process holds its lock" in second.stderr
    assert first.returncode == 0, out + err
    assert len(emulator.emulator.snapshot()["users"][APP_ID]) == 100


CRASH_EVENTS = """
select 'ev' || i as id, 'u' || (i % 97) || '@example.com' as who, i as n
from {{ numbers(var('n', 6000)) }}
"""
CRASH_USERS = """
select 'u' || i || '@example.com' as email, 'plan' || (i % 5) as plan, i as score
from {{ numbers(var('n', 6000)) }}
"""


@pytest.mark.timeout(150)  # five killed syncs and two whole ones, each a process; fakesnow is slow
def test_sigkill_at_random_points_loses_nothing_and_duplicates_no_event(
    inc: Path, emulator: RunningEmulator
) -> None:
    models = inc / "models" / "inc"
    (models / "inc_events.sql").write_text(CRASH_EVENTS)
    (models / "inc_users.sql").write_text(CRASH_USERS)
    rebuild(inc)
    emulator.emulator.configure(delay=0.03)
    env = clean_env(HEAP_BASE_URL=emulator.url, HEAP_APP_ID=APP_ID)
    cmd = [
        str(BIN / "heap-dbt"), "sync", "-s", "inc_users inc_events", "--concurrency", "2",
        "--batch-size", "40", "--events-per-minute", "0", "--events-per-identity-per-minute", "0",
    ]  # fmt: skip
    rng = random.Random(20261128)
    kills = 0
    for _ in range(5):
        before = sum(emulator.emulator.snapshot()["requests"].values())
        proc = subprocess.Popen(cmd, cwd=inc, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # Kill at a random point after this run started sending (start-up time differs by warehouse).
        deadline = time.monotonic() + 30
        while (
            sum(emulator.emulator.snapshot()["requests"].values()) == before
            and proc.poll() is None
            and time.monotonic() < deadline
        ):
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 1.5))
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            kills += 1
        proc.wait(timeout=30)
    assert kills >= 3, "the sync finished before it could be killed; slow the emulator down"

    emulator.emulator.configure(delay=0.0)
    final = sync(inc, emulator, "--events-per-minute", "0", "--events-per-identity-per-minute", "0")

    assert final["_exit"]["code"] == 0
    # acknowledgements were saved between the kills: the last run did not start from zero
    assert final["inc_users"]["sent"] + final["inc_events"]["sent"] < 12_000
    state = emulator.emulator.snapshot()
    keys = [e["idempotency_key"] for e in state["events"]]
    assert len(keys) == len(set(keys)) == 6000  # every event exactly once
    assert sorted(e["properties"]["n"] for e in state["events"]) == list(range(6000))
    users = state["users"][APP_ID]
    assert users == {f"u{i}@example.com": {"plan": f"plan{i % 5}", "score": i} for i in range(6000)}
    # and the state now knows it all: the next run sends nothing
    again = sync(inc, emulator)
    assert again["inc_users"]["sent"] == again["inc_events"]["sent"] == 0


def test_a_warehouse_error_mid_run_keeps_what_heap_acknowledged(
    duck_inc: Path, emulator: RunningEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    from heap_dbt import engine
    from heap_dbt.errors import WarehouseError
    from heap_dbt.warehouse.duckdb import DuckDBReader

    real_stream = DuckDBReader.stream

    def failing_stream(self: DuckDBReader, sql: str, *, batch_rows: int) -> Any:
        for i, batch in enumerate(real_stream(self, sql, batch_rows=batch_rows)):
            if i == 3:
                raise WarehouseError("The warehouse query failed: connection lost (test)")
            yield batch

    monkeypatch.setattr(DuckDBReader, "stream", failing_stream)
    options = engine.SyncOptions(
        project_dir=duck_inc,
        select=["inc_users"],
        app_id=APP_ID,
        base_url=emulator.url,
        env=clean_env(),
        arrow_batch_rows=10,
    )
    first = engine.run_sync(options).syncs[0]
    monkeypatch.undo()
    second = engine.run_sync(options).syncs[0]

    assert first.error is not None and "connection lost" in first.error
    assert first.sent == first.read == 30  # three batches of ten were read, sent and acknowledged
    assert (second.sent, second.unchanged) == (70, 30)  # the rest; nothing acknowledged goes again
    assert len(emulator.emulator.snapshot()["users"][APP_ID]) == 100
    with duckdb.connect(str(duck_inc / "heap_demo.duckdb"), read_only=True) as con:
        outcomes = con.execute("SELECT outcome FROM heap_dbt.sync_runs ORDER BY run_id").fetchall()
        keys = con.execute("SELECT count(*), count(DISTINCT (k1, k2)) FROM heap_dbt.sync_state").fetchall()
    assert [o for (o,) in outcomes] == ["error", "success"]
    assert keys == [(100, 100)]  # one row per key: the failed run compacted what it recorded


def test_out_of_memory_before_anything_is_sent_starts_the_sync_again_with_more(duck_inc: Path) -> None:
    """DuckDB's memory need is not smooth: a sync that runs out before its first batch starts over."""
    import functools

    from heap_dbt import engine
    from heap_dbt.warehouse.duckdb import DuckDBReader, Sizing

    rebuild(duck_inc, n=300_000)
    # A limit far too small for counting 300,000 distinct keys (that needs about 16 MB).
    tiny = Sizing(default_limit="6MB", scan_base=0, scan_per_column=1)
    options = engine.SyncOptions(project_dir=duck_inc, select=["inc_users"], dry_run=True, env=clean_env())

    def opener(sizing: Sizing) -> Any:
        return functools.partial(DuckDBReader.from_target, sizing=sizing)

    report = engine.run_sync(options, reader_factory=opener(tiny))

    (users,) = report.syncs
    assert users.error is None
    assert (users.read, users.would_send, users.rejected) == (300_000, 300_000, 0)
    assert any("DuckDB ran out of memory" in w and "--memory-limit" in w for w in report.warnings)

    no_room = Sizing(default_limit="6MB", scan_base=0, scan_per_column=1, max_growth=1)
    (users,) = engine.run_sync(options, reader_factory=opener(no_room)).syncs  # the error is reported
    assert users.error is not None and "Out of Memory" in users.error
    assert users.read == users.would_send == 0
