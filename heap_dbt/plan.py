"""From the manifest and each selected model's meta to checked syncs, each with its record query.

Reads the manifest and the warehouse's column lists; sends nothing. Every problem is
collected, so that a user sees all of them at once (``ConfigError``, exit 2).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from heap_dbt import heap, sql
from heap_dbt.config import SyncSpec, parse_specs, resolve_columns
from heap_dbt.errors import ConfigError, MissingRelationError
from heap_dbt.identity import unique_names
from heap_dbt.manifest import (
    Manifest,
    ModelNode,
    RunResults,
    load_manifest,
    load_run_results,
)
from heap_dbt.profiles import ProjectPaths, resolve_project
from heap_dbt.project_files import misplaced_in_properties, newer_than_manifest
from heap_dbt.report import SkippedModel
from heap_dbt.selectors import select
from heap_dbt.urls import check_url
from heap_dbt.warehouse import Column, Dialect, WarehouseReader

OBJECT_ORDER = {"user": 0, "account": 1, "event": 2}


@dataclass(frozen=True, kw_only=True)
class SyncOptions:
    """Everything ``heap-dbt sync`` takes; the CLI fills it from flags and the environment."""

    project_dir: Path | None = None
    profiles_dir: Path | None = None
    target: str | None = None
    target_path: Path | None = None
    select: list[str] | None = None
    exclude: list[str] | None = None
    selector: str | None = None
    """A selector from selectors.yml (dbt's --selector); with none of the three, its default: true one."""
    app_id: str | None = None
    region: str = "us"
    base_url: str | None = None
    concurrency: int = 8
    batch_size: int = heap.MAX_ITEMS_PER_REQUEST
    events_per_minute: int = 15_000
    events_per_identity_per_minute: int = 1_000
    max_attempts: int = 6
    timeout: float = 30.0
    dry_run: bool = False
    full_refresh: bool = False
    state_path: Path | None = None
    """Keep the sync state in this local DuckDB file instead of the warehouse."""
    state_schema: str = "heap_dbt"
    memory_limit: str | None = None
    """DuckDB's memory limit, kept as given; None: HEAP_DBT_MEMORY_LIMIT, else sized per sync."""
    arrow_batch_rows: int = 10_000
    """Rows per Arrow batch read from the warehouse: the unit of reading, rejecting and framing."""
    all_models: bool = False
    """Sync every configured model, whatever the last dbt run built (``--all``)."""
    require_tests: bool = False
    """Also skip a model when a test of it failed or errored in the last dbt run."""
    env: Mapping[str, str] = field(default_factory=dict)


def _selected(
    options: SyncOptions, *, manifest: Manifest | None = None
) -> tuple[ProjectPaths, Manifest, list[ModelNode], list[str]]:
    """The paths, the manifest (the one given, else target/manifest.json), its selected
    models with a ``heap`` block, in a stable order, and the selected models' heap blocks in
    places heap-dbt does not read (problems)."""
    paths = resolve_project(project_dir=options.project_dir, target_path=options.target_path, env=options.env)
    local = manifest is None
    if manifest is None:
        manifest = load_manifest(paths.target_path / "manifest.json")
    selection = select(manifest, select=options.select, exclude=options.exclude, selector=options.selector)
    if selection.unmatched:
        raise ConfigError(
            f"Nothing in the manifest at {manifest.path} matches "
            f"{'these criteria' if len(selection.unmatched) > 1 else 'this criterion'}; check the "
            f"spelling, or run `dbt parse` if the model is new. {_declaring(manifest)}",
            problems=list(selection.unmatched),
        )
    chosen = selection.models
    models = sorted((m for m in manifest.heap_models() if m.unique_id in chosen), key=lambda m: m.unique_id)
    selected = sorted((manifest.models[uid] for uid in chosen), key=lambda m: m.unique_id)
    places = [(m, where) for m in selected for where in m.misplaced]
    if local:  # dbt Cloud's artifacts come without the project's files
        places += misplaced_in_properties(paths.project_dir, selected)
    problems = [f"model {m.name}, {where}: {_MISPLACED}" for m, where in places]
    return paths, manifest, models, problems


_MISPLACED = (
    "heap-dbt does not read a heap block here, so this model syncs nothing; move the block to "
    "`config.meta.heap` (in the model's properties YAML: `config: {meta: {heap: ...}}` or "
    "`meta: {heap: ...}`; in its SQL: `{{ config(meta={'heap': ...}) }}`)."
)


def _declaring(manifest: Manifest) -> str:
    """The models that declare a sync, for a message about a selection that found none."""
    names = sorted({m.name for m in manifest.heap_models()})
    if not names:
        return "No model of the manifest declares `config.meta.heap`."
    return f"The models that declare a Heap sync: {', '.join(names)}."


def nothing_selected(options: SyncOptions, manifest: Manifest) -> str:
    """Why a selection that matched nodes has nothing to sync: none of them declares a sync."""
    given = [f"--selector {options.selector}"] if options.selector else []
    if options.select:
        given.append(f"--select {' '.join(options.select)}")
    if options.exclude:
        given.append(f"--exclude {' '.join(options.exclude)}")
    which = f"the selection ({', '.join(given)})" if given else "the selection"
    return f"No model in {which} declares `config.meta.heap`, so nothing is synced. {_declaring(manifest)}"


def plan_specs(options: SyncOptions) -> tuple[ProjectPaths, Manifest, list[SyncSpec], list[str]]:
    """Read the manifest and the meta of the selected models; no warehouse access.

    Returns the paths, the manifest, the specs that parsed, and every problem found.
    """
    paths, manifest, models, problems = _selected(options)
    specs, _ = unique_names(parse_specs(models, problems), problems)
    return paths, manifest, specs, problems


FAILED = "failed in the last dbt run"
NOT_BUILT = "not built in the last dbt run"
_NOT_BUILT_DETAIL = {"skipped": " (dbt skipped it)", "partial success": " (only partly built)"}
BUILT = frozenset({"success", "reused", "no-op"})
"""Model statuses whose table is current: built by the run, or reused unchanged by it
(``reused`` in state-aware runs, ``no-op`` where dbt Fusion found nothing to do)."""
TEST_FAILED = {"fail": "failed", "error": "errored"}


@dataclass(frozen=True)
class Gate:
    """Which selected models to sync after the last dbt run, which to skip and why."""

    kept: list[ModelNode]
    skipped: list[SkippedModel]
    warnings: list[str]


def gate_models(
    models: list[ModelNode],
    manifest: Manifest,
    results: RunResults | None,
    *,
    results_path: Path,
    all_models: bool = False,
    require_tests: bool = False,
) -> Gate:
    """Keep the models the last ``dbt run``/``dbt build`` built; skip the others, with a reason.

    Without run results, or with results of a command that builds nothing (``docs
    generate``, ``compile``, ``ls``), every model is kept. Results from another invocation
    than the manifest's (``dbt ls``, ``compile`` and ``parse`` rewrite the manifest) still
    say what the run built: the gate then reads the results' own node list, with a warning.
    """
    warnings: list[str] = []
    if results is None:
        return Gate(list(models), [], warnings)
    if not results.builds:
        command = "docs generate" if results.command == "generate" else results.command
        warnings.append(
            f"{results_path} is from `dbt {command}`, which builds no model, so it is not "
            "the results of a run; heap-dbt syncs every configured model."
        )
        return Gate(list(models), [], warnings)
    if all_models:
        for m in models:
            status = results.statuses.get(m.unique_id)
            if status is not None and status not in BUILT:
                warnings.append(
                    f"dbt reported {m.name} as {status} in its last run and --all syncs it anyway; "
                    f"its table may be stale (rebuild it with `dbt run -s +{m.name}`)."
                )
        return Gate(list(models), [], warnings)
    if results.invocation_id != manifest.invocation_id:
        warnings.append(
            f"{results_path} is from another dbt invocation than {manifest.path} (`dbt ls`, `compile` "
            "and `parse` rewrite the manifest), so heap-dbt takes only the configuration from the "
            "manifest and syncs the models that the run results report as built."
        )
    kept: list[ModelNode] = []
    skipped: list[SkippedModel] = []
    untested: list[str] = []
    for m in models:
        status = results.statuses.get(m.unique_id)
        if status not in BUILT:
            reason = FAILED if status == "error" else NOT_BUILT + _NOT_BUILT_DETAIL.get(status or "", "")
            skipped.append(SkippedModel(m.name, m.unique_id, reason))
            continue
        if require_tests:
            tests = [t for t in manifest.tests.values() if m.unique_id in t.depends_on]
            if tests and not any(t.unique_id in results.statuses for t in tests):
                untested.append(m.name)
            failing = sorted(
                (t.name, TEST_FAILED[results.statuses[t.unique_id]])
                for t in tests
                if results.statuses.get(t.unique_id) in TEST_FAILED
            )
            if failing:
                named = ", ".join(f"{name} {how}" for name, how in failing)
                reason = f"test{'s' if len(failing) > 1 else ''} {named} in the last dbt run"
                skipped.append(SkippedModel(m.name, m.unique_id, reason))
                continue
        kept.append(m)
    if untested:
        warnings.append(
            f"--require-tests: the last dbt run ran none of the tests of {', '.join(untested)}, so "
            "nothing checked them; run `dbt build` to build and test them together."
        )
    return Gate(kept, skipped, warnings)


@dataclass
class Planned:
    """What ``plan_syncs`` found: the specs to sync, the models skipped, and every problem."""

    paths: ProjectPaths
    manifest: Manifest
    run_results: RunResults | None
    specs: list[SyncSpec]
    problems: list[str]
    skipped: list[SkippedModel]
    warnings: list[str]


def plan_syncs(
    options: SyncOptions, *, run_results: RunResults | None = None, manifest: Manifest | None = None
) -> Planned:
    """Like ``plan_specs``, gated by the last dbt run (``gate_models``).

    ``run_results``: the results of the invocation to gate on (``heap-dbt run`` passes
    the one it ran); by default, ``run_results.json`` beside the manifest. ``manifest``:
    artifacts from elsewhere (a dbt Cloud run), used with ``run_results`` instead of
    anything in the local target path.
    """
    local = manifest is None
    paths, manifest, models, problems = _selected(options, manifest=manifest)
    results_path = (paths.target_path if local else manifest.path.parent) / "run_results.json"
    if run_results is None and local:
        run_results = load_run_results(results_path)
    stale = newer_than_manifest(paths, manifest.path) if local else None
    gate = gate_models(
        models,
        manifest,
        run_results,
        results_path=results_path,
        all_models=options.all_models,
        require_tests=options.require_tests,
    )
    specs, versions = unique_names(parse_specs(gate.kept, problems), problems)
    warnings = list(gate.warnings)
    if stale is not None:
        warnings.insert(
            0,
            f"{stale} is newer than {manifest.path}, so the manifest may not hold its changes; run "
            "`dbt parse` (or build) first.",
        )
    if not models and not problems:
        warnings.append(nothing_selected(options, manifest))
    return Planned(paths, manifest, run_results, specs, problems, gate.skipped + versions, warnings)


def resolve_app_id(spec: SyncSpec, options: SyncOptions) -> str | None:
    return spec.app_id or options.app_id or options.env.get("HEAP_APP_ID") or None


def base_url(options: SyncOptions) -> str:
    """Where to send: the base_url option, HEAP_BASE_URL, else the region's Heap; checked by
    ``check_url`` (https, or plain http to loopback only)."""
    if options.base_url:
        return check_url(options.base_url, what="The base URL")
    if options.env.get("HEAP_BASE_URL"):
        return check_url(options.env["HEAP_BASE_URL"], what="HEAP_BASE_URL")
    if options.region.lower() == "eu":
        return heap.EU_BASE_URL
    if options.region.lower() != "us":
        raise ConfigError(f"Unknown --region {options.region!r}; use us or eu.")
    return heap.US_BASE_URL


@dataclass
class Prepared:
    spec: SyncSpec
    app_id: str
    query: sql.RecordQuery
    dialect: Dialect
    columns: list[Column] = field(default_factory=list)
    key_seed: str = ""
    definition_seed: str = ""
    """The seeds of the sync's identity (``heap_dbt.identity``); the sync's name until resolved."""

    def __post_init__(self) -> None:
        self.key_seed = self.key_seed or self.spec.name
        self.definition_seed = self.definition_seed or self.spec.name

    def identified(self, *, key_seed: str, definition_seed: str) -> Prepared:
        """This sync under the seeds of its identity in the state, its query built with them."""
        if (key_seed, definition_seed) == (self.key_seed, self.definition_seed):
            return self
        query = sql.record_query(
            self.spec, self.columns, key_seed=key_seed, definition_seed=definition_seed, dialect=self.dialect
        )
        return replace(self, query=query, key_seed=key_seed, definition_seed=definition_seed)

    def build(
        self, *, previous: str | None, duplicates_table: str | None, identities: bool
    ) -> sql.RecordQuery:
        """The record query: only rows that differ from ``previous`` when given, with the
        duplicate-key join only when the probe found a repeated key, and event identities
        only for a rate limiter that counts them."""
        return sql.record_query(
            self.spec,
            self.columns,
            key_seed=self.key_seed,
            definition_seed=self.definition_seed,
            dialect=self.dialect,
            previous=previous,
            duplicates=duplicates_table is not None,
            duplicates_table=duplicates_table,
            identities=identities,
        )


def prepare(
    specs: list[SyncSpec], reader: WarehouseReader, options: SyncOptions, problems: list[str]
) -> list[Prepared]:
    """Check every spec against its table and build its query; collect all problems."""
    prepared: list[Prepared] = []
    for spec in specs:
        where = f"model {spec.model.name}, {spec.meta_path}"
        app_id = resolve_app_id(spec, options)
        if app_id is None and not options.dry_run:
            problems.append(
                f"{where}: no Heap app_id; pass --app-id, set HEAP_APP_ID, or set app_id in the block."
            )
        assert spec.model.relation_name is not None  # parse_specs skips ephemeral models
        try:
            columns = reader.columns(spec.model.relation_name)
        except MissingRelationError:
            problems.append(
                f"{where}: the table {spec.model.relation_name} does not exist; run `dbt run` "
                f"(or `dbt build`) for {spec.model.name} first."
            )
            continue
        found = len(problems)
        resolved = resolve_columns(spec, [c.name for c in columns], problems)
        types = {c.name: c.type for c in columns}
        if resolved.timestamp and resolved.timestamp in types:
            kind = types[resolved.timestamp].kind
            if kind not in ("timestamp", "timestamptz", "date"):
                problems.append(
                    f"{where}.timestamp: column {resolved.timestamp!r} is {types[resolved.timestamp].sql}; "
                    "cast it to a TIMESTAMP in the model."
                )
        used = dict.fromkeys([resolved.key, *resolved.reserved_columns(), *resolved.properties.values()])
        for name in used:
            if name in types and types[name].kind == "unsupported":
                problems.append(
                    f"{where}: column {name!r} is {types[name].sql}, which heap-dbt cannot convert; "
                    "cast it in the model (to text, a number or a timestamp)."
                )
        if len(problems) > found:
            continue
        problems += sql.name_collisions(resolved, types)
        if len(problems) > found:
            continue
        query = sql.record_query(
            resolved, columns, key_seed=resolved.name, definition_seed=resolved.name, dialect=reader.dialect
        )
        prepared.append(Prepared(resolved, app_id or heap.NO_APP_ID, query, reader.dialect, columns))
    prepared.sort(key=lambda p: (OBJECT_ORDER[p.spec.object], p.spec.model.name, p.spec.meta_path))
    return prepared
