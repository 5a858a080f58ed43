"""The webhook delivery log in each warehouse's sync state, reached as ``heap-dbt serve`` reaches it:
``engine.open_state`` on a real dbt-built project, with real syncs around it.

The log is what keeps a restarted server from running a sync twice for one dbt Cloud delivery,
so these tests close and reopen the state between writing and reading.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from heap_dbt import engine
from heap_dbt.emulator import RunningEmulator
from heap_dbt.errors import StateError, WarehouseError
from heap_dbt.plan import SyncOptions
from heap_dbt.state import DeliveryRecord
from heap_dbt.warehouse.deliveries import DELIVERIES_TABLE
from tests.conftest import APP_ID, clean_env, dbt
from tests.warehouses import Warehouse

pytestmark = pytest.mark.integration

NOW = dt.datetime.now(dt.UTC).replace(microsecond=123456)


def options(project: Path, **kwargs: object) -> SyncOptions:
    return SyncOptions(project_dir=project, env=clean_env(), **kwargs)  # type: ignore[arg-type]


def delivery(event_id: str, *, ago: dt.timedelta = dt.timedelta(0), **kwargs: str | None) -> DeliveryRecord:
    fields: dict[str, str | None] = {"job_id": "7", "run_id": f"r-{event_id}", "decision": "sync"} | kwargs
    return DeliveryRecord(event_id=event_id, received_at=NOW - ago, **fields)  # type: ignore[arg-type]


def record(project: Path, *records: DeliveryRecord, **kwargs: object) -> None:
    """Record in a state opened for just that, then closed (each webhook is its own open)."""
    with engine.open_state(options(project, **kwargs), writable=True) as state:
        assert state is not None
        state.record_deliveries(records)


def kept(project: Path, *, limit: int = 50, **kwargs: object) -> tuple[list[DeliveryRecord], set[str]]:
    """The deliveries (newest first) and the seen event ids, from a state opened read-only
    (none at all when there is no state)."""
    with engine.open_state(options(project, **kwargs), writable=False) as state:
        if state is None:
            return [], set()
        return state.deliveries(limit=limit), state.seen_event_ids()


def sync_users(project: Path, emulator: RunningEmulator, **kwargs: object) -> None:
    """A real sync of heap_users, in this process, as the server runs one."""
    report = engine.run_sync(
        options(project, select=["heap_users"], app_id=APP_ID, base_url=emulator.url, **kwargs)
    )
    assert [(s.model, s.error) for s in report.syncs] == [("heap_users", None)]


def has_table(warehouse: Warehouse, project: Path) -> bool:
    rows = warehouse.execute(
        project,
        "SELECT count(*) FROM information_schema.tables WHERE lower(table_schema) = 'heap_dbt' "
        f"AND lower(table_name) = '{DELIVERIES_TABLE}'",
    )
    return int(rows[0][0]) == 1


def test_deliveries_round_trip_and_an_update_keeps_the_first_arrival(wh_project: Path) -> None:
    record(wh_project, delivery("e1"), delivery("e2", ago=dt.timedelta(seconds=5), decision="ignored: run 9"))
    later = delivery(
        "e1", ago=dt.timedelta(seconds=-60), job_id="8", run_id="other", outcome="success: sent 3"
    )
    record(wh_project, later)

    listed, seen = kept(wh_project)

    assert seen == {"e1", "e2"}
    assert listed == [
        DeliveryRecord("e1", NOW, "7", "r-e1", "sync", "success: sent 3"),
        DeliveryRecord("e2", NOW - dt.timedelta(seconds=5), "7", "r-e2", "ignored: run 9", None),
    ]
    assert all(r.received_at.tzinfo == dt.UTC for r in listed)


def test_an_update_can_clear_the_outcome_and_one_batch_may_name_an_event_twice(wh_project: Path) -> None:
    record(wh_project, delivery("e1", outcome="error: boom"))
    record(wh_project, delivery("e1", decision="again"), delivery("e3"), delivery("e3", outcome="success"))

    listed, _ = kept(wh_project)

    assert [(r.event_id, r.decision, r.outcome) for r in listed] == [
        ("e3", "sync", "success"),  # the same instant as e1, recorded after it
        ("e1", "again", None),
    ]


def test_deliveries_are_newest_first_by_arrival_then_by_the_order_recorded(wh_project: Path) -> None:
    other_zone = dt.timezone(dt.timedelta(hours=2))
    record(
        wh_project,
        delivery("same-1"),
        delivery("old", ago=dt.timedelta(days=2)),
        delivery("same-2"),
        DeliveryRecord("newest", (NOW + dt.timedelta(minutes=1)).astimezone(other_zone), "7", "r", "sync"),
    )
    record(wh_project, delivery("same-3"), delivery("older", ago=dt.timedelta(days=3)))

    listed, _ = kept(wh_project)
    two, _ = kept(wh_project, limit=2)

    assert [r.event_id for r in listed] == ["newest", "same-3", "same-2", "same-1", "old", "older"]
    assert listed[0].received_at == NOW + dt.timedelta(minutes=1) and listed[0].received_at.tzinfo == dt.UTC
    assert [r.event_id for r in two] == ["newest", "same-3"]


def test_deliveries_older_than_30_days_are_dropped_when_recording(
    wh_project: Path, warehouse: Warehouse
) -> None:
    record(
        wh_project,
        delivery("aging"),
        delivery("29-days", ago=dt.timedelta(days=29)),
        delivery("31-days", ago=dt.timedelta(days=31)),  # already past: never kept
    )
    assert kept(wh_project)[1] == {"aging", "29-days"}
    # "aging" was received 31 days ago after all: the next recording drops it.
    warehouse.execute(
        wh_project,
        f"UPDATE heap_dbt.{DELIVERIES_TABLE} SET received_at = received_at - INTERVAL '31 days' "
        "WHERE event_id = 'aging'",
    )
    assert kept(wh_project)[1] == {"aging", "29-days"}  # reading drops nothing

    record(wh_project, delivery("new"))

    assert kept(wh_project)[1] == {"29-days", "new"}


@pytest.mark.timeout(240)  # two syncs and a dbt run
def test_a_state_made_before_the_log_existed_gets_it_when_first_recording(
    wh_project: Path, warehouse: Warehouse, emulator: RunningEmulator
) -> None:
    sync_users(wh_project, emulator)
    warehouse.execute(wh_project, f"DROP TABLE IF EXISTS heap_dbt.{DELIVERIES_TABLE}")
    assert not has_table(warehouse, wh_project)  # the state as an earlier heap-dbt left it
    assert kept(wh_project) == ([], set())  # read-only: nothing created, nothing found

    record(wh_project, delivery("e1"))

    assert has_table(warehouse, wh_project)
    assert kept(wh_project)[1] == {"e1"}
    sync_users(wh_project, emulator)  # the sync accepts the state with the new table
    with engine.open_state(options(wh_project), writable=False) as state:
        assert state is not None
        assert [r.outcome for r in state.history(limit=5)] == ["success", "success"]
        assert state.seen_event_ids() == {"e1"}
    dbt(wh_project, "run", "-s", "heap_users", "--quiet")  # everything heap-dbt opened is closed again


@pytest.mark.timeout(180)
def test_the_log_survives_closing_and_syncs_in_between(wh_project: Path, emulator: RunningEmulator) -> None:
    record(wh_project, delivery("e1"))
    sync_users(wh_project, emulator)
    record(wh_project, delivery("e1", outcome="success: sent 36"), delivery("e2"))
    sync_users(wh_project, emulator)
    with engine.open_state(options(wh_project), writable=True) as state:  # a restarted server
        assert state is not None
        assert state.seen_event_ids() == {"e1", "e2"}
        state.record_deliveries([delivery("e3")])

    listed, seen = kept(wh_project)

    assert seen == {"e1", "e2", "e3"}
    assert {r.event_id: r.outcome for r in listed}["e1"] == "success: sent 36"


def test_a_read_only_state_reads_what_is_kept_and_refuses_to_write(
    wh_project: Path, warehouse: Warehouse
) -> None:
    with engine.open_state(options(wh_project), writable=False) as state:
        assert state is None  # nothing wrote a state yet, and a read-only open creates none
    assert "heap_dbt" not in warehouse.schemas(wh_project)

    record(wh_project, delivery("e1"))
    with engine.open_state(options(wh_project), writable=False) as state:
        assert state is not None
        with pytest.raises(StateError, match="read-only"):
            state.record_deliveries([delivery("e1", outcome="changed"), delivery("e2")])
        assert [(r.event_id, r.outcome) for r in state.deliveries(limit=5)] == [("e1", None)]


def test_a_local_state_file_keeps_the_log_and_the_warehouse_untouched(
    wh_project: Path, warehouse: Warehouse, emulator: RunningEmulator
) -> None:
    path = wh_project / ".heap_dbt" / "state.duckdb"
    with engine.open_state(options(wh_project, state_path=path), writable=False) as state:
        assert state is None  # no state file yet: a read-only open creates none
    assert not path.exists()

    record(wh_project, delivery("e1"), state_path=path)
    sync_users(wh_project, emulator, state_path=path)
    record(wh_project, delivery("e1", outcome="success"), delivery("e2"), state_path=path)

    listed, seen = kept(wh_project, state_path=path)
    assert seen == {"e1", "e2"} and {r.event_id: r.outcome for r in listed} == {"e1": "success", "e2": None}
    assert "heap_dbt" not in warehouse.schemas(wh_project)
    with engine.open_state(options(wh_project), writable=False) as state:
        assert state is None  # the warehouse's own state is another place, and there is none
    with engine.open_state(options(wh_project, state_path=path), writable=False) as state:
        assert state is not None
        with pytest.raises(StateError, match="read-only"):
            state.record_deliveries([delivery("e3")])
    assert kept(wh_project, state_path=path)[1] == {"e1", "e2"}


def test_a_sync_while_the_state_is_open_for_writing_fails_clearly_and_sends_nothing(
    wh_project: Path, emulator: RunningEmulator
) -> None:
    """The server must run them one after the other; if it does not, nothing is corrupted."""
    with engine.open_state(options(wh_project), writable=True) as state:
        assert state is not None
        state.record_deliveries([delivery("e1")])
        with pytest.raises(StateError) as caught:
            sync_users(wh_project, emulator)
    assert "holds its lock" in str(caught.value) or "has it open" in str(caught.value)
    assert emulator.emulator.snapshot()["requests"] == {}
    sync_users(wh_project, emulator)  # and once it is closed, the sync runs
    assert kept(wh_project)[1] == {"e1"}


def test_the_log_of_syncs_from_dbt_cloud_ignores_the_target_a_local_dbt_run_names(project: Path) -> None:
    # Someone ran `dbt run --target ci` here last: a local sync would use that target's state,
    # but syncs from dbt Cloud artifacts (heap-dbt serve) use the profile's, and so must their log.
    run_results = project / "target" / "run_results.json"
    document = json.loads(run_results.read_text())
    document["args"]["target"] = "ci"
    run_results.write_text(json.dumps(document))

    with engine.open_state(options(project), writable=True, local_run=False) as state:
        assert state is not None
        state.record_deliveries([delivery("e-cloud")])

    with engine.open_state(options(project, target="dev"), writable=False) as state:
        assert state is not None and state.seen_event_ids() == {"e-cloud"}
    local = engine.open_state(options(project), writable=False)  # the local run's target
    with pytest.raises(WarehouseError, match=r"heap_demo_ci\.duckdb does not exist"), local:
        pass
