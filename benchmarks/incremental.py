"""The incremental scenario: a first sync from empty state, a no-op re-sync, and a re-sync after 1% changed.

The goal it measures (the incremental issue): re-syncing a model whose data did not change
costs under 5% of the first sync, and a small change costs in proportion to the change.
Only the syncs are timed; the ``dbt run`` before each re-sync is not.
"""

from __future__ import annotations

from benchmarks.project import BenchProject, build, changed_rows
from benchmarks.results import IncrementalResult
from benchmarks.sink import SinkProcess
from benchmarks.syncs import drop_state, log, time_sync

OBJECT = "user"
CHANGED_PCT = 1


def run_incremental(
    project: BenchProject,
    sink: SinkProcess,
    rows: int,
    *,
    concurrency: int,
    timeout: float,
    built: bool,
) -> IncrementalResult:
    """Run the three syncs of the user model at ``rows`` rows and check each one's counts exactly.

    ``built`` says the user table already holds ``rows`` rows with ``changed_pct`` 0, so the
    scenario need not build it first.
    """
    label = f"incremental {OBJECT} {rows:,}"
    if not built:
        seconds = build(project, rows=rows, objects=[OBJECT])
        log(f"{label}: dbt run: {seconds:.1f} s (not timed)")
    drop_state(project)

    first = time_sync(
        project, sink, OBJECT, expect={"read": rows, "sent": rows, "unchanged": 0, "new": rows},
        concurrency=concurrency, timeout=timeout,
    )  # fmt: skip
    log(f"{label}: first sync: {first.wall_s:.2f} s wall, {first.engine_s:.3f} s engine")

    seconds = build(project, rows=rows, objects=[OBJECT])
    log(f"{label}: dbt run, same vars: {seconds:.1f} s (not timed)")
    noop = time_sync(
        project, sink, OBJECT, expect={"read": rows, "sent": 0, "unchanged": rows},
        concurrency=concurrency, timeout=timeout,
    )  # fmt: skip
    log(f"{label}: no-op sync: {noop.wall_s:.2f} s wall, {noop.engine_s:.3f} s engine, "
         f"fingerprint shortcut: {noop.skipped_unchanged}")  # fmt: skip

    n_changed = changed_rows(rows, CHANGED_PCT)
    seconds = build(project, rows=rows, objects=[OBJECT], changed_pct=CHANGED_PCT)
    log(f"{label}: dbt run, changed_pct={CHANGED_PCT}: {seconds:.1f} s (not timed)")
    expect = {"read": rows, "sent": n_changed, "unchanged": rows - n_changed, "changed": n_changed, "new": 0}
    changed = time_sync(project, sink, OBJECT, expect=expect, concurrency=concurrency, timeout=timeout)
    log(f"{label}: {CHANGED_PCT}% changed sync: sent {changed.sent:,} in {changed.wall_s:.2f} s wall, "
         f"{changed.engine_s:.3f} s engine")  # fmt: skip
    return IncrementalResult(
        object=OBJECT,
        model=project.model(OBJECT),
        rows=rows,
        changed_pct=CHANGED_PCT,
        changed_rows=n_changed,
        first=first,
        noop=noop,
        changed=changed,
    )
