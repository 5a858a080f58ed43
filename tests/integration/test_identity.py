"""A sync's identity survives what a team does to a dbt project every week (issue: trust under
everyday change): renaming, moving and versioning a model, turning its ``heap:`` block into a
list, adding, removing and reordering blocks. Each refactor runs on every warehouse and checks
what Heap (the emulator) holds: every event exactly once, and no user resent.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from heap_dbt.emulator import RunningEmulator, run_in_thread
from tests.conftest import dbt, heap_dbt
from tests.warehouses import Warehouse

# Each test runs dbt and heap-dbt as processes of their own, two to six of them; on Snowflake
# (fakesnow) each takes several seconds.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

EVENTS_SQL = """
select 'ev' || i as id, 'u' || (i % 10) || '@example.com' as who, i as n
from {{ numbers(50) }}
"""
USERS_SQL = """
select 'u' || i || '@example.com' as email, 'plan' || (i % 3) as plan
from {{ numbers(10) }}
"""
EVENTS = {"object": "event", "key": "id", "identity": "who", "event_name": "Ping"}
USERS = {"object": "user", "key": "email", "fields": {"plan": "plan"}}
ACCOUNTS = {"object": "account", "key": "id", "fields": ["n"]}
SELECT = "path:models/identity"


def write(project: Path, files: dict[str, str], models: list[dict[str, Any]]) -> None:
    """Replace the identity models: ``files`` (path under models/identity -> SQL), ``models``
    (the schema.yml entries)."""
    folder = project / "models" / "identity"
    if folder.exists():
        for old in sorted(folder.rglob("*"), reverse=True):
            old.unlink() if old.is_file() else old.rmdir()
    for path, text in files.items():
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_text(text)
    (folder / "schema.yml").write_text(json.dumps({"version": 2, "models": models}))


def heap_model(name: str, heap: Any, **extra: Any) -> dict[str, Any]:
    return {"name": name, "config": {"meta": {"heap": heap}}, **extra}


def build_and_sync(project: Path, emulator: RunningEmulator, *args: str) -> dict[str, Any]:
    dbt(project, "run", "-s", SELECT, "--quiet")
    proc = heap_dbt(project, "sync", "-s", SELECT, *args, base_url=emulator.url)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads((project / "target" / "heap_sync_results.json").read_text())
    report["stdout"] = proc.stdout + proc.stderr
    return report


def by_name(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["sync_name"]: s for s in report["syncs"]}


def held_events(emulator: RunningEmulator) -> list[dict[str, Any]]:
    return emulator.emulator.snapshot()["events"]


def records_sent(emulator: RunningEmulator, endpoint: str) -> int:
    return sum(n for path, n in emulator.emulator.snapshot()["records"].items() if endpoint in path)


@pytest.fixture(scope="module")
def synced_base(
    warehouse: Warehouse, wh_built_sample: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A project whose events and users models were synced once (50 events, 10 users), its
    state in the warehouse."""
    project = warehouse.copy(wh_built_sample, tmp_path_factory.mktemp("identity") / "heap_demo")
    write(
        project,
        {"id_events.sql": EVENTS_SQL, "id_users.sql": USERS_SQL},
        [heap_model("id_events", EVENTS), heap_model("id_users", USERS)],
    )
    with run_in_thread() as emulator:
        first = by_name(build_and_sync(project, emulator))
        assert len(held_events(emulator)) == 50
    assert first["event:Ping:id"]["sent"] == 50 and first["user:email"]["sent"] == 10
    assert first["event:Ping:id"]["new_sync"] and first["user:email"]["new_sync"]
    return project


@pytest.fixture
def synced(warehouse: Warehouse, synced_base: Path, tmp_path: Path) -> Path:
    """A private copy of ``synced_base``: Heap (the test's own emulator, which starts empty)
    already holds its 50 events and 10 users, so whatever reaches it now is sent again."""
    return warehouse.copy(synced_base, tmp_path / "heap_demo")


def assert_nothing_resent(emulator: RunningEmulator, report: dict[str, Any], *, new: str = "") -> None:
    """Heap got no event and no user again: it holds each of the first sync's exactly once.
    ``new``: the one sync that may say it is new."""
    syncs = by_name(report)
    assert (syncs["event:Ping:id"]["sent"], syncs["event:Ping:id"]["unchanged"]) == (0, 50)
    assert not syncs["event:Ping:id"]["new_sync"]
    if "user:email" in syncs:
        assert (syncs["user:email"]["sent"], syncs["user:email"]["unchanged"]) == (0, 10)
    assert held_events(emulator) == []
    assert records_sent(emulator, "track") == records_sent(emulator, "user_properties") == 0
    assert "new sync" not in report["stdout"].replace(f"new sync {new!r}", "")


def test_renaming_a_model_resends_nothing(synced: Path, emulator: RunningEmulator) -> None:
    write(
        synced,
        {"fct_pings.sql": EVENTS_SQL, "dim_people.sql": USERS_SQL},
        [heap_model("fct_pings", EVENTS), heap_model("dim_people", USERS)],
    )
    assert_nothing_resent(emulator, build_and_sync(synced, emulator))


def test_moving_a_model_file_resends_nothing(synced: Path, emulator: RunningEmulator) -> None:
    write(
        synced,
        {"marts/deep/id_events.sql": EVENTS_SQL, "other/id_users.sql": USERS_SQL},
        [heap_model("id_events", EVENTS), heap_model("id_users", USERS)],
    )
    assert_nothing_resent(emulator, build_and_sync(synced, emulator))


def test_versioning_a_model_syncs_the_latest_version_once(synced: Path, emulator: RunningEmulator) -> None:
    versioned = heap_model("id_events", EVENTS, latest_version=2, versions=[{"v": 1}, {"v": 2}])
    write(
        synced,
        {"id_events_v1.sql": EVENTS_SQL, "id_events_v2.sql": EVENTS_SQL, "id_users.sql": USERS_SQL},
        [versioned, heap_model("id_users", USERS)],
    )
    report = build_and_sync(synced, emulator)
    assert_nothing_resent(emulator, report)
    (skipped,) = report["skipped"]
    assert skipped["unique_id"].endswith(".v1") and "version 2, which syncs it" in skipped["reason"]


def test_wrapping_the_block_in_a_list_keeps_the_events(synced: Path, emulator: RunningEmulator) -> None:
    write(
        synced,
        {"id_events.sql": EVENTS_SQL, "id_users.sql": USERS_SQL},
        [heap_model("id_events", [EVENTS, ACCOUNTS]), heap_model("id_users", USERS)],
    )
    report = build_and_sync(synced, emulator)
    assert (by_name(report)["account:id"]["sent"], by_name(report)["account:id"]["new_sync"]) == (50, True)
    assert records_sent(emulator, "account_properties") == 50  # the new sync, and only it, went out
    assert_nothing_resent(emulator, report, new="account:id")


def test_adding_reordering_and_removing_blocks_keep_each_sync(
    synced: Path, emulator: RunningEmulator
) -> None:
    files = {"id_events.sql": EVENTS_SQL, "id_users.sql": USERS_SQL}
    write(synced, files, [heap_model("id_events", [ACCOUNTS, EVENTS]), heap_model("id_users", [USERS])])
    added = build_and_sync(synced, emulator)  # a block added before the event block
    assert by_name(added)["account:id"]["sent"] == 50
    assert_nothing_resent(emulator, added, new="account:id")

    write(synced, files, [heap_model("id_events", [EVENTS, ACCOUNTS]), heap_model("id_users", USERS)])
    reordered = build_and_sync(synced, emulator)
    assert (by_name(reordered)["account:id"]["sent"], by_name(reordered)["account:id"]["unchanged"]) == (
        0,
        50,
    )
    assert_nothing_resent(emulator, reordered)

    write(synced, files, [heap_model("id_events", [EVENTS]), heap_model("id_users", USERS)])
    assert_nothing_resent(emulator, build_and_sync(synced, emulator))  # the account block removed
    assert records_sent(emulator, "account_properties") == 50  # only the first time


def test_a_sync_renamed_on_purpose_is_new_and_says_so(synced: Path, emulator: RunningEmulator) -> None:
    write(
        synced,
        {"id_events.sql": EVENTS_SQL, "id_users.sql": USERS_SQL},
        [heap_model("id_events", {**EVENTS, "name": "pings v2"}), heap_model("id_users", USERS)],
    )
    dbt(synced, "run", "-s", SELECT, "--quiet")
    dry = heap_dbt(synced, "sync", "-s", SELECT, "--dry-run", base_url=emulator.url)
    assert dry.returncode == 0, dry.stdout + dry.stderr
    report = build_and_sync(synced, emulator)
    for text in (dry.stdout + dry.stderr, report["stdout"]):
        assert "new sync 'pings v2'" in text
        assert "set `name: event:Ping:id` in the block to continue it" in " ".join(text.split())
    assert by_name(report)["pings v2"]["sent"] == 50
    assert len(held_events(emulator)) == 50  # what the user asked for: a new set of events

    write(
        synced,
        {"id_events.sql": EVENTS_SQL, "id_users.sql": USERS_SQL},
        [heap_model("id_events", {**EVENTS, "name": "event:Ping:id"}), heap_model("id_users", USERS)],
    )
    back = by_name(build_and_sync(synced, emulator))  # the old name continues the old state
    assert (back["event:Ping:id"]["sent"], back["event:Ping:id"]["new_sync"]) == (0, False)


def test_two_syncs_of_one_name_are_a_configuration_error(synced: Path, emulator: RunningEmulator) -> None:
    write(
        synced,
        {"id_events.sql": EVENTS_SQL, "id_users.sql": USERS_SQL, "id_more.sql": USERS_SQL},
        [heap_model("id_events", EVENTS), heap_model("id_users", USERS), heap_model("id_more", USERS)],
    )
    dbt(synced, "run", "-s", SELECT, "--quiet")
    proc = heap_dbt(synced, "sync", "-s", SELECT, base_url=emulator.url)
    assert proc.returncode == 2
    said = " ".join((proc.stdout + proc.stderr).split())
    assert (
        "model id_more, config.meta.heap and model id_users, config.meta.heap both declare the user sync"
        in said
    )
    assert "Give each its own `name:`" in said
    assert records_sent(emulator, "user_properties") == 0  # nothing was sent
