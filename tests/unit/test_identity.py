"""heap_dbt.identity: which state and seeds a sync continues, on a real DuckDB state."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest

from heap_dbt import identity
from heap_dbt.config import SyncSpec, parse_specs
from heap_dbt.manifest import ModelNode
from heap_dbt.warehouse.duckdb.state import DuckDBState
from tests.unit.test_state import open_state

APP = "111"
EVENTS = {"object": "event", "key": "id", "identity": "who", "event_name": "Ping"}


def spec(block: dict[str, Any], *, name: str = "fct_pings", heap: Any = None) -> SyncSpec:
    model = ModelNode(
        unique_id=f"model.demo.{name}", name=name, relation_name=f'"dev"."main"."{name}"',
        materialized="table", meta={"heap": heap if heap is not None else block}, tags=(), fqn=("demo", name),
        original_file_path=f"models/{name}.sql",
    )  # fmt: skip
    problems: list[str] = []
    specs = parse_specs([model], problems)
    assert problems == []
    return next(s for s in specs if s.object == block["object"])


@pytest.fixture
def state(tmp_path: Path) -> Iterator[DuckDBState]:
    con = duckdb.connect(str(tmp_path / "wh.duckdb"))
    yield open_state(con)
    con.close()


def test_a_new_sync_is_seeded_by_its_name(state: DuckDBState) -> None:
    found = identity.resolve(spec(EVENTS), APP, state)
    assert (found.known, found.stored) == (False, None)
    assert found.sync_id == identity.name_id(APP, "event", "event:Ping:id")
    assert found.key_seed == found.definition_seed == "event:Ping:id"


def test_without_a_state_the_sync_is_new() -> None:
    assert not identity.resolve(spec(EVENTS), APP, None).known


def test_a_recorded_name_keeps_its_state_and_seeds_whatever_the_model_is_called(state: DuckDBState) -> None:
    first = identity.resolve(spec(EVENTS), APP, state)
    state.record_sync_name(first.record)
    moved = identity.resolve(
        spec(EVENTS, name="orders", heap=[{"object": "user", "key": "who"}, EVENTS]), APP, state
    )
    assert moved.known and moved.stored == first.record
    assert (moved.sync_id, moved.key_seed, moved.definition_seed) == (
        first.sync_id,
        "event:Ping:id",
        "event:Ping:id",
    )
    assert moved.record.model == "orders" and moved.record != moved.stored  # recorded again: renamed


def test_a_state_an_earlier_release_wrote_is_adopted_with_its_seeds(state: DuckDBState) -> None:
    old = spec(EVENTS)
    legacy = old.legacy_sync_id(APP)
    run_id = state.begin_run(
        sync_id=legacy, model="fct_pings", obj="event", meta_path="config.meta.heap", app_id="11***1",
        full_refresh=False,
    )  # fmt: skip
    counts = dict.fromkeys(("read", "sent", "unchanged", "rejected", "failed", "removed"), 0)
    state.finish_run(run_id, counts=counts, outcome="success")
    found = identity.resolve(old, APP, state)
    assert found.known and found.sync_id == legacy
    assert (found.key_seed, found.definition_seed) == ("fct_pings", '"dev"."main"."fct_pings"')
    assert not identity.resolve(old, "222", state).known  # another app_id: another sync


def test_the_name_is_kept_per_app_id_and_the_app_id_is_not_stored(state: DuckDBState) -> None:
    state.record_sync_name(identity.resolve(spec(EVENTS), "987654321", state).record)
    assert not identity.resolve(spec(EVENTS), APP, state).known
    (kept,) = state.sync_names()
    assert "987654321" not in repr(kept)


def test_orphans_are_the_undeclared_names_of_the_same_model_and_object(state: DuckDBState) -> None:
    state.record_sync_name(identity.resolve(spec(EVENTS), APP, state).record)
    state.record_sync_name(identity.resolve(spec({**EVENTS, "name": "kept"}), APP, state).record)
    renamed = spec({**EVENTS, "name": "pings v2"})
    declared = {("event", "pings v2"), ("event", "kept")}
    assert [o.name for o in identity.orphans(renamed, state, declared)] == ["event:Ping:id"]
    assert identity.orphans(spec({**EVENTS, "name": "x"}, name="other"), state, declared) == []
