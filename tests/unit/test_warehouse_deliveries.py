"""The webhook delivery log's own logic (``heap_dbt.warehouse.deliveries``), on a DuckDB state file.

The parametrised integration tests (tests/integration/test_deliveries_state.py) run the log in
every warehouse; these pin what needs a failure injected or a table damaged by hand.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest

from heap_dbt.errors import StateError
from heap_dbt.state import DeliveryRecord
from heap_dbt.warehouse.deliveries import DELIVERIES_TABLE, merge, utc_naive
from heap_dbt.warehouse.duckdb.state import DuckDBState

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)  # recent: the log keeps 30 days


def rec(event_id: str, decision: str = "sync", outcome: str | None = None, **kw: Any) -> DeliveryRecord:
    return DeliveryRecord(
        event_id, kw.get("at", NOW), kw.get("job", "7"), kw.get("run", "1"), decision, outcome
    )


@pytest.mark.parametrize(
    ("batch", "expected"),
    [
        pytest.param([], [], id="empty"),
        pytest.param([rec("a"), rec("b")], [rec("a"), rec("b")], id="distinct-kept-in-order"),
        pytest.param(
            [rec("a"), rec("b"), rec("a", "ignored", "done", at=NOW + dt.timedelta(hours=1), job="9")],
            [rec("a", "ignored", "done"), rec("b")],
            id="repeat-sets-decision-and-outcome-only",
        ),
        pytest.param([rec("a", outcome="x"), rec("a")], [rec("a")], id="repeat-clears-outcome"),
    ],
)
def test_merge_keeps_one_record_per_event_id(
    batch: list[DeliveryRecord], expected: list[DeliveryRecord]
) -> None:
    assert merge(batch) == expected


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        pytest.param(dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC), dt.datetime(2026, 3, 1, 12, 0), id="utc"),
        pytest.param(
            dt.datetime(2026, 3, 1, 14, 0, tzinfo=dt.timezone(dt.timedelta(hours=2))),
            dt.datetime(2026, 3, 1, 12, 0),
            id="other-zone",
        ),
        pytest.param(dt.datetime(2026, 3, 1, 12, 0), dt.datetime(2026, 3, 1, 12, 0), id="naive-is-utc"),
    ],
)
def test_times_are_stored_as_naive_utc(moment: dt.datetime, expected: dt.datetime) -> None:
    assert utc_naive(moment) == expected


@pytest.fixture
def con(tmp_path: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    connection = duckdb.connect(str(tmp_path / "wh.duckdb"))
    yield connection
    connection.close()


def opened(con: duckdb.DuckDBPyConnection, *, writable: bool = True) -> DuckDBState:
    state = DuckDBState(con, catalog="wh", schema="heap_dbt", writable=writable)
    state.open()
    return state


class _DiesAtThePrune:
    """A cursor that fails at the delivery log's DELETE, as a run killed right there."""

    def __init__(self, cursor: duckdb.DuckDBPyConnection) -> None:
        self._cursor = cursor

    def execute(self, query: str, *args: Any) -> Any:
        if query.startswith("DELETE") and DELIVERIES_TABLE in query:
            raise KeyboardInterrupt  # not a duckdb.Error: nothing may catch it and go on
        return self._cursor.execute(query, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cursor, name)


def test_a_recording_stopped_part_way_keeps_nothing_of_it(con: duckdb.DuckDBPyConnection) -> None:
    state = opened(con)
    state.record_deliveries([rec("a")])
    real = state._con
    state._con = _DiesAtThePrune(real)  # type: ignore[assignment]

    with pytest.raises(KeyboardInterrupt):
        state.record_deliveries([rec("a", outcome="success"), rec("b")])

    state._con = real
    assert [(r.event_id, r.outcome) for r in opened(con).deliveries(limit=5)] == [("a", None)]
    state.record_deliveries([rec("c")])  # the same store goes on: no transaction was left open
    assert opened(con).seen_event_ids() == {"a", "c"}


def test_a_state_without_the_log_opens_and_reads_empty_until_recorded(con: duckdb.DuckDBPyConnection) -> None:
    opened(con).close()
    tables = "SELECT table_name FROM duckdb_tables() WHERE schema_name = 'heap_dbt'"
    assert DELIVERIES_TABLE not in {r[0] for r in con.execute(tables).fetchall()}

    state = opened(con, writable=False)
    assert state.exists and state.deliveries(limit=5) == [] and state.seen_event_ids() == set()
    with pytest.raises(StateError, match=r"opened read-only .*Open it writable to record them"):
        state.record_deliveries([rec("a")])

    opened(con).record_deliveries([rec("a")])
    assert DELIVERIES_TABLE in {r[0] for r in con.execute(tables).fetchall()}


def test_a_log_table_heap_dbt_cannot_read_is_refused_with_how_to_start_over(
    con: duckdb.DuckDBPyConnection,
) -> None:
    opened(con).record_deliveries([rec("a")])
    con.execute(f"ALTER TABLE heap_dbt.{DELIVERIES_TABLE} DROP COLUMN seq")

    with pytest.raises(
        StateError, match=rf"table {DELIVERIES_TABLE} lacks seq\. Drop the schema wh\.heap_dbt"
    ):
        opened(con)


def test_an_empty_batch_writes_nothing(con: duckdb.DuckDBPyConnection) -> None:
    state = opened(con)
    state.record_deliveries([])

    assert state.deliveries(limit=5) == []
    tables = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    assert DELIVERIES_TABLE not in tables
