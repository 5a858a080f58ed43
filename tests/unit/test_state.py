"""The sync state in DuckDB (``DuckDBState``) on a real DuckDB file: run log, acknowledged rows, upkeep.

Each test opens the state directly on a temporary file, as the reader does, without a CLI in
between, so that a failure points at the state's own SQL.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest

from heap_dbt.errors import StateError
from heap_dbt.state import STATE_VERSION, UNCOMPACTED
from heap_dbt.warehouse.duckdb.state import DuckDBState

SYNC = "a1b2c3d4e5f60718"
OTHER = "ffffeeeeddddcccc"
COUNTS = {"read": 10, "sent": 7, "unchanged": 2, "rejected": 1, "failed": 0, "removed": 3}


@pytest.fixture
def con(tmp_path: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    connection = duckdb.connect(str(tmp_path / "wh.duckdb"))
    yield connection
    connection.close()


def open_state(
    con: duckdb.DuckDBPyConnection, *, writable: bool = True, schema: str = "heap_dbt"
) -> DuckDBState:
    state = DuckDBState(con, catalog="wh", schema=schema, writable=writable)
    state.open()
    return state


@pytest.fixture
def state(con: duckdb.DuckDBPyConnection) -> Iterator[DuckDBState]:
    store = open_state(con)
    yield store
    store.close()


def acks(*rows: tuple[int, int, int]) -> pa.Table:
    """Acknowledged rows (k1, k2, hash), typed as the engine hands them over."""
    k1, k2, h = zip(*rows, strict=True) if rows else ((), (), ())
    return pa.table({n: pa.array(v, pa.uint64()) for n, v in (("k1", k1), ("k2", k2), ("hash", h))})


def begin(state: DuckDBState, sync_id: str = SYNC, **kwargs: Any) -> int:
    args: dict[str, Any] = {
        "model": "dim_users", "obj": "user", "meta_path": "config.meta.heap", "app_id": "12******90",
        "full_refresh": False,
    } | kwargs  # fmt: skip
    return state.begin_run(sync_id=sync_id, **args)


def held(state: DuckDBState, sync_id: str = SYNC, *, compact: bool = False) -> dict[tuple[int, int], int]:
    """What Heap holds per key, by the state's own ``latest_sql``."""
    rows = state._con.execute(state.latest_sql(sync_id, compact=compact)).fetchall()
    return {(k1, k2): h for k1, k2, h in rows}


def stored_rows(state: DuckDBState, sync_id: str = SYNC) -> int:
    return int(state._one(f"SELECT count(*) FROM {state.table('sync_state')} WHERE sync_id = ?", [sync_id]))


# --- opening -----------------------------------------------------------------------------------


def test_a_writable_state_creates_its_tables_with_the_current_version(con: duckdb.DuckDBPyConnection) -> None:
    state = open_state(con)

    assert state.exists
    tables = {
        r[0]
        for r in con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE schema_name = 'heap_dbt'"
        ).fetchall()
    }
    assert tables == {"state_info", "sync_state", "sync_fingerprint", "sync_runs"}
    assert con.execute("SELECT version FROM heap_dbt.state_info").fetchall() == [(STATE_VERSION,)]


class _DiesBeforeTheVersionRow:
    """A connection whose cursors fail at the state's version row, as a run killed right there."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self._con = con

    def cursor(self) -> Any:
        real = self._con.cursor()

        class Cursor:
            def execute(self, query: str, *args: Any) -> Any:
                if query.startswith("INSERT INTO") and "state_info" in query:
                    raise KeyboardInterrupt  # not a duckdb.Error: nothing may catch and go on
                return real.execute(query, *args)

            def __getattr__(self, name: str) -> Any:
                return getattr(real, name)

        return Cursor()


def test_a_run_stopped_while_creating_the_state_leaves_nothing_half_made(
    con: duckdb.DuckDBPyConnection,
) -> None:
    dying = DuckDBState(_DiesBeforeTheVersionRow(con), catalog="wh", schema="heap_dbt", writable=True)  # type: ignore[arg-type]
    with pytest.raises(KeyboardInterrupt):
        dying.open()

    assert con.execute("SELECT count(*) FROM duckdb_tables() WHERE schema_name = 'heap_dbt'").fetchall() == [
        (0,)
    ]
    state = open_state(con)  # the next run creates the state afresh instead of calling it corrupt
    assert state.exists
    assert con.execute("SELECT version FROM heap_dbt.state_info").fetchall() == [(STATE_VERSION,)]


def test_opening_again_keeps_what_was_written(con: duckdb.DuckDBPyConnection) -> None:
    first = open_state(con)
    run_id = begin(first)
    first.acknowledge(SYNC, run_id, acks((1, 1, 5)))
    first.close()

    again = open_state(con)

    assert again.exists and held(again) == {(1, 1): 5}
    assert con.execute("SELECT count(*) FROM heap_dbt.state_info").fetchall() == [(1,)]


def test_a_dry_run_against_no_state_creates_nothing_and_sees_no_history(
    con: duckdb.DuckDBPyConnection,
) -> None:
    state = open_state(con, writable=False)

    assert not state.exists
    assert state.history(limit=5) == [] and state.fingerprint(SYNC) is None
    assert con.execute("SELECT count(*) FROM duckdb_schemas() WHERE schema_name = 'heap_dbt'").fetchall() == [
        (0,)
    ]


def test_a_state_schema_of_another_name_is_separate(con: duckdb.DuckDBPyConnection) -> None:
    one, two = open_state(con), open_state(con, schema="heap_dbt_ci")
    one.acknowledge(SYNC, begin(one), acks((1, 1, 1)))

    assert held(two) == {} and two.history(limit=5) == []


VERSION_99 = "UPDATE heap_dbt.state_info SET version = 99"
TWO_VERSIONS = "INSERT INTO heap_dbt.state_info VALUES (1, now())"


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        pytest.param(VERSION_99, "has version 99; this heap-dbt reads version 1", id="foreign-version"),
        pytest.param(TWO_VERSIONS, "is corrupt (state_info has 2 rows)", id="two-versions"),
        pytest.param("DROP TABLE heap_dbt.state_info", "has no state_info table", id="no-state-info"),
        pytest.param(
            "ALTER TABLE heap_dbt.sync_state DROP COLUMN hash",
            "table sync_state lacks hash",
            id="missing-column",
        ),
    ],
)
def test_a_state_heap_dbt_cannot_read_is_refused_with_how_to_start_over(
    con: duckdb.DuckDBPyConnection, damage: str, message: str
) -> None:
    open_state(con).close()
    con.execute(damage)

    with pytest.raises(StateError, match=r"Drop the schema wh\.heap_dbt") as caught:
        open_state(con)

    assert message in str(caught.value)


# --- the run log -------------------------------------------------------------------------------


def test_run_ids_increase_across_syncs(state: DuckDBState) -> None:
    assert [begin(state), begin(state, OTHER), begin(state)] == [1, 2, 3]


def test_history_is_newest_first_with_counts_and_outcomes(state: DuckDBState) -> None:
    first = begin(state)
    state.finish_run(first, counts=COUNTS, outcome="success")
    second = begin(state, OTHER, model="dim_accounts", obj="account", full_refresh=True)
    state.finish_run(second, counts=dict.fromkeys(COUNTS, 0), outcome="error")

    newest, oldest = state.history(limit=10)

    assert (newest.run_id, newest.model, newest.object, newest.full_refresh, newest.outcome) == (
        2, "dim_accounts", "account", True, "error",
    )  # fmt: skip
    assert (oldest.run_id, oldest.counts, oldest.outcome, oldest.app_id) == (
        1,
        COUNTS,
        "success",
        "12******90",
    )
    assert oldest.finished_at is not None and oldest.finished_at >= oldest.started_at
    assert [r.run_id for r in state.history(limit=1)] == [2]


def test_a_run_that_never_finished_shows_as_interrupted_with_zero_counts(state: DuckDBState) -> None:
    begin(state)

    (run,) = state.history(limit=5)

    assert run.outcome == "interrupted" and run.finished_at is None
    assert run.counts == dict.fromkeys(COUNTS, 0)


def test_concurrent_runs_get_distinct_ids_under_the_lock(state: DuckDBState) -> None:
    """begin_run reads max(run_id) then inserts: without the lock two threads could share an id."""
    ids: list[int] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(25):
                ids.append(begin(state))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert errors == []
    assert sorted(ids) == list(range(1, 101))


def test_acknowledgements_from_several_threads_are_all_recorded(state: DuckDBState) -> None:
    run_id = begin(state)

    def work(n: int) -> None:
        for i in range(20):
            state.acknowledge(SYNC, run_id, acks((n, i, n * 100 + i)))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert held(state) == {(n, i): n * 100 + i for n in range(4) for i in range(20)}


# --- acknowledged rows -------------------------------------------------------------------------


def test_the_latest_acknowledgement_of_a_key_is_what_heap_holds(state: DuckDBState) -> None:
    first = begin(state)
    state.acknowledge(SYNC, first, acks((1, 1, 10), (2, 2, 20)))
    second = begin(state)
    state.acknowledge(SYNC, second, acks((1, 1, 11), (3, 3, 30)))

    assert held(state) == {(1, 1): 11, (2, 2): 20, (3, 3): 30}
    assert stored_rows(state) == 4  # until compacted, the superseded row stays
    assert state.count_keys(SYNC, before=second) == 2 and state.count_keys(SYNC) == 4


def test_compact_keeps_one_row_per_key_and_the_newest_hash(state: DuckDBState) -> None:
    first = begin(state)
    state.acknowledge(SYNC, first, acks((1, 1, 10), (2, 2, 20)))
    second = begin(state)
    state.acknowledge(SYNC, second, acks((1, 1, 11)))
    state.acknowledge(OTHER, second, acks((1, 1, 99)))

    state.compact(SYNC, run_id=second)

    assert stored_rows(state) == 2
    assert held(state, compact=True) == held(state) == {(1, 1): 11, (2, 2): 20}
    assert held(state, OTHER) == {(1, 1): 99}


def test_the_keys_sql_refuses_a_sync_id_that_is_not_one(state: DuckDBState) -> None:
    with pytest.raises(ValueError, match="not a sync id"):
        state.latest_sql("x' OR '1'='1", compact=True)


# --- interrupted runs --------------------------------------------------------------------------


def test_a_killed_run_leaves_the_state_interrupted_until_recovered(state: DuckDBState) -> None:
    first = begin(state)
    state.acknowledge(SYNC, first, acks((1, 1, 10), (2, 2, 20)))
    state.finish_run(first, counts=COUNTS, outcome="success")
    killed = begin(state)
    state.acknowledge(SYNC, killed, acks((1, 1, 11)))  # then killed: no compact, no finish_run
    now = begin(state)

    assert state.interrupted(SYNC, before=now) and not state.interrupted(OTHER, before=now)
    assert not state.interrupted(SYNC, before=killed)

    state.recover(SYNC, before=now)

    assert not state.interrupted(SYNC, before=now)
    assert stored_rows(state) == 2 and held(state, compact=True) == {(1, 1): 11, (2, 2): 20}
    outcomes = {r.run_id: r.outcome for r in state.history(limit=5)}
    assert outcomes[killed] == "interrupted" and outcomes[first] == "success"
    assert state._one(f"SELECT outcome FROM {state.table('sync_runs')} WHERE run_id = ?", [now]) == "running"


def test_a_run_that_could_not_compact_is_recovered_and_marked_an_error(state: DuckDBState) -> None:
    first = begin(state)
    state.acknowledge(SYNC, first, acks((1, 1, 10)))
    failed = begin(state)
    state.acknowledge(SYNC, failed, acks((1, 1, 11)))
    state.finish_run(failed, counts=COUNTS, outcome=UNCOMPACTED)
    now = begin(state)

    assert state.interrupted(SYNC, before=now)
    state.recover(SYNC, before=now)

    assert stored_rows(state) == 1 and held(state) == {(1, 1): 11}
    assert {r.run_id: r.outcome for r in state.history(limit=5)}[failed] == "error"


def test_recover_without_an_interrupted_run_changes_nothing(state: DuckDBState) -> None:
    first = begin(state)
    state.acknowledge(SYNC, first, acks((1, 1, 10)))
    state.finish_run(first, counts=COUNTS, outcome="success")
    second = begin(state)
    state.acknowledge(SYNC, second, acks((1, 1, 11)))

    state.recover(SYNC, before=second)

    assert stored_rows(state) == 2  # the current run's rows are compacted by compact, not recover


# --- keys that left the model, full refresh ----------------------------------------------------


def source(*keys: tuple[int, int]) -> str:
    """SQL yielding the model's keys as (k1, k2)."""
    values = ", ".join(f"({k1}::UBIGINT, {k2}::UBIGINT)" for k1, k2 in keys)
    return f"SELECT * FROM (VALUES {values}) AS v(k1, k2)"


def test_keys_no_longer_in_the_model_are_counted_and_forgotten_only_when_applied(state: DuckDBState) -> None:
    first = begin(state)
    state.acknowledge(SYNC, first, acks((1, 1, 10), (2, 2, 20), (3, 3, 30)))
    state.acknowledge(OTHER, first, acks((9, 9, 90)))
    now = begin(state)

    assert state.remove_missing(SYNC, source((1, 1)), apply=False, before_run=now) == 2
    assert len(held(state)) == 3  # counting forgets nothing (a dry run)

    assert state.remove_missing(SYNC, source((1, 1)), apply=True, before_run=now) == 2
    assert held(state) == {(1, 1): 10} and held(state, OTHER) == {(9, 9): 90}


def test_rows_of_the_current_run_are_in_the_model_by_construction(state: DuckDBState) -> None:
    first = begin(state)
    state.acknowledge(SYNC, first, acks((1, 1, 10)))
    now = begin(state)
    state.acknowledge(SYNC, now, acks((5, 5, 50)))

    assert state.remove_missing(SYNC, source((7, 7)), apply=True, before_run=now) == 1
    assert held(state) == {(5, 5): 50}


def test_a_first_sync_has_nothing_to_remove(state: DuckDBState) -> None:
    assert (
        state.remove_missing(SYNC, "SELECT this_sql_is_never_run", apply=True, before_run=begin(state)) == 0
    )


def test_forget_drops_every_row_of_one_sync_only(state: DuckDBState) -> None:
    run_id = begin(state)
    state.acknowledge(SYNC, run_id, acks((1, 1, 10), (2, 2, 20)))
    state.acknowledge(OTHER, run_id, acks((1, 1, 10)))

    state.forget(SYNC)

    assert held(state) == {} and held(state, OTHER) == {(1, 1): 10}


def test_a_duckdb_error_in_upkeep_is_a_state_error_that_says_rows_stay_recorded(state: DuckDBState) -> None:
    state._con.execute(f"DROP TABLE {state.table('sync_state')}")

    with pytest.raises(StateError, match=r"Could not forget the acknowledged rows in the heap-dbt state \("):
        state.forget(SYNC)


class LimitSpy:
    """A cursor that notes DuckDB's memory limit whenever a DELETE runs on it."""

    def __init__(self, cursor: duckdb.DuckDBPyConnection) -> None:
        self.cursor = cursor
        self.limits: list[str] = []

    def limit(self) -> str:
        return str(self.cursor.execute("SELECT current_setting('memory_limit')").fetchall()[0][0])

    def execute(self, query: str, params: Any = None) -> duckdb.DuckDBPyConnection:
        if query.startswith("DELETE"):
            self.limits.append(self.limit())
        return self.cursor.execute(query, params or [])

    def __getattr__(self, name: str) -> Any:
        return getattr(self.cursor, name)


def test_recovery_gets_more_memory_and_gives_it_back(state: DuckDBState) -> None:
    """The self-join that dedupes after a crash needs more than a sync's small limit."""
    state._con.execute("SET memory_limit = '64MB'")
    first = begin(state)
    state.acknowledge(SYNC, first, acks((1, 1, 10)))
    begin(state)  # never finished
    now = begin(state)
    spy = LimitSpy(state._con)
    before = spy.limit()
    state._con = spy  # type: ignore[assignment]

    state.recover(SYNC, before=now)

    assert spy.limits == [expected_limit("160MB")]
    assert spy.limit() == before == expected_limit("64MB")


def expected_limit(text: str) -> str:
    """How DuckDB shows a memory limit set to ``text``."""
    with duckdb.connect() as con:
        con.execute(f"SET memory_limit = '{text}'")
        return str(con.execute("SELECT current_setting('memory_limit')").fetchall()[0][0])


# --- the fingerprint ---------------------------------------------------------------------------


def test_the_fingerprint_is_kept_per_sync_replaced_and_cleared(state: DuckDBState) -> None:
    run_id = begin(state)
    assert state.fingerprint(SYNC) is None

    state.set_fingerprint(SYNC, "3:abc", run_id=run_id)
    state.set_fingerprint(OTHER, "9:zzz", run_id=run_id)
    assert state.fingerprint(SYNC) == "3:abc"

    state.set_fingerprint(SYNC, "4:def", run_id=run_id)
    assert state.fingerprint(SYNC) == "4:def"

    state.set_fingerprint(SYNC, None, run_id=run_id)
    assert state.fingerprint(SYNC) is None and state.fingerprint(OTHER) == "9:zzz"
