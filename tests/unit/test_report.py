"""The sync report and every table heap-dbt prints: the summary, the JSON, the results file, ls, history."""

from __future__ import annotations

import datetime as dt
import io
import json
import stat
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from heap_dbt import heap, sql
from heap_dbt.config import SyncSpec
from heap_dbt.manifest import ModelNode
from heap_dbt.report import (
    REPORT_VERSION,
    RESULTS_FILE,
    RowIssue,
    SyncReport,
    SyncResult,
    history_json,
    render_history,
    render_specs,
    specs_json,
    take_sample,
)
from heap_dbt.state import RunRecord

STARTED = dt.datetime(2024, 5, 1, 12, 0, 0, tzinfo=dt.UTC)


def result(model: str = "dim_users", meta_path: str = "config.meta.heap", **counts: Any) -> SyncResult:
    return SyncResult(
        model=model, unique_id=f"model.demo.{model}", object="user", meta_path=meta_path, app_id="12******90",
        **counts,
    )  # fmt: skip


def report(*syncs: SyncResult, dry_run: bool = False) -> SyncReport:
    return SyncReport(dry_run=dry_run, started_at=STARTED, syncs=list(syncs))


def rendered(r: SyncReport, **kwargs: Any) -> str:
    out = io.StringIO()
    r.render(out, **kwargs)
    return out.getvalue()


# --- counts and exit codes -------------------------------------------------------------------


def test_every_outcome_counts_towards_accounted() -> None:
    r = result(read=10, sent=4, unchanged=3, rejected=2, failed=1)

    assert r.accounted == r.read == 10
    assert r.counts() == {"read": 10, "sent": 4, "unchanged": 3, "rejected": 2, "failed": 1, "removed": 0}


@pytest.mark.parametrize(
    ("counts", "ok"),
    [
        pytest.param({"read": 5, "sent": 5}, True, id="all-sent"),
        pytest.param({"read": 5, "sent": 4, "rejected": 1}, False, id="rejected"),
        pytest.param({"read": 5, "sent": 4, "failed": 1}, False, id="failed"),
        pytest.param({"error": "Heap answered 401"}, False, id="error"),
        pytest.param({"read": 3, "unchanged": 3, "removed": 2}, True, id="removed-is-not-an-error"),
    ],
)
def test_a_sync_is_ok_only_when_nothing_was_rejected_failed_or_broke(
    counts: dict[str, Any], ok: bool
) -> None:
    r = result(**counts)

    assert r.ok is ok
    assert r.as_dict()["status"] == ("success" if ok else "error")
    assert report(result(read=1, sent=1), r).exit_code == (0 if ok else 1)


def test_a_report_of_no_syncs_succeeds() -> None:
    assert report().exit_code == 0


# --- JSON and the results file ---------------------------------------------------------------


def test_json_totals_add_up_every_sync() -> None:
    r = report(
        result(read=10, sent=7, unchanged=2, rejected=1),
        result("dim_accounts", read=5, sent=3, failed=2, removed=4, nulls_kept=6),
    )
    doc = json.loads(r.to_json())

    assert doc["report_version"] == REPORT_VERSION
    assert doc["success"] is False and doc["dry_run"] is False
    assert doc["started_at"] == "2024-05-01T12:00:00+00:00" and doc["finished_at"] is None
    assert doc["totals"] == {
        "read": 15, "sent": 10, "unchanged": 2, "rejected": 1, "failed": 2, "removed": 4, "would_send": 0,
        "nulls_kept": 6,
    }  # fmt: skip
    assert [s["nulls_kept"] for s in doc["syncs"]] == [0, 6]
    assert [s["model"] for s in doc["syncs"]] == ["dim_users", "dim_accounts"]


def test_json_of_a_sync_keeps_optional_fields_out_until_they_have_a_value() -> None:
    plain = result(read=1, sent=1).as_dict()
    assert not {"would_send", "sample_payload", "error"} & plain.keys()

    full = result(read=2, would_send=2, error="boom", sample=[{"app_id": "<app_id>", "users": []}])
    full.rejections.append(RowIssue("a@x.com", "key is empty"))
    doc = full.as_dict()
    assert doc["would_send"] == 2 and doc["error"] == "boom"
    assert doc["sample_payload"] == [{"app_id": "<app_id>", "users": []}]
    assert doc["rejections"] == [{"key": "a@x.com", "reason": "key is empty"}] and doc["failures"] == []


def test_seconds_are_rounded_to_milliseconds() -> None:
    assert result(seconds=1.23456).as_dict()["seconds"] == 1.235


@pytest.mark.usefixtures("permissive_umask")
def test_the_results_file_is_0600_even_when_it_replaces_a_0644_one(tmp_path: Path) -> None:
    """It holds rejected rows' keys (emails, user ids): the owner's only."""
    dest = tmp_path / RESULTS_FILE
    dest.write_text("{}")
    dest.chmod(0o644)
    r = result(read=1, rejected=1)
    r.rejections.append(RowIssue("alice@example.com", "too long"))

    written = report(r).write(tmp_path)

    assert written == dest and stat.S_IMODE(dest.stat().st_mode) == 0o600
    assert json.loads(dest.read_text())["syncs"][0]["rejections"][0]["key"] == "alice@example.com"
    assert [p.name for p in tmp_path.iterdir()] == [RESULTS_FILE]  # no temporary file left behind


def test_the_results_file_is_written_into_a_target_path_that_does_not_exist_yet(tmp_path: Path) -> None:
    written = report(result(read=1, sent=1)).write(tmp_path / "target" / "nested")

    assert json.loads(written.read_bytes()) == report(result(read=1, sent=1)).as_dict()


# --- the human summary -----------------------------------------------------------------------


def test_summary_of_a_sync_has_a_line_per_sync_and_the_totals() -> None:
    text = rendered(
        report(
            result(read=1200, sent=1000, unchanged=200, seconds=1.5),
            result("dim_users", "config.meta.heap[1]", read=3, sent=3, seconds=0.25),
        )
    )

    assert text.splitlines() == [
        "OK   dim_users     user     read 1,200  sent 1,000  unchanged 200  rejected 0  failed 0  (1.50 s)",
        "OK   dim_users[1]  user     read 3  sent 3  unchanged 0  rejected 0  failed 0  (0.25 s)",
        "Total: read 1,203, sent 1,003, unchanged 200, rejected 0, failed 0, removed 0.",
    ]


def test_summary_of_a_dry_run_says_nothing_was_sent_and_what_would_be() -> None:
    text = rendered(report(result(read=5, would_send=4, new=3, changed=1, unchanged=1), dry_run=True))

    assert text.splitlines() == [
        "DRY RUN: nothing was sent.",
        "OK   dim_users  user     read 5  would send 4  new 3  changed 1  unchanged 1  rejected 0  failed 0",
        "Total: read 5, would send 4, unchanged 1, rejected 0, failed 0, removed 0.",
    ]


def test_summary_shows_removed_and_truncated_only_when_there_are_some() -> None:
    line = rendered(report(result(read=2, sent=2, removed=7, truncated=3))).splitlines()[0]

    assert line.endswith("failed 0  removed 7  truncated values 3  (0.00 s)")
    assert "removed" not in rendered(report(result(read=2, sent=2))).splitlines()[0]


def test_summary_shows_nulls_kept_and_says_how_to_clear_them_only_when_there_are_some() -> None:
    lines = rendered(report(result(read=2, sent=2, nulls_kept=5))).splitlines()

    assert lines[0].endswith("failed 0  NULLs kept 5  (0.00 s)")
    assert lines[1] == (
        "NULLs kept: properties that are NULL are left out, so Heap keeps the value it had; "
        "set `nulls: clear` in the block to send them as empty strings."
    )
    assert "NULL" not in rendered(report(result(read=2, sent=2)))


def test_summary_lists_issues_up_to_a_limit_and_counts_the_rest() -> None:
    r = result(read=5, sent=0, rejected=4, failed=1, error="Heap answered 401")
    r.rejections.extend(RowIssue(f"k{i}", f"key {i} is odd") for i in range(4))
    r.failures.append(RowIssue(None, "gave up after 6 attempts"))

    lines = rendered(report(r), max_issues=2).splitlines()

    assert lines[0].startswith("ERR  dim_users")
    assert lines[1:6] == [
        "    error: Heap answered 401",
        "    rejected key='k0': key 0 is odd",
        "    rejected key='k1': key 1 is odd",
        "    ... and 2 more rejected rows",
        "    failed key=None: gave up after 6 attempts",
    ]


def test_rows_that_fail_for_one_cause_are_one_line_with_a_count() -> None:
    """Heap unreachable fails every row the same way: one sentence, not one per row."""
    r = result(read=7, sent=0, rejected=2, failed=5)
    cause = "cannot connect to http://localhost:9: Connection refused (gave up after 6 attempts)"
    r.failures.extend(RowIssue(f"k{i}", cause) for i in range(4))
    r.failures.append(RowIssue("k4", "not sent: Heap refused a request with 401"))
    r.rejections.extend(RowIssue(f"r{i}", "key is empty") for i in range(2))

    lines = rendered(report(r)).splitlines()

    assert lines[1:4] == [
        "    rejected 2 rows (keys 'r0', 'r1'): key is empty",
        f"    failed 4 rows (keys 'k0', 'k1', 'k2' and 1 more): {cause}",
        "    failed key='k4': not sent: Heap refused a request with 401",
    ]


def test_summary_shows_the_sample_payload_as_json() -> None:
    sample = [{"app_id": "<app_id>", "users": [{"identity": "a", "properties": {"n": 1}}]}]
    text = rendered(report(result(read=1, would_send=1, sample=sample), dry_run=True))

    assert '    sample: {"app_id":"<app_id>","users":[{"identity":"a","properties":{"n":1}}]}' in text


def test_summary_of_nothing_to_sync_says_why() -> None:
    assert rendered(report()) == "Nothing to sync: no selected model declares `meta.heap`.\n"


# --- a dry run's sample ----------------------------------------------------------------------


def records(*texts: str) -> pa.Array:
    """Records as the record query yields them: each JSON text followed by the separator."""
    return pa.array([t + sql.SEPARATOR for t in texts])


def test_the_sample_is_the_first_records_as_the_body_heap_would_get_with_the_app_id_masked() -> None:
    texts = [json.dumps({"identity": f"u{i}", "properties": {}}) for i in range(5)]

    (body,) = take_sample(records(*texts), "1234567890", "user")

    assert body == {"app_id": heap.mask_app_id("1234567890"), "users": [json.loads(t) for t in texts[:3]]}
    assert "1234567890" not in json.dumps(body)


def test_the_sample_without_an_app_id_shows_the_placeholder() -> None:
    (body,) = take_sample(records('{"event":"Signup","identity":"u"}'), heap.NO_APP_ID, "event")

    assert body == {"app_id": heap.NO_APP_ID, "events": [{"event": "Signup", "identity": "u"}]}


# --- heap-dbt ls -----------------------------------------------------------------------------


def spec(name: str, obj: str = "user", **options: Any) -> SyncSpec:
    node = ModelNode(
        unique_id=f"model.demo.{name}", name=name, relation_name=f'"dev"."main"."{name}"',
        materialized="table", meta={}, tags=(), fqn=("demo", name), original_file_path=f"models/{name}.sql",
    )  # fmt: skip
    return SyncSpec(model=node, meta_path="config.meta.heap", object=obj, **options)  # type: ignore[arg-type]


def test_ls_shows_each_sync_with_its_property_mapping() -> None:
    out = io.StringIO()
    render_specs(
        [
            spec("dim_users", key="email", fields={"email": "email", "Plan": "plan_name"}),
            spec("dim_accounts", "account", key="account_id"),
        ],
        out,
    )

    assert out.getvalue().splitlines() == [
        "dim_users                user     'user:email'           key=email            "
        "email, Plan<-plan_name",
        "dim_accounts             account  'account:account_id'   key=account_id       all other columns",
    ]


def test_ls_shows_an_event_sync_s_event_name_and_timestamp_column() -> None:
    out = io.StringIO()
    render_specs(
        [
            spec("fct_orders", "event", key="order_id", identity="email", event_name="Purchase",
                 timestamp="ordered_at", fields={"amount": "amount"}),
            spec("fct_clicks", "event", key="click_id", identity="email", event_name_column="kind"),
        ],
        out,
    )  # fmt: skip

    assert out.getvalue().splitlines() == [
        "fct_orders               event    'event:Purchase:order_id' key=order_id         "
        "event=Purchase         timestamp=ordered_at       amount",
        "fct_clicks               event    'event:[kind]:click_id' key=click_id         "
        "event=<kind>           timestamp=(arrival)        all other columns",
    ]
    rows = json.loads(specs_json([spec("e", "event", key="k", identity="i", event_name="E")], []))["syncs"]
    assert (rows[0]["event_name"], rows[0]["timestamp"]) == ("E", None)


def test_ls_of_no_sync_says_so() -> None:
    out = io.StringIO()
    render_specs([], out)

    assert out.getvalue() == "No model in the manifest declares `meta.heap`.\n"


def test_ls_json_has_event_options_only_for_events_and_the_problems() -> None:
    event = spec("fct_signups", "event", key="id", identity="user_id", event_name="Signup", timestamp="at")
    doc = json.loads(specs_json([spec("dim_users", key="email"), event], ["model x: broken"]))

    assert doc == {
        "syncs": [
            {"model": "dim_users", "meta_path": "config.meta.heap", "name": "user:email", "object": "user",
             "key": "email", "properties": "all other columns"},
            {"model": "fct_signups", "meta_path": "config.meta.heap", "name": "event:Signup:id",
             "object": "event", "key": "id",
             "properties": "all other columns", "identity": "user_id", "event_name": "Signup",
             "timestamp": "at"},
        ],
        "problems": ["model x: broken"],
    }  # fmt: skip


# --- heap-dbt history ------------------------------------------------------------------------


def run(
    run_id: int, *, finished: bool = True, full_refresh: bool = False, outcome: str = "success"
) -> RunRecord:
    return RunRecord(
        run_id=run_id, model="dim_users", object="user", meta_path="config.meta.heap", app_id="12******90",
        full_refresh=full_refresh, started_at=dt.datetime(2024, 5, 1, 12, 0, run_id),
        finished_at=dt.datetime(2024, 5, 1, 12, 1, run_id) if finished else None,
        counts={"read": 1500, "sent": 1000, "unchanged": 500, "rejected": 0, "failed": 0, "removed": 2},
        outcome=outcome,
    )  # fmt: skip


def test_history_has_a_line_per_run_in_the_order_given() -> None:
    out = io.StringIO()
    render_history([run(2, full_refresh=True), run(1, finished=False, outcome="interrupted")], out)

    assert out.getvalue().splitlines() == [
        "#2     2024-05-01T12:00:02  2024-05-01T12:01:02  dim_users              user    success     "
        "read 1,500  sent 1,000  unchanged 500  rejected 0  failed 0  removed 2  (full refresh)",
        "#1     2024-05-01T12:00:01  -                    dim_users              user    interrupted "
        "read 1,500  sent 1,000  unchanged 500  rejected 0  failed 0  removed 2",
    ]


def test_history_before_any_run_says_so() -> None:
    out = io.StringIO()
    render_history([], out)

    assert out.getvalue() == "No sync has run yet.\n"


def test_history_json_gives_utc_times_and_every_count() -> None:
    (doc,) = json.loads(history_json([run(3, finished=False)]))["runs"]

    assert doc == {
        "run_id": 3, "model": "dim_users", "object": "user", "meta_path": "config.meta.heap",
        "app_id": "12******90", "full_refresh": False, "started_at": "2024-05-01T12:00:03Z",
        "finished_at": None, "read": 1500, "sent": 1000, "unchanged": 500, "rejected": 0, "failed": 0,
        "removed": 2, "outcome": "success",
    }  # fmt: skip
