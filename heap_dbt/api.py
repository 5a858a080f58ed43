"""heap-dbt's Python API: ``sync``, ``sync_async``, ``run`` and ``sync_cloud``, for orchestrators and servers.

The CLI is a thin caller of these functions. They take the options of ``heap-dbt sync``
as keyword arguments (or a ``SyncOptions``), return the ``SyncReport``, and never exit
the process: a configuration problem raises a ``heap_dbt.errors.ConfigError`` (or another
``HeapDbtError``) before anything is sent, and rows Heap refused are in the report.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import os
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from heap_dbt.errors import ConfigError
from heap_dbt.plan import SyncOptions

if TYPE_CHECKING:
    from heap_dbt.clock import Clock
    from heap_dbt.dbt_cloud import CloudConfig
    from heap_dbt.engine import ProgressFn
    from heap_dbt.report import SyncReport
    from heap_dbt.transport import Transport

_FIELDS = {f.name: f for f in dataclasses.fields(SyncOptions)}
_PATHS = {"project_dir", "profiles_dir", "target_path", "state_path"}
_LISTS = {"select", "exclude"}

_P = ParamSpec("_P")
_R = TypeVar("_R")


def make_options(options: SyncOptions | None = None, /, **fields: Any) -> SyncOptions:
    """``SyncOptions`` from keyword arguments, as ``sync`` takes them.

    Paths may be strings, ``select``/``exclude`` a string or a list, and ``env`` defaults to
    the process environment (HEAP_APP_ID, HEAP_BASE_URL, DBT_* work as on the command line).

    Raises:
        ConfigError: an argument that is not an option of ``heap-dbt sync``.
    """
    unknown = sorted(set(fields) - _FIELDS.keys())
    if unknown:
        raise ConfigError(
            f"heap_dbt.sync() has no option {unknown[0]!r}; its options are {', '.join(sorted(_FIELDS))}."
        )
    values: dict[str, Any] = {}
    for name, value in fields.items():
        if name in _PATHS and isinstance(value, str):
            value = Path(value)
        elif name in _LISTS and isinstance(value, str):
            value = [value]
        values[name] = value
    if options is None:
        values.setdefault("env", dict(os.environ))
        return SyncOptions(**values)
    return dataclasses.replace(options, **values)


async def sync_async(
    options: SyncOptions | None = None,
    /,
    *,
    transport: Transport | None = None,
    clock: Clock | None = None,
    progress: ProgressFn | None = None,
    **fields: Any,
) -> SyncReport:
    """Sync the dbt models with ``meta.heap`` to Heap, on the running event loop.

    Concurrent calls from one event loop share each Heap app's event rate limit, and two
    calls for one project and target run one after the other (they would write one sync
    state). Takes the options of ``heap-dbt sync`` (``make_options``); ``transport`` and
    ``clock`` are for tests.
    """
    from heap_dbt.engine import run_sync_async

    opts = make_options(options, **fields)
    return await run_sync_async(opts, transport=transport, clock=clock, progress=progress)


def sync(
    options: SyncOptions | None = None,
    /,
    *,
    transport: Transport | None = None,
    clock: Clock | None = None,
    progress: ProgressFn | None = None,
    **fields: Any,
) -> SyncReport:
    """``sync_async`` on an event loop of its own; call it where no event loop runs."""
    from heap_dbt.engine import run_sync

    return run_sync(make_options(options, **fields), transport=transport, clock=clock, progress=progress)


def run(
    dbt_args: Sequence[str],
    options: SyncOptions | None = None,
    /,
    *,
    transport: Transport | None = None,
    clock: Clock | None = None,
    progress: ProgressFn | None = None,
    **fields: Any,
) -> SyncReport:
    """Run ``dbt <dbt_args>`` in this process, then sync exactly the models it built.

    dbt gets heap-dbt's project dir, profiles dir, target and target path unless
    ``dbt_args`` name their own; the sync reads what that invocation used and wrote. The
    report's ``dbt_success`` is False (and its exit code 1) when dbt failed on some node.

    Raises:
        DbtError: dbt could not start the command.
        ConfigError: the command builds nothing, dbt-core is missing, or a sync option is bad.
    """
    from heap_dbt.dbt_runner import dbt_args as with_paths
    from heap_dbt.dbt_runner import run_dbt
    from heap_dbt.engine import run_sync

    opts = make_options(options, **fields)
    args = with_paths(
        dbt_args,
        project_dir=opts.project_dir,
        profiles_dir=opts.profiles_dir,
        target=opts.target,
        target_path=opts.target_path,
    )
    dbt = run_dbt(args)
    used = dbt.results.args
    # Read the manifest where this invocation wrote it, with the profile and target it used.
    changes: dict[str, Any] = {}
    if used.get("project_dir"):
        changes["project_dir"] = Path(str(used["project_dir"]))
    if used.get("target_path"):
        changes["target_path"] = Path(str(used["target_path"]))
    if used.get("target"):
        changes["target"] = str(used["target"])
    if not (opts.select or opts.exclude or opts.selector):
        # Sync what dbt was asked to build: models outside dbt's selection are not "skipped",
        # and a criterion that matches no node is the usage error it is for `heap-dbt sync`.
        changes["select"] = _words(used.get("select"))
        changes["exclude"] = _words(used.get("exclude"))
        changes["selector"] = str(used["selector"]) if used.get("selector") else None
    opts = dataclasses.replace(opts, **changes)
    return run_sync(
        opts,
        transport=transport,
        clock=clock,
        progress=progress,
        run_results=dbt.results,
        dbt_success=dbt.success,
    )


def _words(value: Any) -> list[str] | None:
    """dbt's ``select``/``exclude`` arg (a list of criteria, or a string in old dbt), as ours."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list | tuple):
        return None
    return [str(v) for v in value if v] or None


async def sync_cloud_async(
    options: SyncOptions | None = None,
    /,
    *,
    cloud: CloudConfig,
    run_id: int | None = None,
    job_id: int | None = None,
    wait: float | None = None,
    transport: Transport | None = None,
    clock: Clock | None = None,
    progress: ProgressFn | None = None,
    poll_interval: float | None = None,
    **fields: Any,
) -> SyncReport:
    """Sync from a dbt Cloud run's artifacts: run ``run_id``, or job ``job_id``'s latest successful run.

    The manifest and the run results come from dbt Cloud (``heap_dbt.dbt_cloud``), never from
    a local target/; the warehouse is the one of heap-dbt's own profile and target. A run that
    failed syncs only the models that succeeded in it, says so in a warning, and makes the
    report's exit code 1 (``dbt_success`` is False). ``wait``: seconds to wait for a run in
    progress; None refuses one. heap_sync_results.json goes to the local target path, as usual.

    Raises:
        DbtCloudError: the run's artifacts could not be fetched (nothing was read or sent).
        ConfigError: as ``sync``.
    """
    from heap_dbt.dbt_cloud import POLL_SECONDS, fetch_artifacts
    from heap_dbt.engine import run_sync_async
    from heap_dbt.manifest import parse_manifest

    opts = make_options(options, **fields)
    artifacts = await fetch_artifacts(
        cloud, run_id=run_id, job_id=job_id, wait=wait, clock=clock,
        poll_interval=POLL_SECONDS if poll_interval is None else poll_interval,
    )  # fmt: skip
    manifest = parse_manifest(
        artifacts.manifest, path=Path(f"dbt Cloud run {artifacts.run_id}") / "manifest.json"
    )
    warnings = []
    if artifacts.failed:
        warnings.append(
            f"dbt Cloud run {artifacts.run_id} failed (status {artifacts.status_name}); heap-dbt synced "
            "only the models that succeeded in it."
        )
    source = {
        "host": cloud.base_url,
        "account_id": cloud.account_id,
        "run_id": artifacts.run_id,
        "job_id": artifacts.job_id,
        "status": artifacts.status,
        "steps": list(artifacts.steps),
    }
    return await run_sync_async(
        opts, transport=transport, clock=clock, progress=progress, run_results=artifacts.run_results,
        dbt_success=not artifacts.failed, manifest=manifest, dbt_cloud=source, warnings=warnings,
    )  # fmt: skip


def _blocking(async_fn: Callable[_P, Coroutine[Any, Any, _R]]) -> Callable[_P, _R]:
    """``async_fn`` on an event loop of its own, with its signature (for type checkers, ``help``
    and ``inspect``), named without its ``_async``."""

    @functools.wraps(async_fn)
    def call(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        return asyncio.run(async_fn(*args, **kwargs))

    call.__name__ = call.__qualname__ = async_fn.__name__.removesuffix("_async")
    call.__doc__ = f"``{async_fn.__name__}`` on an event loop of its own; call it where no event loop runs."
    return call


sync_cloud = _blocking(sync_cloud_async)
