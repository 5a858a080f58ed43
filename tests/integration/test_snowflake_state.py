"""The Snowflake state store on fakesnow: the leased lock that keeps a second writing sync off the state."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from heap_dbt.errors import StateError
from heap_dbt.profiles import Target
from heap_dbt.state import STATE_VERSION
from heap_dbt.warehouse.snowflake.reader import SnowflakeSession
from heap_dbt.warehouse.snowflake.state import SnowflakeState
from tests.fakesnow_server import FakeSnow


@pytest.fixture
def sessions(fakesnow: FakeSnow, tmp_path: Path) -> Iterator[list[SnowflakeSession]]:
    database = f"lock_{tmp_path.name[-8:].replace('-', '_')}".lower()
    creds = {"type": "snowflake", **fakesnow.connect_args(), "database": database, "schema": "s"}
    target = Target(profile="p", name="fake", type="snowflake", credentials=creds, profiles_dir=Path("."))
    opened: list[SnowflakeSession] = []

    def new() -> SnowflakeSession:
        s = SnowflakeSession.from_target(target)
        opened.append(s)
        return s

    first = new()
    first.execute(f"CREATE DATABASE IF NOT EXISTS {database}").close()
    first.execute(f"CREATE SCHEMA IF NOT EXISTS {database}.s").close()
    new()
    yield opened
    for s in opened:
        s.close()


def store(session: SnowflakeSession, **kw: int) -> SnowflakeState:
    database = session.con.database
    return SnowflakeState(
        session, database=database, schema="heap_dbt", writable=True,
        connect=lambda: session, **kw,
    )  # fmt: skip


def test_a_second_writer_is_refused_until_the_first_frees_the_lock(sessions: list[SnowflakeSession]) -> None:
    one, two = sessions
    first = store(one)
    first.open()
    second = store(two)
    with pytest.raises(StateError, match="another process holds its lock"):
        second.open()
    first.close()
    third = store(two)
    third.open()  # free again
    assert third.exists
    third.close()


def test_a_killed_syncs_lease_runs_out_and_the_next_sync_takes_over(sessions: list[SnowflakeSession]) -> None:
    one, two = sessions
    killed = store(one, lease_seconds=2)
    killed.open()
    killed._stop.set()  # as if the process died: no more renewals, no release
    with pytest.raises(StateError, match="holds its lock"):
        store(two).open()
    time.sleep(3)
    taker = store(two)
    taker.open()
    assert taker.exists
    taker.close()


def test_the_lock_of_a_sync_killed_on_this_machine_is_taken_over_at_once(
    sessions: list[SnowflakeSession],
) -> None:
    one, two = sessions
    first = store(one)
    first.open()
    first._stop.set()
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a pid that no longer runs
    one.execute(
        f"UPDATE {first.table('sync_lock')} SET owner = %s",
        [f"{socket.gethostname()}:{gone.pid}:killed"],
    ).close()
    taker = store(two)
    taker.open()  # no wait for the lease (ten minutes away)
    assert taker.owner in str(two.fetch_one(f"SELECT owner FROM {taker.table('sync_lock')}"))
    taker.close()


def test_a_dry_run_takes_no_lock(sessions: list[SnowflakeSession]) -> None:
    one, two = sessions
    writer = store(one)
    writer.open()
    reader = SnowflakeState(
        two, database=two.con.database, schema="heap_dbt", writable=False, connect=lambda: two
    )
    reader.open()  # reads the state while the writer holds the lock
    assert reader.exists
    writer.close()


def test_acknowledgements_past_one_insert_are_all_recorded(sessions: list[SnowflakeSession]) -> None:
    import pyarrow as pa

    one, _ = sessions
    state = store(one, ack_chunk_rows=50)  # fakesnow parses a 5,000-row INSERT for a minute
    state.open()
    n = 2 * 50 + 7
    acks = pa.table({"k1": list(range(n)), "k2": list(range(n)), "hash": [2**62 + i for i in range(n)]})
    run = state.begin_run(sync_id="abc", model="m", obj="user", meta_path="p", app_id="1", full_refresh=False)
    state.acknowledge("abc", run, acks)
    assert state.count_keys("abc") == n
    assert one.fetch_one(f"SELECT MAX(hash) FROM {state.table('sync_state')}") == (2**62 + n - 1,)
    state.close()


class _DiesAt:
    """A session that stops at the n-th CREATE TABLE of the state, as a run killed right there."""

    def __init__(self, session: SnowflakeSession, n: int) -> None:
        self._session = session
        self._left = n

    def execute(self, sql: str, params: list[Any] | None = None) -> Any:
        if sql.startswith("CREATE TABLE"):
            if self._left == 0:
                raise KeyboardInterrupt  # not a connector error: nothing may catch it and go on
            self._left -= 1
        return self._session.execute(sql, params)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)


STATE_TABLES = ("state_info", "sync_state", "sync_fingerprint", "sync_runs", "sync_lock")


@pytest.mark.parametrize("stop", range(len(STATE_TABLES)), ids=[f"at-table-{i + 1}" for i in range(5)])
def test_a_run_stopped_while_creating_the_state_leaves_nothing_half_made(
    sessions: list[SnowflakeSession], stop: int
) -> None:
    session = sessions[0]
    dying = store(_DiesAt(session, stop))  # type: ignore[arg-type]
    with pytest.raises(KeyboardInterrupt):
        dying.open()

    def tables() -> set[str]:
        rows = session.execute(
            f"SELECT table_name FROM {session.con.database}.information_schema.tables "
            "WHERE table_schema = 'heap_dbt'"
        ).fetchall()
        return {str(r[0]).lower() for r in rows}

    assert "state_info" not in tables()  # no state claims to be there
    state = store(session)
    state.open()  # the next run finishes the state instead of calling it corrupt
    try:
        assert state.exists and tables() == set(STATE_TABLES)
        assert state._run(f"SELECT version FROM {state.table('state_info')}") == [(STATE_VERSION,)]
        run_id = state.begin_run(
            sync_id="abc", model="m", obj="user", meta_path="p", app_id="1", full_refresh=False
        )
        assert run_id == 1
    finally:
        state.close()


def test_a_schema_without_state_info_but_with_runs_is_refused_not_finished(
    sessions: list[SnowflakeSession],
) -> None:
    state = store(sessions[0])
    state.open()
    state.begin_run(sync_id="abc", model="m", obj="user", meta_path="p", app_id="1", full_refresh=False)
    state.close()
    sessions[0].execute(f"DROP TABLE {state.table('state_info')}").close()

    with pytest.raises(StateError, match="has no state_info table"):
        store(sessions[0]).open()
