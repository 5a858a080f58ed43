"""End to end: a real `dbt build` of the sample project, then the real `heap-dbt` CLI against the emulator."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import subprocess
from pathlib import Path
from typing import Any

import duckdb
import pytest

from heap_dbt.emulator import RunningEmulator, run_in_thread
from tests.conftest import APP_ID, dbt, heap_dbt
from tests.warehouses import Warehouse

pytestmark = pytest.mark.integration


def expected_value(value: Any) -> Any:
    """Heap's value for a DuckDB value, by the documented conversion rules (None: left out)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
        return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, list):
        return "||".join(str(v) for v in value)
    return value


def properties(row: dict[str, Any], columns: dict[str, str]) -> dict[str, Any]:
    return {prop: expected_value(row[col]) for prop, col in columns.items() if row[col] is not None}


def results_file(project: Path) -> dict[str, Any]:
    return json.loads((project / "target" / "heap_sync_results.json").read_text())


USER_FIELDS = {
    c: c
    for c in [
        "email",
        "account_id",
        "plan",
        "lifetime_value",
        "trial_end_date",
        "activation_date",
        "events_last_7_days",
        "events_last_30_days",
        "is_activated",
        "last_seen_at",
        "feature_flags",
    ]
}


def test_sync_delivers_every_row_of_all_three_objects(
    wh_project: Path, warehouse: Warehouse, emulator: RunningEmulator
) -> None:
    project = wh_project
    proc = heap_dbt(project, "sync", base_url=emulator.url)

    assert proc.returncode == 0, proc.stderr
    state = emulator.emulator.snapshot()

    users = warehouse.rows(project, "heap_users")
    assert state["users"][APP_ID] == {u["email"]: properties(u, USER_FIELDS) for u in users}

    accounts = warehouse.rows(project, "heap_accounts")
    account_cols = {c: c for c in accounts[0] if c != "account_id"}
    assert state["accounts"][APP_ID] == {a["account_id"]: properties(a, account_cols) for a in accounts}

    purchases = warehouse.rows(project, "heap_purchases")
    event_cols = {c: c for c in ("amount_usd", "product", "quantity", "coupon")}
    received = {e["idempotency_key"]: e for e in state["events"]}
    assert len(received) == len(purchases) == len(state["events"])
    got = sorted(
        (e["identity"], e["event"], e["timestamp"], json.dumps(e["properties"], sort_keys=True))
        for e in state["events"]
    )
    want = sorted(
        (
            p["user_email"],
            "Purchase",
            expected_value(p["purchased_at"]),
            json.dumps(properties(p, event_cols), sort_keys=True),
        )
        for p in purchases
    )
    assert got == want

    report = results_file(project)
    by_model = {s["model"]: s for s in report["syncs"]}
    assert {m: (s["read"], s["sent"], s["rejected"], s["failed"]) for m, s in by_model.items()} == {
        "heap_users": (len(users), len(users), 0, 0),
        "heap_accounts": (len(accounts), len(accounts), 0, 0),
        "heap_purchases": (len(purchases), len(purchases), 0, 0),
    }
    assert "sent 36" in proc.stdout


def test_rerun_never_duplicates_events(wh_project: Path, emulator: RunningEmulator) -> None:
    project = wh_project
    first = heap_dbt(project, "sync", "-s", "heap_purchases", base_url=emulator.url)
    keys_first = sorted(e["idempotency_key"] for e in emulator.emulator.snapshot()["events"])
    # --full-refresh ignores the sync state, so every event really goes to Heap again.
    second = heap_dbt(project, "sync", "-s", "heap_purchases", "--full-refresh", base_url=emulator.url)

    assert (first.returncode, second.returncode) == (0, 0)
    state = emulator.emulator.snapshot()
    assert sorted(e["idempotency_key"] for e in state["events"]) == keys_first
    assert state["duplicate_events"] == len(keys_first) == 40


def test_dry_run_builds_payloads_and_sends_nothing(wh_project: Path, emulator: RunningEmulator) -> None:
    project = wh_project
    proc = heap_dbt(project, "sync", "--dry-run", "--json", base_url=emulator.url)

    assert proc.returncode == 0, proc.stderr
    assert emulator.emulator.snapshot()["requests"] == {}
    doc = json.loads(proc.stdout)
    assert doc["dry_run"] is True
    assert doc["totals"]["would_send"] == 36 + 12 + 40
    assert doc["totals"]["sent"] == 0
    users = next(s for s in doc["syncs"] if s["model"] == "heap_users")
    sample = users["sample_payload"][0]
    assert set(sample) == {"app_id", "users"}
    assert len(sample["users"]) == 3 and "identity" in sample["users"][0]


def test_select_and_exclude(project: Path, emulator: RunningEmulator) -> None:
    proc = heap_dbt(project, "sync", "-s", "tag:heap", "--exclude", "heap_purchases", base_url=emulator.url)

    assert proc.returncode == 0, proc.stderr
    state = emulator.emulator.snapshot()
    assert len(state["users"][APP_ID]) == 36 and len(state["accounts"][APP_ID]) == 12
    assert state["events"] == []
    assert [s["model"] for s in results_file(project)["syncs"]] == ["heap_users", "heap_accounts"]


def test_ls_lists_the_declared_syncs(project: Path) -> None:
    proc = heap_dbt(project, "ls", "--json")

    assert proc.returncode == 0, proc.stderr
    rows = {r["model"]: r for r in json.loads(proc.stdout)["syncs"]}
    assert rows["heap_users"]["object"] == "user" and rows["heap_users"]["key"] == "email"
    assert rows["heap_accounts"]["properties"] == "all other columns"
    assert rows["heap_purchases"]["identity"] == "user_email"


# --- rejections: one model with one bad row per reason, plus valid rows -------------------------

BAD_USERS_SQL = """
select * from (values
    ('ok-1@example.com', 'fine', 1.5),
    ('ok-2@example.com', 'fine', 2.5),
    (NULL, 'null key', 1.0),
    ('', 'empty key', 1.0),
    ('   ', 'whitespace key', 1.0),
    ('{long_identity}', 'identity too long', 1.0),
    ('undefined', 'placeholder', 1.0),
    ('NULL', 'placeholder upper', 1.0),
    ('long-value@example.com', '{long_value}', 1.0),
    ('nan@example.com', 'nan', cast('nan' as double precision)),
    ('inf@example.com', 'inf', cast('infinity' as double precision)),
    ('dup@example.com', 'first', 1.0),
    ('dup@example.com', 'second', 2.0)
) t(email, note, score)
"""

BAD_EVENTS_SQL = """
select * from (values
    ('e1', 'ok@example.com', 'Signup'),
    ('e2', NULL, 'Signup'),
    ('e3', 'ok@example.com', NULL),
    ('e4', 'ok@example.com', '{long_name}'),
    ('e5', 'ok@example.com', '')
) t(event_id, who, kind)
"""

BAD_SCHEMA = """
version: 2
models:
  - name: bad_users
    config:
      meta:
        heap: {object: user, key: email}
  - name: bad_events
    config:
      meta:
        heap: {object: event, key: event_id, identity: who, event_name_column: kind}
"""


def add_bad_models(project: Path) -> None:
    models = project / "models" / "bad"
    models.mkdir()
    (models / "bad_users.sql").write_text(
        BAD_USERS_SQL.format(long_identity="x" * 256, long_value="v" * 1024)
    )
    (models / "bad_events.sql").write_text(BAD_EVENTS_SQL.format(long_name="n" * 1025))
    (models / "schema.yml").write_text(BAD_SCHEMA)
    dbt(project, "run", "-s", "bad_users", "bad_events", "--quiet")


@pytest.fixture(scope="module")
def bad_run(
    warehouse: Warehouse, wh_built_sample: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, subprocess.CompletedProcess[str], dict[str, Any]]:
    """One sync of the two bad models, shared by the tests that read its outcome."""
    project = warehouse.copy(wh_built_sample, tmp_path_factory.mktemp("bad") / "heap_demo")
    add_bad_models(project)
    with run_in_thread() as running:
        proc = heap_dbt(project, "sync", "-s", "bad_users bad_events", base_url=running.url)
        return project, proc, running.emulator.snapshot()


@pytest.mark.parametrize(
    ("model", "key", "reason"),
    [
        ("bad_users", None, "identity (email) is NULL"),
        ("bad_users", "", "identity (email) is empty or whitespace"),
        ("bad_users", "   ", "identity (email) is empty or whitespace"),
        ("bad_users", "x" * 256, "identity (email) is longer than 255 characters"),
        ("bad_users", "undefined", "placeholder"),
        ("bad_users", "NULL", "placeholder"),
        ("bad_users", "long-value@example.com", "property 'note' is 1024 characters"),
        ("bad_users", "nan@example.com", "property 'score' is NaN or infinite"),
        ("bad_users", "inf@example.com", "property 'score' is NaN or infinite"),
        ("bad_users", "dup@example.com", "duplicate key: 2 rows share it"),
        ("bad_events", "e2", "event identity (who) is NULL"),
        ("bad_events", "e3", "event name (kind) is NULL"),
        ("bad_events", "e4", "event name is longer than 1024 characters"),
        ("bad_events", "e5", "event name (kind) is empty or whitespace"),
    ],
    ids=[
        "null-key", "empty-key", "whitespace-key", "identity-too-long", "placeholder-undefined",
        "placeholder-NULL", "value-too-long", "nan", "infinity", "duplicate-key",
        "event-no-identity", "event-no-name", "event-name-too-long", "event-empty-name",
    ],
)  # fmt: skip
def test_each_rejection_reason(
    bad_run: tuple[Path, subprocess.CompletedProcess[str], dict[str, Any]],
    model: str,
    key: str | None,
    reason: str,
) -> None:
    project, proc, state = bad_run

    assert proc.returncode == 1, proc.stdout + proc.stderr
    sync = next(s for s in results_file(project)["syncs"] if s["model"] == model)
    reasons = [r["reason"] for r in sync["rejections"] if r["key"] == key]
    assert reasons and all(reason in r for r in reasons), sync["rejections"]
    sent_keys = set(state["users"].get(APP_ID, {})) | {e["identity"] for e in state["events"]}
    assert key not in sent_keys


def test_rejections_are_counted_and_the_rest_is_delivered(
    bad_run: tuple[Path, subprocess.CompletedProcess[str], dict[str, Any]],
) -> None:
    project, proc, state = bad_run

    assert proc.returncode == 1
    syncs = {s["model"]: s for s in results_file(project)["syncs"]}
    users = syncs["bad_users"]
    assert (users["read"], users["sent"], users["rejected"], users["failed"]) == (13, 2, 11, 0)
    assert sorted(state["users"][APP_ID]) == ["ok-1@example.com", "ok-2@example.com"]
    events = syncs["bad_events"]
    assert (events["read"], events["sent"], events["rejected"]) == (5, 1, 4)
    assert "rejected key='e2'" in proc.stdout


def test_truncate_true_cuts_long_values_and_counts_them(project: Path, emulator: RunningEmulator) -> None:
    add_bad_models(project)
    bad_project = project
    schema = bad_project / "models" / "bad" / "schema.yml"
    schema.write_text(
        schema.read_text().replace("{object: user, key: email}", "{object: user, key: email, truncate: true}")
    )
    dbt(bad_project, "run", "-s", "bad_users", "--quiet")

    heap_dbt(bad_project, "sync", "-s", "bad_users", base_url=emulator.url)

    sync = results_file(bad_project)["syncs"][0]
    assert sync["truncated"] == 1
    assert "long-value@example.com" not in {r["key"] for r in sync["rejections"]}
    assert emulator.emulator.snapshot()["users"][APP_ID]["long-value@example.com"]["note"] == "v" * 1023


# --- what Heap does: 400 bisect, retries, failures ------------------------------------------------


def test_a_record_heap_refuses_is_isolated_and_the_rest_delivered(
    project: Path, emulator: RunningEmulator
) -> None:
    # The emulator, like Heap's docs, refuses identities over 255 characters with a 400 for the
    # whole batch. An account_id has no such check in heap-dbt, so Heap's answer decides.
    models = project / "models" / "extra"
    models.mkdir()
    (models / "wide_accounts.sql").write_text(
        f"select 'acct-' || i as account_id, i as n from range(10) t(i) union all select '{'a' * 300}', 99"
    )
    (models / "schema.yml").write_text(
        "version: 2\nmodels:\n  - name: wide_accounts\n    config:\n      meta:\n"
        "        heap: {object: account, key: account_id}\n"
    )
    dbt(project, "run", "-s", "wide_accounts", "--quiet")

    proc = heap_dbt(project, "sync", "-s", "wide_accounts", base_url=emulator.url)

    assert proc.returncode == 1
    sync = results_file(project)["syncs"][0]
    assert (sync["sent"], sync["rejected"], sync["failed"]) == (10, 1, 0)
    assert sync["rejections"][0]["key"] == "a" * 300
    assert "HTTP 400" in sync["rejections"][0]["reason"]
    assert len(emulator.emulator.snapshot()["accounts"][APP_ID]) == 10


def test_retries_through_5xx_429_and_dropped_connections(project: Path, emulator: RunningEmulator) -> None:
    emulator.emulator.configure(script=[500, 503, {"status": 429, "retry_after": 0}], drop_connection_next=1)

    proc = heap_dbt(project, "sync", base_url=emulator.url)

    assert proc.returncode == 0, proc.stdout + proc.stderr
    state = emulator.emulator.snapshot()
    assert len(state["users"][APP_ID]) == 36 and len(state["events"]) == 40
    assert sum(s["retries"] for s in results_file(project)["syncs"]) == 4


def test_rows_that_keep_failing_are_reported_failed_never_sent(
    project: Path, emulator: RunningEmulator
) -> None:
    emulator.emulator.configure(script=[500, 500])

    proc = heap_dbt(project, "sync", "-s", "heap_accounts", "--max-attempts", "2", base_url=emulator.url)

    assert proc.returncode == 1
    sync = results_file(project)["syncs"][0]
    assert (sync["read"], sync["sent"], sync["failed"]) == (12, 0, 12)
    assert "gave up after 2 attempts" in sync["failures"][0]["reason"]
    assert emulator.emulator.snapshot()["accounts"] == {}


def test_random_server_errors_still_deliver_every_row_exactly_once(
    project: Path, emulator: RunningEmulator
) -> None:
    models = project / "models" / "extra"
    models.mkdir()
    (models / "many_events.sql").write_text(
        "select 'ev-' || i as id, 'user-' || (i % 50) || '@example.com' as who, i as n from range(5000) t(i)"
    )
    (models / "schema.yml").write_text(
        "version: 2\nmodels:\n  - name: many_events\n    config:\n      meta:\n"
        "        heap: {object: event, key: id, identity: who, event_name: Ping}\n"
    )
    dbt(project, "run", "-s", "many_events", "--quiet")
    emulator.emulator.configure(fail_rate=0.3, seed=7, drop_response_next=2)

    proc = heap_dbt(
        project, "sync", "-s", "many_events", "--max-attempts", "20", "--events-per-minute", "0",
        "--events-per-identity-per-minute", "0", base_url=emulator.url,
    )  # fmt: skip

    assert proc.returncode == 0, proc.stdout + proc.stderr
    state = emulator.emulator.snapshot()
    assert sorted(int(e["properties"]["n"]) for e in state["events"]) == list(range(5000))
    assert results_file(project)["syncs"][0]["sent"] == 5000


# --- exit codes and configuration errors ---------------------------------------------------------


def test_exit_2_on_bad_meta_reports_every_problem_and_sends_nothing(
    project: Path, emulator: RunningEmulator
) -> None:
    schema = project / "models" / "marts" / "schema.yml"
    text = schema.read_text()
    text = text.replace("object: account", "object: acount").replace("key: purchase_id", "key: no_such_col")
    text = text.replace("plan: plan\n", "ID: plan\n", 1)
    schema.write_text(text)
    dbt(project, "parse", "--quiet")

    proc = heap_dbt(project, "sync", base_url=emulator.url)

    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    err = proc.stderr
    assert "model heap_accounts, config.meta.heap.object: unknown object 'acount'" in err
    assert "model heap_purchases, config.meta.heap.key: column 'no_such_col'" in err
    assert "model heap_users, config.meta.heap.fields: property 'ID' is reserved" in err
    assert emulator.emulator.snapshot()["requests"] == {}


def test_exit_2_when_the_manifest_is_missing(tmp_path: Path) -> None:
    (tmp_path / "dbt_project.yml").write_text("name: x\nprofile: x\n")

    proc = heap_dbt(tmp_path, "sync")

    assert proc.returncode == 2
    assert proc.stderr.startswith("Error: No dbt manifest at")
    assert "dbt run" in proc.stderr


def test_exit_2_when_a_model_table_does_not_exist(project: Path, emulator: RunningEmulator) -> None:
    with duckdb.connect(str(project / "heap_demo.duckdb")) as con:
        con.execute('DROP TABLE "main"."heap_accounts"')

    proc = heap_dbt(project, "sync", base_url=emulator.url)

    assert proc.returncode == 2
    assert "heap_accounts" in proc.stderr and "does not exist" in proc.stderr
    assert emulator.emulator.snapshot()["requests"] == {}


def test_exit_2_without_an_app_id(project: Path, emulator: RunningEmulator) -> None:
    proc = heap_dbt(project, "sync", base_url=emulator.url, app_id=None)

    assert proc.returncode == 2
    assert "HEAP_APP_ID" in proc.stderr


def test_exit_2_for_an_unknown_target(project: Path) -> None:
    proc = heap_dbt(project, "sync", "--target", "nope")

    assert proc.returncode == 2
    assert "Target 'nope' is not in profile 'heap_demo'" in proc.stderr


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    (tmp_path / "dbt_project.yml").write_text("name: x\nprofile: x\n")

    proc = heap_dbt(tmp_path, "sync", "--debug")

    assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_the_app_id_is_never_printed_or_written(project: Path, emulator: RunningEmulator) -> None:
    secret = "987654321012"
    emulator.emulator.configure(script=[500])

    proc = heap_dbt(project, "sync", "--json", base_url=emulator.url, app_id=secret)
    dry = heap_dbt(project, "sync", "--dry-run", base_url=emulator.url, app_id=secret)

    assert proc.returncode == 0
    for text in (
        proc.stdout,
        proc.stderr,
        dry.stdout,
        dry.stderr,
        (project / "target" / "heap_sync_results.json").read_text(),
    ):
        assert secret not in text
    assert secret in emulator.emulator.snapshot()["users"]


# --- a wide model: DuckDB's scan needs memory per column and thread, not per row ---------------

WIDE_PAIRS = 100  # a string and an integer column each: 201 columns with the key
WIDE_ROWS = 250_000  # three DuckDB row groups, so more than one thread scans


def test_a_wide_model_syncs_with_the_default_memory_limit(project: Path, emulator: RunningEmulator) -> None:
    """About 1 MB per column and thread: far past the 64 MB default at 201 columns (was Out of Memory)."""
    columns = ",\n".join(
        f"case when i % 7 = {j % 7} then null else 'value ' || ((i * {j + 1}) % 100003) end as s{j}, "
        f"(i * {j + 3}) % 1000003 as n{j}"
        for j in range(WIDE_PAIRS)
    )
    models = project / "models" / "wide"
    models.mkdir()
    (models / "wide_users.sql").write_text(
        f"select 'user' || i || '@example.com' as email,\n{columns}\nfrom range({WIDE_ROWS}) t(i)\n"
    )
    (models / "schema.yml").write_text(
        "version: 2\nmodels:\n  - name: wide_users\n    config:\n      meta:\n"
        "        heap: {object: user, key: email}\n"
    )
    dbt(project, "run", "-s", "wide_users", "--quiet")

    proc = heap_dbt(project, "sync", "-s", "wide_users", "--dry-run", "--json", base_url=emulator.url)

    assert proc.returncode == 0, proc.stderr
    (sync,) = json.loads(proc.stdout)["syncs"]
    assert sync["status"] == "success" and "error" not in sync
    assert (sync["read"], sync["would_send"], sync["rejected"]) == (WIDE_ROWS, WIDE_ROWS, 0)
    for record in sync["sample_payload"][0]["users"]:
        i = int(record["identity"].removeprefix("user").removesuffix("@example.com"))
        want = {f"n{j}": (i * (j + 3)) % 1000003 for j in range(WIDE_PAIRS)}
        want |= {f"s{j}": f"value {(i * (j + 1)) % 100003}" for j in range(WIDE_PAIRS) if i % 7 != j % 7}
        assert record["properties"] == want
