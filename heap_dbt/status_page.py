"""The HTML of ``heap-dbt serve``'s status page: deliveries, sync runs, what is in flight.

One self-contained page for the team that owns the syncs: inline CSS, no script, no
external asset, every value escaped. It shows what the run log (``heap-dbt history``) and
the delivery log hold, so it carries no secret: app IDs are masked there, and the dbt Cloud
token and webhook secret never reach this module.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from html import escape
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from heap_dbt.report import RowIssue
    from heap_dbt.state import DeliveryRecord, RunRecord

MAX_ROWS_SHOWN = 1000
REFRESH_SECONDS = 15

_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#1d2330;background:#f7f8fa}
h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:24px 0 8px}
table{border-collapse:collapse;width:100%;background:#fff}
th,td{text-align:left;padding:4px 8px;border-bottom:1px solid #e3e6eb;vertical-align:top}
th{background:#eef0f4;font-weight:600}td.n{text-align:right;font-variant-numeric:tabular-nums}
.badge{display:inline-block;padding:2px 8px;border-radius:10px;font-weight:600}
.busy{background:#fff3c4}.idle{background:#dff3e4}.stop{background:#fbdada}
.muted{color:#667085}code{font-size:13px}
"""


@dataclass(frozen=True)
class KeptRows:
    """The rows one sync did not deliver, kept in memory for the status page."""

    model: str
    meta_path: str
    rejections: list[RowIssue]
    failures: list[RowIssue]


@dataclass(frozen=True)
class View:
    """What the page shows, taken from the server at the moment of the request."""

    started_at: dt.datetime
    jobs: Sequence[str]
    ready: bool
    stopping: bool
    deliveries: Sequence[DeliveryRecord]
    """Newest first."""
    history: Sequence[RunRecord]
    kept: Collection[int]
    """Run-log run ids whose undelivered rows the server holds."""
    in_flight: tuple[str, str] | None
    """(job, run) of the sync running now."""
    pending: Sequence[tuple[str, str, int]]
    """(job, run, deliveries) of each pending sync."""


def _time(value: dt.datetime | None) -> str:
    if value is None:
        return "-"
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return value.strftime("%Y-%m-%d %H:%M:%S") + " UTC"


def _page(title: str, body: str, *, refresh: int | None = None) -> str:
    # A refresh keeps a page left open current without any script.
    meta = f'<meta http-equiv="refresh" content="{refresh}">' if refresh else ""
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">{meta}'
        f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>{body}</body></html>\n"
    )


def _table(headers: Sequence[str], rows: Sequence[str], *, empty: str, cls: str) -> str:
    if not rows:
        return f'<p class="muted" id="{cls}-empty">{escape(empty)}</p>'
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    return f'<table id="{cls}"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def _status(view: View) -> str:
    if view.stopping:
        text, cls = "Stopping: new deliveries are refused until the server starts again.", "stop"
    elif not view.ready:
        text, cls = "Starting: reading the sync state.", "busy"
    elif view.in_flight is not None:
        job, run = view.in_flight
        text, cls = f"Sync in flight: job {job}, run {run}.", "busy"
    else:
        text, cls = "Idle: no sync in flight.", "idle"
    pending = "".join(
        f"<li>job {escape(job)}, run {escape(run)} ({n} deliver{'y' if n == 1 else 'ies'})</li>"
        for job, run, n in view.pending
    )
    more = f"<p>Pending syncs:</p><ul>{pending}</ul>" if pending else ""
    return f'<p><span class="badge {cls}" id="sync-status">{escape(text)}</span></p>{more}'


def _outcome(d: DeliveryRecord) -> str:
    if d.outcome is not None:
        return escape(d.outcome)
    if d.decision != "sync":
        return '<span class="muted">-</span>'  # nothing to do
    return '<span class="muted">pending</span>'


def render(view: View) -> str:
    """The status page."""
    deliveries = [
        f"<tr><td>{escape(_time(d.received_at))}</td><td>{escape(d.job_id)}</td><td>{escape(d.run_id)}</td>"
        f"<td><code>{escape(d.event_id)}</code></td><td>{escape(d.decision)}</td>"
        f"<td>{_outcome(d)}</td></tr>"
        for d in view.deliveries
    ]
    run_headers = ["Run", "Started", "Model", "Object", "App", "Outcome", "Read", "Sent", "Unchanged",
                   "Rejected", "Failed", "Removed"]  # fmt: skip
    runs = []
    before_start = False
    for r in view.history:
        c = r.counts
        if r.run_id in view.kept and (c["rejected"] or c["failed"]):
            rows = f'<a href="/syncs/{r.run_id}/rejected">{c["rejected"]:,}</a>'
        elif c["rejected"] or c["failed"]:
            rows, before_start = f"{c['rejected']:,}*", True
        else:
            rows = "0"
        runs.append(
            f"<tr><td>#{r.run_id}</td><td>{escape(_time(r.started_at))}</td><td>{escape(r.model)}</td>"
            f"<td>{escape(r.object)}</td><td>{escape(r.app_id)}</td><td>{escape(r.outcome)}</td>"
            f'<td class="n">{c["read"]:,}</td><td class="n">{c["sent"]:,}</td>'
            f'<td class="n">{c["unchanged"]:,}</td><td class="n">{rows}</td>'
            f'<td class="n">{c["failed"]:,}</td><td class="n">{c["removed"]:,}</td></tr>'
        )
    note = (
        '<p class="muted" id="rejections-note">* The rows of runs marked so are not held by this '
        "server: it keeps them for the syncs it ran itself, since it started "
        f"({escape(_time(view.started_at))}), and only for its last syncs.</p>"
        if before_start
        else ""
    )
    body = (
        "<h1>heap-dbt serve</h1>"
        f'<p class="muted">Up since {escape(_time(view.started_at))}. dbt Cloud jobs: '
        f"{escape(', '.join(view.jobs))}.</p>"
        f"{_status(view)}"
        "<h2>Last deliveries</h2>"
        + _table(
            ["Received", "Job", "Run", "Event", "Decision", "Outcome"],
            deliveries,
            empty="No delivery yet.",
            cls="deliveries",
        )
        + "<h2>Last sync runs</h2>"
        + _table(
            run_headers,
            runs,
            empty="No sync has run yet.",
            cls="runs",
        )
        + note
    )
    return _page("heap-dbt serve", body, refresh=REFRESH_SECONDS)


def render_rows(run_id: int, kept: KeptRows | None, *, kept_runs: int) -> str:
    """The rows one sync run did not deliver: rejected (with Heap's or heap-dbt's reason) and failed."""
    if kept is None:
        body = (
            f"<h1>Sync run #{run_id}</h1><p>This server does not hold the rows of run #{run_id}: it keeps "
            f"them only for the last {kept_runs} syncs it ran since it started. The run log has its "
            'counts.</p><p><a href="/">Back to the status page</a></p>'
        )
        return _page(f"Sync run #{run_id}", body)
    rows = [
        f"<tr><td>{kind}</td><td><code>{escape(str(issue.key))}</code></td><td>{escape(issue.reason)}</td></tr>"
        for kind, issues in (("rejected", kept.rejections), ("failed", kept.failures))
        for issue in issues[:MAX_ROWS_SHOWN]
    ]
    total = len(kept.rejections) + len(kept.failures)
    more = f"<p>Showing {len(rows):,} of {total:,} rows.</p>" if len(rows) < total else ""
    body = (
        f"<h1>Sync run #{run_id}: {escape(kept.model)}"
        f"{escape(kept.meta_path.removeprefix('config.meta.heap'))}</h1>"
        f'<p><a href="/">Back to the status page</a></p>'
        + _table(["", "Key", "Reason"], rows, empty="Every row was delivered.", cls="rows")
        + more
    )
    return _page(f"Sync run #{run_id}", body)
