"""The status page's HTML without a server: what it shows, escaped, with no script or external asset."""

from __future__ import annotations

import datetime as dt

from heap_dbt import status_page
from heap_dbt.report import RowIssue
from heap_dbt.state import DeliveryRecord, RunRecord

NOW = dt.datetime(2026, 1, 31, 19, 29, 35, tzinfo=dt.UTC)


def run(run_id: int, *, rejected: int = 0, model: str = "heap_users") -> RunRecord:
    counts = {
        "read": 10,
        "sent": 10 - rejected,
        "unchanged": 0,
        "rejected": rejected,
        "failed": 0,
        "removed": 0,
    }
    return RunRecord(
        run_id=run_id, model=model, object="user", meta_path="config.meta.heap", app_id="48******42",
        full_refresh=False, started_at=NOW.replace(tzinfo=None), finished_at=NOW.replace(tzinfo=None),
        counts=counts, outcome="partial" if rejected else "success",
    )  # fmt: skip


def view(**changes: object) -> status_page.View:
    values: dict[str, object] = {
        "started_at": NOW,
        "jobs": ["7"],
        "ready": True,
        "stopping": False,
        "deliveries": [],
        "history": [],
        "kept": set(),
        "in_flight": None,
        "pending": [],
    }
    values.update(changes)
    return status_page.View(**values)  # type: ignore[arg-type]


def test_an_empty_server_says_so() -> None:
    html = status_page.render(view())
    assert "Idle: no sync in flight." in html
    assert "No delivery yet." in html and "No sync has run yet." in html
    assert '<meta http-equiv="refresh" content="15">' in html  # current when left open, with no script


def test_values_are_escaped_and_nothing_is_loaded_from_elsewhere() -> None:
    evil = '<script>alert("x")</script>'
    record = DeliveryRecord(
        event_id=evil, received_at=NOW, job_id="7", run_id="1", decision=f"ignored: {evil}"
    )
    html = status_page.render(view(deliveries=[record], history=[run(3, model=evil)]))
    assert "<script" not in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in html
    assert "src=" not in html and "<link" not in html and "http:" not in html and "https:" not in html


def test_the_sync_in_flight_and_the_pending_ones() -> None:
    html = status_page.render(view(in_flight=("7", "101"), pending=[("7", "120", 19)]))
    assert "Sync in flight: job 7, run 101." in html
    assert "job 7, run 120 (19 deliveries)" in html
    assert "Stopping" in status_page.render(view(stopping=True))


def test_rejections_link_when_held_and_say_so_when_not() -> None:
    html = status_page.render(view(history=[run(5, rejected=2), run(4, rejected=1)], kept={5}))
    assert '<a href="/syncs/5/rejected">2</a>' in html
    assert "/syncs/4/rejected" not in html and "1*" in html
    assert "not held by this server" in html
    assert "not held" not in status_page.render(view(history=[run(5, rejected=2)], kept={5}))


def test_the_outcome_column() -> None:
    synced = DeliveryRecord(event_id="a", received_at=NOW, job_id="7", run_id="1", decision="sync")
    ignored = DeliveryRecord(event_id="b", received_at=NOW, job_id="8", run_id="2", decision="ignored: job 8")
    done = DeliveryRecord(
        event_id="c", received_at=NOW, job_id="7", run_id="3", decision="sync", outcome="success: sent 1"
    )
    html = status_page.render(view(deliveries=[synced, ignored, done]))
    assert ">pending<" in html and "success: sent 1" in html and '<span class="muted">-</span>' in html
    assert "2026-01-31 19:29:35 UTC" in html


def test_the_rows_page() -> None:
    kept = status_page.KeptRows(
        model="heap_users",
        meta_path="config.meta.heap",
        rejections=[RowIssue("<a@b>", "the key is NULL")],
        failures=[RowIssue("c", "Heap answered 500 six times")],
    )
    html = status_page.render_rows(9, kept, kept_runs=1)
    assert "<td>rejected</td><td><code>&lt;a@b&gt;</code></td><td>the key is NULL</td>" in html
    assert "<td>failed</td>" in html
    gone = status_page.render_rows(8, None, kept_runs=20)
    assert "does not hold the rows of run #8" in gone and "last 20 syncs" in gone
