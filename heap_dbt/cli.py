"""The ``heap-dbt`` command line: parse flags, call the engine, print, exit with dbt's codes."""

from __future__ import annotations

import functools
import inspect
import os
import sys
from collections.abc import Callable, Collection
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from heap_dbt import __version__
from heap_dbt.errors import HeapDbtError

if TYPE_CHECKING:
    from heap_dbt.plan import SyncOptions

app = typer.Typer(
    help="Sync dbt models to Heap (users, accounts, events).",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # locals can hold the app_id or tokens
    add_completion=False,
)

ProjectDir = Annotated[
    Path | None, typer.Option(help="dbt project dir (default: DBT_PROJECT_DIR or the current dir).")
]
ProfilesDir = Annotated[
    Path | None,
    typer.Option(
        help="Where profiles.yml is (default: DBT_PROFILES_DIR, dbt's last run, the project dir, ~/.dbt)."
    ),
]
TargetOpt = Annotated[
    str | None, typer.Option(help="dbt target (default: dbt's last run, then the profile's).")
]
TargetPath = Annotated[
    Path | None, typer.Option(help="dbt's target path, where manifest.json is (default: target).")
]
Select = Annotated[
    list[str] | None,
    typer.Option(
        "--select", "-s", help="Models to sync, in dbt's syntax: name, tag:x, path:p, config.k:v, +model+."
    ),
]
Exclude = Annotated[list[str] | None, typer.Option(help="Models to leave out (same syntax as --select).")]
Selector = Annotated[
    str | None,
    typer.Option(help="A selector from selectors.yml, as in dbt (default: the one with default: true)."),
]
Debug = Annotated[bool, typer.Option("--debug", help="Show tracebacks of errors.")]
StatePath = Annotated[
    Path | None,
    typer.Option(
        help="Keep the sync state in this local DuckDB file (for read-only warehouse credentials) "
        "instead of the warehouse (default: HEAP_DBT_STATE_PATH, else the warehouse).",
        show_default=False,
    ),
]
StateSchema = Annotated[str, typer.Option(help="Schema of the sync state and run log.")]


def _fail(exc: BaseException, *, debug: bool) -> None:
    if debug:
        import traceback

        # The plain traceback has no locals (they can hold the app_id); the exit code stays dbt's.
        traceback.print_exception(exc)
    if isinstance(exc, HeapDbtError):
        typer.echo(f"Error: {exc}", err=True)
    elif isinstance(exc, ImportError):
        # An incomplete install (a package removed or broken beside heap-dbt), not heap-dbt's bug.
        typer.echo(
            f"Error: the Python module {exc.name or ''} cannot be imported ({exc}), so this "
            f"installation of heap-dbt is incomplete; reinstall it with its extras, e.g. "
            f'pip install --force-reinstall "heap-dbt[postgres]" (or [snowflake], [dbt]).',
            err=True,
        )
    else:
        typer.echo(
            f"Error: unexpected {type(exc).__name__}: {exc}. This is a bug in heap-dbt; run again "
            "with --debug for the traceback and report it.",
            err=True,
        )
    raise typer.Exit(code=getattr(exc, "exit_code", 2))


def _progress_bar(enabled: bool) -> Any:
    """A rich progress bar on stderr when it is a terminal, else None."""
    forced = os.environ.get("TTY_COMPATIBLE") == "1" or bool(os.environ.get("FORCE_COLOR"))
    if not enabled or not (forced or sys.stderr.isatty()):
        return None  # rich (~25 ms to import) would say no too; it decides the rest
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    if not console.is_terminal:
        return None
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TextColumn("{task.completed:,} rows"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )


AppId = Annotated[
    str | None, typer.Option(help="Heap environment ID (default: HEAP_APP_ID).", show_default=False)
]
Region = Annotated[str, typer.Option(help="Heap data center: us or eu (HEAP_BASE_URL overrides).")]
Concurrency = Annotated[int, typer.Option(min=1, max=256, help="Requests in flight.")]
BatchSize = Annotated[int, typer.Option(min=1, max=1000, help="Records per request (Heap's maximum: 1000).")]
EventsPerMinute = Annotated[
    int, typer.Option(min=0, help="Event rate limit per app_id (Heap: 15,000; 0 = no limit).")
]
EventsPerIdentity = Annotated[
    int, typer.Option(min=0, help="Event rate limit per identity (Heap: 1,000; 0 = no limit).")
]
MaxAttempts = Annotated[int, typer.Option(min=1, help="Attempts per request on 429, 5xx or network errors.")]
Timeout = Annotated[float, typer.Option(min=0.1, help="Seconds to wait for each response.")]
DryRun = Annotated[
    bool,
    typer.Option("--dry-run", help="Read, validate, diff and build payloads; send nothing, write no state."),
]
FullRefresh = Annotated[
    bool,
    typer.Option("--full-refresh", help="Ignore the sync state: resend every row and rebuild the state."),
]
MemoryLimit = Annotated[
    str | None,
    typer.Option(
        help="DuckDB memory limit, e.g. 256MB; kept as given (default: HEAP_DBT_MEMORY_LIMIT, else "
        "64MB, more for wide models and after Out of Memory)."
    ),
]
AllModels = Annotated[
    bool,
    typer.Option(
        "--all",
        help="Sync every configured model, also those the last dbt run failed, skipped or did not run.",
    ),
]
RequireTests = Annotated[
    bool,
    typer.Option(
        "--require-tests", help="Also skip a model when a test of it failed or errored in the last dbt run."
    ),
]
JsonOutput = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]
RateWindow = Annotated[
    float | None,
    typer.Option(
        min=0.001,
        hidden=True,
        help="Seconds in a rate-limit window (default: HEAP_DBT_RATE_WINDOW, else 60).",
    ),
]


CloudJob = Annotated[
    int | None,
    typer.Option(
        min=1,
        help="Sync from the artifacts of this dbt Cloud job's latest successful run.",
        show_default=False,
    ),
]
CloudRun = Annotated[
    int | None,
    typer.Option(
        min=1, help="Sync from the artifacts of this dbt Cloud run (a failed run: what it built).",
        show_default=False,
    ),
]  # fmt: skip
CloudHost = Annotated[
    str | None,
    typer.Option(
        help="dbt Cloud host or URL, e.g. emea.dbt.com (default: DBT_CLOUD_HOST, else cloud.getdbt.com).",
        show_default=False,
    ),
]
CloudAccount = Annotated[
    int | None, typer.Option(help="dbt Cloud account ID (default: DBT_CLOUD_ACCOUNT_ID).", show_default=False)
]
CloudToken = Annotated[
    str | None,
    typer.Option(
        help="dbt Cloud API token (default: DBT_CLOUD_API_TOKEN; prefer it: a flag shows in `ps`).",
        show_default=False,
    ),
]
Wait = Annotated[
    bool,
    typer.Option(
        "--wait",
        help="With --dbt-cloud-run/--dbt-cloud-job: wait for a run in progress to finish "
        "(up to --wait-timeout).",
    ),
]
WaitTimeout = Annotated[
    float,
    typer.Option(min=0, help="Seconds --wait waits for the dbt Cloud run before giving up (exit 2)."),
]
PollInterval = Annotated[
    float | None,
    typer.Option(min=0.001, hidden=True, help="Seconds between --wait's polls of dbt Cloud (default: 10)."),
]


def _cloud_call(
    *,
    job: int | None,
    run: int | None,
    host: str | None,
    account: int | None,
    token: str | None,
    wait: bool,
    wait_timeout: float,
    poll_interval: float | None,
) -> Any:
    """The API call of a sync from dbt Cloud artifacts, or None without --dbt-cloud-job/run."""
    from heap_dbt.errors import ConfigError

    if job is None and run is None:
        if wait:
            raise ConfigError("--wait waits for a dbt Cloud run; give --dbt-cloud-run or --dbt-cloud-job.")
        return None
    from heap_dbt.api import sync_cloud
    from heap_dbt.dbt_cloud import CloudConfig

    cloud = CloudConfig.resolve(os.environ, token=token, account_id=account, host=host)

    def call(opts: Any, **kw: Any) -> Any:
        return sync_cloud(
            opts,
            cloud=cloud,
            run_id=run,
            job_id=job,
            wait=wait_timeout if wait else None,
            poll_interval=poll_interval,
            **kw,
        )

    return call


def _sync_options(*, rate_window: float | None = None, **values: Any) -> Any:
    """The SyncOptions of the flags (names as in SyncOptions), with the process environment."""
    from heap_dbt.api import make_options

    return make_options(**values, env=_with_rate_window(dict(os.environ), rate_window))


def _sync_flags(
    project_dir: ProjectDir = None,
    profiles_dir: ProfilesDir = None,
    target: TargetOpt = None,
    target_path: TargetPath = None,
    select: Select = None,
    exclude: Exclude = None,
    selector: Selector = None,
    app_id: AppId = None,
    region: Region = "us",
    concurrency: Concurrency = 8,
    batch_size: BatchSize = 1000,
    events_per_minute: EventsPerMinute = 15_000,
    events_per_identity_per_minute: EventsPerIdentity = 1_000,
    max_attempts: MaxAttempts = 6,
    timeout: Timeout = 30.0,
    dry_run: DryRun = False,
    full_refresh: FullRefresh = False,
    state_path: StatePath = None,
    state_schema: StateSchema = "heap_dbt",
    memory_limit: MemoryLimit = None,
    all_models: AllModels = False,
    require_tests: RequireTests = False,
    rate_window: RateWindow = None,
) -> None:
    """The flags of the sync options, in their --help order: only this signature counts
    (``_with_sync_flags`` gives these flags, or some of them, to the commands)."""


# The parameter of a command that stands for the flags of ``_sync_flags``; it gets their SyncOptions.
SyncFlags = Annotated["SyncOptions", "the flags of _sync_flags"]


def _with_sync_flags(
    *, only: Collection[str] | None = None, omit: Collection[str] = ()
) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Give a command the flags of ``_sync_flags`` (``only`` those, but not ``omit``), where its
    ``SyncFlags`` parameter is, and call it with their SyncOptions in that parameter.

    typer reads a command's flags from its signature, so the signature becomes the command's
    own with these flags in place of that parameter: --help lists them in the order written.
    """
    shared = inspect.signature(_sync_flags, eval_str=True).parameters.values()
    flags = [p for p in shared if (only is None or p.name in only) and p.name not in omit]

    def decorate(command: Callable[..., None]) -> Callable[..., None]:
        own = inspect.signature(command, eval_str=True)
        (slot,) = (p for p in own.parameters.values() if p.annotation is SyncFlags)
        params: list[inspect.Parameter] = []
        for p in own.parameters.values():
            params += [f.replace(kind=p.kind) for f in flags] if p is slot else [p]

        @functools.wraps(command)
        def call(**values: Any) -> None:
            options = _sync_options(**{f.name: values.pop(f.name) for f in flags})
            command(**values, **{slot.name: options})

        call.__signature__ = own.replace(parameters=params)  # type: ignore[attr-defined]
        # typer reads the annotations too; the slot's names SyncOptions, which is imported lazily.
        call.__annotations__ = {p.name: p.annotation for p in params}
        return call

    return decorate


def _sync_and_exit(call: Any, options: Any, *, json_output: bool, debug: bool) -> None:
    """Run ``call(options, progress=...)`` (an API function), print its report, exit with its code."""
    # What heap-dbt creates holds row keys (the results file, a --state-path file and the
    # .wal DuckDB keeps beside it while it writes): readable by the owner only.
    os.umask(0o077)
    bar = _progress_bar(not json_output)
    tasks: dict[str, Any] = {}

    def progress(label: str, rows: int, total: int | None) -> None:
        if label not in tasks:
            tasks[label] = bar.add_task(label, total=total)
        bar.advance(tasks[label], rows)

    try:
        if bar is not None:
            with bar:
                report = call(options, progress=progress)
        else:
            report = call(options)
    except Exception as exc:  # one place turns every error into one sentence
        _fail(exc, debug=debug)
        return
    for warning in report.warnings:
        typer.echo(f"Warning: {warning}", err=True)
    if json_output:
        sys.stdout.buffer.write(report.to_json() + b"\n")
    else:
        report.render(sys.stdout)
    raise typer.Exit(code=report.exit_code)


def _with_rate_window(env: dict[str, str], rate_window: float | None) -> dict[str, str]:
    """The hidden ``--rate-window`` (for tests and benchmarks against an emulator whose clock runs
    faster) reaches the engine as HEAP_DBT_RATE_WINDOW, which it overrides."""
    if rate_window is not None:
        env["HEAP_DBT_RATE_WINDOW"] = repr(rate_window)
    return env


@app.command()
@_with_sync_flags()
def sync(
    *,
    options: SyncFlags,
    json_output: JsonOutput = False,
    debug: Debug = False,
    dbt_cloud_job: CloudJob = None,
    dbt_cloud_run: CloudRun = None,
    dbt_cloud_host: CloudHost = None,
    dbt_cloud_account_id: CloudAccount = None,
    dbt_cloud_token: CloudToken = None,
    wait: Wait = False,
    wait_timeout: WaitTimeout = 3600.0,
    dbt_cloud_poll_interval: PollInterval = None,
) -> None:
    """Send the rows of the models with `meta.heap` that the last dbt run built to Heap.

    With --dbt-cloud-job/--dbt-cloud-run, the manifest and run results come from that dbt Cloud run.
    """
    from heap_dbt.api import sync as api_sync

    try:
        call = _cloud_call(
            job=dbt_cloud_job, run=dbt_cloud_run, host=dbt_cloud_host, account=dbt_cloud_account_id,
            token=dbt_cloud_token, wait=wait, wait_timeout=wait_timeout,
            poll_interval=dbt_cloud_poll_interval,
        ) or api_sync  # fmt: skip
    except Exception as exc:  # one place turns every error into one sentence
        _fail(exc, debug=debug)
        return
    _sync_and_exit(call, options, json_output=json_output, debug=debug)


@app.command(
    context_settings={"allow_interspersed_args": False, "ignore_unknown_options": True},
    no_args_is_help=True,
)
@_with_sync_flags()
def run(
    dbt_args: Annotated[
        list[str], typer.Argument(help="The dbt command and its arguments, e.g. build --select tag:heap.")
    ],
    *,
    options: SyncFlags,
    json_output: JsonOutput = False,
    debug: Debug = False,
) -> None:
    """Run dbt (e.g. `heap-dbt run build -s tag:heap`), then sync the models it built.

    heap-dbt's options go before the dbt command; its project, profiles and target go to dbt too.

    Exit 0 when dbt and the sync succeeded, 1 when dbt failed on a model or rows failed, 2 on bad input.
    """
    from heap_dbt.api import run as api_run

    def call(opts: Any, **kw: Any) -> Any:
        return api_run(dbt_args, opts, **kw)

    _sync_and_exit(call, options, json_output=json_output, debug=debug)


# The flags that choose the models, for the commands that read only the manifest.
_SELECTION = ("project_dir", "target_path", "select", "exclude", "selector")


@app.command("ls")
@_with_sync_flags(only=_SELECTION)
def list_syncs(
    *,
    options: SyncFlags,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")] = False,
    debug: Debug = False,
) -> None:
    """List the syncs declared in the manifest (model, object, key, properties)."""
    from heap_dbt.plan import plan_specs

    try:
        _, _, specs, problems = plan_specs(options)
    except Exception as exc:  # one place turns every error into one sentence
        _fail(exc, debug=debug)
        return
    from heap_dbt.report import render_specs, specs_json

    if json_output:
        sys.stdout.buffer.write(specs_json(specs, problems) + b"\n")
    else:
        render_specs(specs, sys.stdout)
        for p in problems:
            typer.echo(f"Problem: {p}", err=True)
    raise typer.Exit(code=2 if problems else 0)


@app.command("exposures")
@_with_sync_flags(only=_SELECTION)
def write_exposures(
    *,
    options: SyncFlags,
    output: Annotated[
        Path | None,
        typer.Option(help="The YAML file to write (default: heap_exposures.yml in the first model path)."),
    ] = None,
    owner_name: Annotated[
        str | None, typer.Option(help="Owner of the syncs whose model sets no config.meta.heap_owner.")
    ] = None,
    owner_email: Annotated[str | None, typer.Option(help="Owner's email, likewise.")] = None,
    check: Annotated[
        bool, typer.Option("--check", help="Write nothing; exit 1 if the file is out of date (for CI).")
    ] = False,
    debug: Debug = False,
) -> None:
    """Write a dbt exposure per sync (heap_<model>), for dbt docs and `dbt build -s +exposure:...`."""
    from heap_dbt import exposures as ex
    from heap_dbt.errors import ConfigError
    from heap_dbt.plan import plan_specs

    try:
        paths, manifest, specs, problems = plan_specs(options)
        if problems:
            raise ConfigError("Fix config.meta.heap before writing exposures:", problems=problems)
        items = ex.exposures(specs, manifest, owner=ex.Owner(name=owner_name, email=owner_email))
        path = output or ex.default_output(paths.project_dir)
        text = ex.render(items)
        try:
            old: str | None = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            old = None
        if check:
            diff = ex.differences(old, items, text)
            if diff is not None:
                typer.echo(f"{path} is out of date: {diff}.", err=True)
                typer.echo("Run `heap-dbt exposures` (with the same flags) and commit the file.", err=True)
                raise typer.Exit(code=1)
            typer.echo(f"{path} is up to date ({len(items)} exposures).")
            return
        if old != text:
            ex.write(path, text)
    except typer.Exit:
        raise
    except Exception as exc:  # one place turns every error into one sentence
        _fail(exc, debug=debug)
        return
    typer.echo(f"{'Wrote' if old != text else 'Unchanged:'} {len(items)} exposures in {path}.")


@app.command()
@_with_sync_flags(only=("project_dir", "profiles_dir", "target", "target_path", "state_path", "state_schema"))
def history(
    *,
    options: SyncFlags,
    limit: Annotated[int, typer.Option(min=1, help="How many runs to show.")] = 20,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")] = False,
    debug: Debug = False,
) -> None:
    """Show the last sync runs from the run log: when, what, and the counts."""
    from heap_dbt.engine import read_history

    try:
        runs = read_history(options, limit=limit)
    except Exception as exc:  # one place turns every error into one sentence
        _fail(exc, debug=debug)
        return
    from heap_dbt.report import history_json, render_history

    if json_output:
        sys.stdout.buffer.write(history_json(runs) + b"\n")
    else:
        render_history(runs, sys.stdout)


@app.command()
@_with_sync_flags(omit=("target_path", "dry_run", "full_refresh", "all_models"))
def serve(
    dbt_cloud_job: Annotated[
        list[str],
        typer.Option(
            help="A dbt Cloud job ID whose successful runs to sync after (repeat for more).",
            show_default=False,
        ),
    ],
    host: Annotated[str, typer.Option(help="Address to listen on (put a TLS proxy in front).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on (0: any free port).")] = 8580,
    grace_seconds: Annotated[
        float, typer.Option(min=0, help="On SIGTERM, how long the sync in flight may take to finish.")
    ] = 30.0,
    dbt_cloud_host: CloudHost = None,
    dbt_cloud_account_id: CloudAccount = None,
    dbt_cloud_token: CloudToken = None,
    *,
    options: SyncFlags,
    debug: Debug = False,
) -> None:
    """Serve dbt Cloud's job.run.completed webhook: sync after each successful run of the jobs.

    The webhook secret comes from DBT_CLOUD_WEBHOOK_SECRET. GET / is a status page, GET /healthz
    answers 200 once the server is ready. SIGTERM stops it (exit 0).
    """
    from heap_dbt.dbt_cloud import CloudConfig
    from heap_dbt.server import run_server
    from heap_dbt.webhooks import secret_from_env

    os.umask(0o077)  # heap_sync_results.json and a --state-path file hold row keys
    try:
        secret_from_env(options.env)  # refuse to start without it, before anything else
        cloud = CloudConfig.resolve(
            options.env, token=dbt_cloud_token, account_id=dbt_cloud_account_id, host=dbt_cloud_host
        )
        run_server(
            options, cloud=cloud, jobs=dbt_cloud_job, host=host, port=port, grace_seconds=grace_seconds
        )
    except Exception as exc:  # one place turns every error into one sentence
        _fail(exc, debug=debug)


@app.command()
def version() -> None:
    """Print heap-dbt's version."""
    typer.echo(__version__)


def wait_seconds(argv: list[str]) -> list[str]:
    """``heap-dbt sync ... --wait SECONDS`` (or ``--wait=SECONDS``) as ``--wait --wait-timeout SECONDS``.

    The issue's ``--wait [SECONDS]`` is an option with an optional value, which typer cannot
    declare; a bare ``--wait`` keeps its default timeout. Only ``sync`` has --wait.
    """
    commands = [a for a in argv if not a.startswith("-")]
    if not commands or commands[0] != "sync":
        return argv
    out: list[str] = []
    items = iter(enumerate(argv))
    for i, arg in items:
        if arg == "--":
            out += argv[i:]
            break
        if arg.startswith("--wait="):
            out += ["--wait", "--wait-timeout", arg.removeprefix("--wait=")]
        elif arg == "--wait" and i + 1 < len(argv) and _is_number(argv[i + 1]):
            out += ["--wait", "--wait-timeout", argv[i + 1]]
            next(items)
        else:
            out.append(arg)
    return out


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def main() -> None:
    app(args=wait_seconds(sys.argv[1:]))
