"""``heap-dbt sync``: plan the syncs (``heap_dbt.plan``), open the warehouse and its state,
share the rate limits and the HTTP client, run each sync (``heap_dbt.syncing``), and write
the results file; and the state outside a sync (``open_state``, ``read_history``).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import math
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from heap_dbt import heap
from heap_dbt.clock import Clock, SystemClock
from heap_dbt.errors import ConfigError
from heap_dbt.manifest import Manifest, RunResults, load_run_results
from heap_dbt.plan import Prepared, SyncOptions, base_url, plan_syncs, prepare
from heap_dbt.profiles import ProjectPaths, Target, resolve_project, resolve_target
from heap_dbt.ratelimit import WINDOW_SECONDS, RateLimits
from heap_dbt.report import SyncReport
from heap_dbt.sender import Cancellation
from heap_dbt.shared import shared_limits, state_lock
from heap_dbt.state import RunRecord, StateStore
from heap_dbt.syncing import ProgressFn as ProgressFn
from heap_dbt.syncing import SyncContext, run_all
from heap_dbt.warehouse import ReaderFactory, open_reader

if TYPE_CHECKING:
    from heap_dbt.transport import Transport


async def run_sync_async(
    options: SyncOptions,
    *,
    transport: Transport | None = None,
    clock: Clock | None = None,
    progress: ProgressFn | None = None,
    reader_factory: ReaderFactory = open_reader,
    limits: RateLimits | None = None,
    run_results: RunResults | None = None,
    dbt_success: bool | None = None,
    manifest: Manifest | None = None,
    dbt_cloud: Mapping[str, Any] | None = None,
    warnings: Sequence[str] = (),
) -> SyncReport:
    """Run ``heap-dbt sync`` on the running event loop: validate everything, then send, and
    write the results file.

    Never exits the process. Raises ConfigError (nothing was sent) for any configuration
    problem, StateError for an unusable state; row-level problems go into the report.
    Syncs of one app share its event limits and its pause after a 429 with every other sync
    in this event loop (``heap_dbt.shared``), and two syncs of one project and target run one
    after the other. ``run_results``: gate on this dbt invocation instead of
    ``run_results.json``, whose outcome ``dbt_success`` the report records (``heap-dbt run``).
    ``manifest`` (with ``run_results``): artifacts from elsewhere, a dbt Cloud run's, used
    instead of the local target path; their args (dbt Cloud's own project, profiles and
    target) never pick the local target. ``dbt_cloud`` (the run's ids) and ``warnings`` go
    into the report as they are.
    ``transport``, ``clock`` and ``reader_factory`` are for tests and embedding; ``limits``
    replaces the shared limits with the caller's own.
    """
    clock = clock or SystemClock()
    report = SyncReport(
        dry_run=options.dry_run,
        full_refresh=options.full_refresh,
        started_at=_utc(clock),
        dbt_success=dbt_success,
        dbt_cloud=dict(dbt_cloud) if dbt_cloud is not None else None,
        warnings=list(warnings),
    )
    url = base_url(options)  # a plain http URL to another host is refused before anything is read
    planned = await asyncio.to_thread(plan_syncs, options, run_results=run_results, manifest=manifest)
    paths, specs, problems = planned.paths, planned.specs, planned.problems
    report.skipped = planned.skipped
    report.warnings += planned.warnings
    if not specs and not problems:
        report.finished_at = _utc(clock)
        report.write(paths.target_path)
        return report
    # Artifacts from elsewhere name another machine's project, profiles and target.
    target = _target(options, paths, planned.run_results if manifest is None else None)
    state_path = _state_path(options, paths)
    async with state_lock(f"{paths.project_dir.resolve()}|{target.name}|{state_path}"):
        reader = await asyncio.to_thread(
            reader_factory,
            target,
            project_dir=paths.project_dir,
            writable=not options.dry_run,
            state_path=state_path,
            memory_limit=options.memory_limit or options.env.get("HEAP_DBT_MEMORY_LIMIT"),
        )
        try:
            plan = await asyncio.to_thread(prepare, specs, reader, options, problems)
            if problems:
                raise ConfigError(
                    f"The Heap sync configuration has {len(problems)} problem"
                    f"{'s' if len(problems) > 1 else ''}; nothing was sent. Fix "
                    f"{'them' if len(problems) > 1 else 'it'} and re-run:",
                    problems=problems,
                )
            state = reader.state(schema=options.state_schema, writable=not options.dry_run)
            if options.dry_run:
                report.state = _diffed_against(options, plan, state, state_path=state_path, target=target)
            if limits is None:
                limits = _limits(options, clock, report)

            async def go(http: Transport | None) -> None:
                ctx = SyncContext(
                    reader, state, options, clock, progress, http, asyncio.Semaphore(options.concurrency),
                    limits, Cancellation(),
                )  # fmt: skip
                await run_all(ctx, plan, report)

            if options.dry_run or transport is not None:
                await go(transport)
            else:
                from heap_dbt.transport import AiohttpTransport  # aiohttp costs 0.2 s to import

                async with AiohttpTransport(
                    url, concurrency=options.concurrency, timeout=options.timeout
                ) as http:
                    await go(http)
        finally:
            reader.close()
        report.finished_at = _utc(clock)
        report.write(paths.target_path)
    return report


def _diffed_against(
    options: SyncOptions,
    plan: Sequence[Prepared],
    state: StateStore | None,
    *,
    state_path: Path | None,
    target: Target,
) -> str:
    """The sentence a dry run prints about the state its diff read: where, or why none."""
    where = (
        f"the state file {state_path}"
        if state_path is not None
        else f"schema {options.state_schema} of target {target.name!r}"
    )
    unknown = [p.spec.model.name for p in plan if p.app_id == heap.NO_APP_ID]
    if options.full_refresh:
        return "State: --full-refresh ignores the sync state; every row counts as new."
    if unknown and len(unknown) == len(plan):
        return (
            "State: no app_id, so heap-dbt cannot know what Heap holds; every row counts as new. Pass "
            "--app-id or set HEAP_APP_ID to diff against the sync state."
        )
    if state is None or not state.exists:
        return f"State: no sync state yet in {where}; every row counts as new."
    text = f"State: diffed against the sync state in {where}."
    if unknown:
        text += f" Without an app_id, every row of {', '.join(sorted(set(unknown)))} counts as new."
    return text


def _limits(options: SyncOptions, clock: Clock, report: SyncReport) -> RateLimits:
    """Each app's rate limits: shared with the other syncs of the event loop when sending,
    private to a dry run (which only sizes its batches by them)."""
    per_app, per_identity = options.events_per_minute, options.events_per_identity_per_minute
    window = _rate_window(options)
    if options.dry_run:
        return RateLimits(
            events_per_minute=per_app, events_per_identity_per_minute=per_identity, clock=clock, window=window
        )
    limits = shared_limits(events_per_minute=per_app, events_per_identity_per_minute=per_identity,
                           clock=clock, window=window)  # fmt: skip
    if (limits.events_per_minute, limits.events_per_identity_per_minute) != (per_app, per_identity):
        report.warnings.append(
            f"Another sync in this process already limits Heap events to {limits.events_per_minute:,} "
            f"per minute per app ({limits.events_per_identity_per_minute:,} per identity); this sync "
            "shares those limits."
        )
    return limits


def run_sync(
    options: SyncOptions,
    *,
    transport: Transport | None = None,
    clock: Clock | None = None,
    progress: ProgressFn | None = None,
    reader_factory: ReaderFactory = open_reader,
    run_results: RunResults | None = None,
    dbt_success: bool | None = None,
) -> SyncReport:
    """``run_sync_async`` on an event loop of its own, for callers without one."""
    return asyncio.run(
        run_sync_async(
            options,
            transport=transport,
            clock=clock,
            progress=progress,
            reader_factory=reader_factory,
            run_results=run_results,
            dbt_success=dbt_success,
        )
    )


def _utc(clock: Clock) -> dt.datetime:
    return dt.datetime.fromtimestamp(clock.time(), dt.UTC)


def _rate_window(options: SyncOptions) -> float:
    """The rate limits' window in seconds: Heap's minute, unless HEAP_DBT_RATE_WINDOW (set by the
    hidden ``--rate-window``) scales it to match an emulator that runs its clock faster."""
    text = options.env.get("HEAP_DBT_RATE_WINDOW")
    if not text:
        return WINDOW_SECONDS
    try:
        window = float(text)
    except ValueError:
        window = math.nan
    if not (window > 0 and math.isfinite(window)):
        raise ConfigError(f"HEAP_DBT_RATE_WINDOW={text!r} is not a number of seconds; give one above 0.")
    return window


def _state_path(options: SyncOptions, paths: ProjectPaths) -> Path | None:
    path = options.state_path
    if path is None and options.env.get("HEAP_DBT_STATE_PATH"):
        path = Path(options.env["HEAP_DBT_STATE_PATH"])
    if path is not None and not path.is_absolute():
        path = paths.project_dir / path
    return path


def _target(options: SyncOptions, paths: ProjectPaths, run_results: RunResults | None) -> Target:
    """The dbt target a sync reads: ``--target``, else the one the synced dbt invocation ran
    (``run_results``' args), else the profile's default."""
    return resolve_target(
        paths, profiles_dir=options.profiles_dir, target=options.target,
        run_args=run_results.args if run_results else {}, env=options.env,
    )  # fmt: skip


@contextlib.contextmanager
def open_state(
    options: SyncOptions, *, writable: bool, local_run: bool = True
) -> Iterator[StateStore | None]:
    """The sync state of ``options``' project and target, outside a sync (``heap-dbt history``,
    the webhook delivery log of ``heap-dbt serve``); None when read-only and no state exists
    (no sync has written one yet), where a writable open would create it.

    ``local_run``: the target is the one the local run_results.json ran, as for a local sync;
    False for the state of syncs from dbt Cloud artifacts, which never read the local one.
    Writable, it takes the state's lock as a sync does (a second writer fails with a
    StateError), creating the state if there is none. Everything it opened is closed when
    the block ends, so that a sync (or ``dbt run`` on a DuckDB file) can take the state
    next: within one process, use it strictly before or after a sync of the same state,
    never while one runs.
    """
    paths = resolve_project(project_dir=options.project_dir, target_path=options.target_path, env=options.env)
    run_results = load_run_results(paths.target_path / "run_results.json") if local_run else None
    target = _target(options, paths, run_results)
    reader = open_reader(
        target, project_dir=paths.project_dir, writable=writable, state_path=_state_path(options, paths)
    )
    try:
        state = reader.state(schema=options.state_schema, writable=writable)
        yield state if state is not None and (writable or state.exists) else None
    finally:
        reader.close()


def read_history(options: SyncOptions, *, limit: int) -> list[RunRecord]:
    """The last ``limit`` runs from the run log, newest first."""
    with open_state(options, writable=False) as state:
        return state.history(limit=limit) if state is not None else []
