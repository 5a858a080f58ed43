"""The sync report: counts per sync, rejected rows, the results file, and how they are shown.

This is the only module that formats output for people or for JSON: the sync summary, and
the tables of ``heap-dbt ls`` and ``heap-dbt history``.
"""

from __future__ import annotations

import datetime as dt
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import msgspec

from heap_dbt import heap, sql

if TYPE_CHECKING:
    import pyarrow as pa

    from heap_dbt.config import SyncSpec
    from heap_dbt.state import RunRecord

REPORT_VERSION = 1
RESULTS_FILE = "heap_sync_results.json"
SAMPLE_RECORDS = 3


@dataclass
class RowIssue:
    key: str | None
    reason: str


@dataclass(frozen=True)
class SkippedModel:
    """A selected model heap-dbt did not sync, and why (e.g. it failed in the last dbt run)."""

    model: str
    unique_id: str
    reason: str

    def as_dict(self) -> dict[str, str]:
        return {"model": self.model, "unique_id": self.unique_id, "reason": self.reason}


@dataclass
class SyncResult:
    """What happened to the rows of one sync. ``read`` always equals the sum of the outcomes."""

    model: str
    unique_id: str
    object: str
    meta_path: str
    app_id: str  # masked
    read: int = 0
    sent: int = 0
    unchanged: int = 0
    rejected: int = 0
    failed: int = 0
    would_send: int = 0
    removed: int = 0
    """Keys Heap had from earlier runs that left the model (not rows of the model)."""
    new: int = 0
    changed: int = 0
    """Of the rows to send: keys Heap never acknowledged, and keys whose values changed."""
    skipped_unchanged: bool = False
    """The whole model matched its fingerprint from the last complete run."""
    truncated: int = 0
    nulls_kept: int = 0
    """NULL properties in the records a user or account sync with ``nulls: keep`` tried to send
    (a dry run: would send): Heap has no unset, so each leaves Heap's value in place."""
    requests: int = 0
    retries: int = 0
    seconds: float = 0.0
    rejections: list[RowIssue] = field(default_factory=list)
    failures: list[RowIssue] = field(default_factory=list)
    error: str | None = None
    sample: list[Any] = field(default_factory=list)
    run_id: int = 0
    """This sync's row in the run log (``heap-dbt history``); 0 when nothing was written."""
    sync_name: str = ""
    """The sync's name (``heap_dbt.identity``)."""
    new_sync: bool = False
    """The state held nothing of this sync: every row counts as new, events get new keys."""

    @property
    def accounted(self) -> int:
        return self.sent + self.unchanged + self.rejected + self.failed + self.would_send

    def counts(self) -> dict[str, int]:
        return {
            "read": self.read, "sent": self.sent, "unchanged": self.unchanged,
            "rejected": self.rejected, "failed": self.failed, "removed": self.removed,
        }  # fmt: skip

    @property
    def ok(self) -> bool:
        return self.rejected == 0 and self.failed == 0 and self.error is None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "model": self.model,
            "unique_id": self.unique_id,
            "meta_path": self.meta_path,
            "sync_name": self.sync_name,
            "new_sync": self.new_sync,
            "object": self.object,
            "app_id": self.app_id,
            "status": "success" if self.ok else "error",
            "read": self.read,
            "sent": self.sent,
            "unchanged": self.unchanged,
            "rejected": self.rejected,
            "failed": self.failed,
            "removed": self.removed,
            "new": self.new,
            "changed": self.changed,
            "skipped_unchanged": self.skipped_unchanged,
            "truncated": self.truncated,
            "nulls_kept": self.nulls_kept,
            "requests": self.requests,
            "retries": self.retries,
            "seconds": round(self.seconds, 3),
            "rejections": [{"key": r.key, "reason": r.reason} for r in self.rejections],
            "failures": [{"key": r.key, "reason": r.reason} for r in self.failures],
        }
        if self.would_send:
            out["would_send"] = self.would_send
        if self.sample:
            out["sample_payload"] = self.sample
        if self.error:
            out["error"] = self.error
        if self.run_id:
            out["run_id"] = self.run_id
        return out


TOTALS = ("read", "sent", "unchanged", "rejected", "failed", "removed", "would_send", "nulls_kept")


@dataclass
class SyncReport:
    """The outcome of one ``heap-dbt sync``."""

    dry_run: bool
    started_at: dt.datetime
    full_refresh: bool = False
    syncs: list[SyncResult] = field(default_factory=list)
    finished_at: dt.datetime | None = None
    warnings: list[str] = field(default_factory=list)
    skipped: list[SkippedModel] = field(default_factory=list)
    """Selected models left out because the last dbt run did not build them (or their tests failed)."""
    dbt_success: bool | None = None
    """For ``heap-dbt run``: whether dbt built every node it ran; None when heap-dbt ran no dbt.
    For a dbt Cloud run: whether that run succeeded."""
    dbt_cloud: dict[str, Any] | None = None
    """The dbt Cloud run the artifacts came from: account_id, run_id, job_id, status, steps."""
    state: str | None = None
    """For a dry run: which sync state it diffed against, in one sentence."""

    @property
    def exit_code(self) -> int:
        """0 when every synced row was delivered (or would be) and dbt, if heap-dbt ran it,
        succeeded; 1 otherwise. Skipped models do not count: their rows were not read."""
        return 0 if all(s.ok for s in self.syncs) and self.dbt_success is not False else 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "report_version": REPORT_VERSION,
            "dry_run": self.dry_run,
            "full_refresh": self.full_refresh,
            **({"state": self.state} if self.state else {}),
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "success": self.exit_code == 0,
            "totals": {k: sum(getattr(s, k) for s in self.syncs) for k in TOTALS},
            "warnings": self.warnings,
            "syncs": [s.as_dict() for s in self.syncs],
            "skipped": [m.as_dict() for m in self.skipped],
            **({"dbt_success": self.dbt_success} if self.dbt_success is not None else {}),
            **({"dbt_cloud": self.dbt_cloud} if self.dbt_cloud is not None else {}),
        }

    def to_json(self) -> bytes:
        return msgspec.json.format(msgspec.json.encode(self.as_dict()), indent=2)

    def write(self, target_path: Path) -> Path:
        """Write ``heap_sync_results.json`` atomically into ``target_path``."""
        target_path.mkdir(parents=True, exist_ok=True)
        dest = target_path / RESULTS_FILE
        fd, tmp = tempfile.mkstemp(dir=target_path, prefix=".heap_sync_results.")
        with os.fdopen(fd, "wb") as f:
            f.write(self.to_json())
        os.replace(tmp, dest)
        return dest

    def render(self, out: TextIO, *, max_issues: int = 10) -> None:
        """A short human summary."""
        verb = "would send" if self.dry_run else "sent"
        if not self.syncs and not self.skipped:
            out.write("Nothing to sync: no selected model declares `meta.heap`.\n")
            return
        labels = [s.model + s.meta_path.removeprefix("config.meta.heap") for s in self.syncs]
        width = max(len(label) for label in [*labels, *(m.model for m in self.skipped)])
        head = "DRY RUN: nothing was sent.\n" if self.dry_run else ""
        if self.dry_run and self.state:
            head += f"{self.state}\n"
        if self.dbt_cloud is not None:
            cloud = self.dbt_cloud
            job = f" of job {cloud['job_id']}" if cloud.get("job_id") is not None else ""
            steps = ", ".join(str(s) for s in cloud.get("steps", []))
            head += f"dbt Cloud run {cloud['run_id']}{job}, the results of steps {steps}.\n"
        out.write(head)
        for s in self.syncs:
            label = s.model + s.meta_path.removeprefix("config.meta.heap")
            sent = s.would_send if self.dry_run else s.sent
            parts = [f"read {s.read:,}", f"{verb} {sent:,}"]
            if self.dry_run:
                parts += [f"new {s.new:,}", f"changed {s.changed:,}"]
            parts += [f"unchanged {s.unchanged:,}", f"rejected {s.rejected:,}", f"failed {s.failed:,}"]
            if s.removed:
                parts.append(f"removed {s.removed:,}")
            if s.truncated:
                parts.append(f"truncated values {s.truncated:,}")
            if s.nulls_kept:
                parts.append(f"NULLs kept {s.nulls_kept:,}")
            status = "OK  " if s.ok else "ERR "
            out.write(f"{status} {label:<{width}}  {s.object:<7}  {'  '.join(parts)}")
            out.write(f"  ({s.seconds:.2f} s)\n" if not self.dry_run else "\n")
            if s.new_sync and s.sync_name:
                out.write(f"    new sync {s.sync_name!r}: no state of it yet, so every row counts as new\n")
            if s.error:
                out.write(f"    error: {s.error}\n")
            for kind, issues in (("rejected", s.rejections), ("failed", s.failures)):
                _render_issues(out, kind, issues, max_issues)
            for record in s.sample:
                out.write(f"    sample: {msgspec.json.encode(record).decode()}\n")
        for m in self.skipped:
            out.write(f"SKIP {m.model:<{width}}  {m.reason}\n")
        if any(s.nulls_kept for s in self.syncs):
            out.write(
                "NULLs kept: properties that are NULL are left out, so Heap keeps the value it had; "
                "set `nulls: clear` in the block to send them as empty strings.\n"
            )
        totals = self.as_dict()["totals"]
        out.write(
            f"Total: read {totals['read']:,}, {verb} "
            f"{totals['would_send'] if self.dry_run else totals['sent']:,}, "
            f"unchanged {totals['unchanged']:,}, rejected {totals['rejected']:,}, "
            f"failed {totals['failed']:,}, removed {totals['removed']:,}"
            + (f"; skipped models {len(self.skipped):,}" if self.skipped else "")
            + ".\n"
        )


SHOWN_KEYS = 3
"""Keys shown on the line of a reason that many rows share."""


def _render_issues(out: TextIO, kind: str, issues: Sequence[RowIssue], max_lines: int) -> None:
    """One line per reason, with its count and first keys when rows share it (Heap unreachable
    fails every row the same way), in the order the reasons first came; at most ``max_lines``."""
    by_reason: dict[str, list[str | None]] = {}
    for issue in issues:
        by_reason.setdefault(issue.reason, []).append(issue.key)
    shown = 0
    for reason, keys in list(by_reason.items())[:max_lines]:
        shown += len(keys)
        if len(keys) == 1:
            out.write(f"    {kind} key={keys[0]!r}: {reason}\n")
            continue
        first = ", ".join(repr(k) for k in keys[:SHOWN_KEYS])
        more = f" and {len(keys) - SHOWN_KEYS:,} more" if len(keys) > SHOWN_KEYS else ""
        out.write(f"    {kind} {len(keys):,} rows (keys {first}{more}): {reason}\n")
    if len(issues) > shown:
        out.write(f"    ... and {len(issues) - shown:,} more {kind} rows\n")


def take_sample(records: pa.Array, app_id: str, obj: str) -> list[Any]:
    """The first few records as the body Heap would get, app_id masked, for a dry run's report."""
    _, array = heap.ENDPOINTS[obj]
    sep = len(sql.SEPARATOR)
    items = [msgspec.json.decode(r[:-sep]) for r in records.slice(0, SAMPLE_RECORDS).to_pylist()]
    shown = app_id if app_id == heap.NO_APP_ID else heap.mask_app_id(app_id)
    return [{"app_id": shown, array: items}]


# --- heap-dbt ls ------------------------------------------------------------------------------


def spec_as_dict(spec: SyncSpec) -> dict[str, Any]:
    """One declared sync, as ``heap-dbt ls --json`` shows it."""
    return {
        "model": spec.model.name,
        "meta_path": spec.meta_path,
        "name": spec.name,
        "object": spec.object,
        "key": spec.key,
        "properties": spec.fields if spec.fields is not None else "all other columns",
        **({"identity": spec.identity} if spec.identity else {}),
        **({"event_name": spec.event_name} if spec.event_name else {}),
        **({"event_name_column": spec.event_name_column} if spec.event_name_column else {}),
        # an event's timestamp column, null when Heap stamps the arrival time
        **({"timestamp": spec.timestamp} if spec.timestamp or spec.object == "event" else {}),
    }


def specs_json(specs: Sequence[SyncSpec], problems: list[str]) -> bytes:
    return msgspec.json.encode({"syncs": [spec_as_dict(s) for s in specs], "problems": problems})


def render_specs(specs: Sequence[SyncSpec], out: TextIO) -> None:
    """One line per declared sync: model, object, key and the property mapping."""
    for s in specs:
        row = spec_as_dict(s)
        props = row["properties"]
        shown = (
            ", ".join(f"{k}<-{v}" if k != v else k for k, v in props.items())
            if isinstance(props, dict)
            else props
        )
        event = ""
        if s.object == "event":
            name = s.event_name if s.event_name else f"<{s.event_name_column}>"
            event = f"event={name:<16} timestamp={s.timestamp or '(arrival)':<16} "
        out.write(
            f"{row['model']:<24} {row['object']:<8} {row['name']!r:<22} key={row['key']:<16} {event}{shown}\n"
        )
    if not specs:
        out.write("No model in the manifest declares `meta.heap`.\n")


# --- heap-dbt history -------------------------------------------------------------------------


def run_as_dict(r: RunRecord) -> dict[str, Any]:
    """One run of the run log, as ``heap-dbt history --json`` shows it (times in UTC)."""
    return {
        "run_id": r.run_id,
        "model": r.model,
        "object": r.object,
        "meta_path": r.meta_path,
        "app_id": r.app_id,
        "full_refresh": r.full_refresh,
        "started_at": r.started_at.isoformat() + "Z" if r.started_at else None,
        "finished_at": r.finished_at.isoformat() + "Z" if r.finished_at else None,
        **r.counts,
        "outcome": r.outcome,
    }


def history_json(runs: Sequence[RunRecord]) -> bytes:
    return msgspec.json.encode({"runs": [run_as_dict(r) for r in runs]})


def render_history(runs: Sequence[RunRecord], out: TextIO) -> None:
    """One line per run, newest first."""
    if not runs:
        out.write("No sync has run yet.\n")
        return
    for run in runs:
        r = run_as_dict(run)
        finished = (r["finished_at"] or "-")[:19]
        out.write(
            f"#{r['run_id']:<5} {r['started_at'][:19]}  {finished:<19}  {r['model']:<22} {r['object']:<7} "
            f"{r['outcome']:<11} read {r['read']:,}  sent {r['sent']:,}  unchanged {r['unchanged']:,}  "
            f"rejected {r['rejected']:,}  failed {r['failed']:,}  removed {r['removed']:,}"
            + ("  (full refresh)" if r["full_refresh"] else "")
            + "\n"
        )
