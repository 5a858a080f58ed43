"""From the manifest and each selected model's meta to checked syncs, each with its record query.

Reads the manifest and the warehouse's column lists; sends nothing. Every problem is
collected, so that a user sees all of them at once (``ConfigError``, exit 2).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from heap_dbt import heap, sql
from heap_dbt.config import SyncSpec, parse_specs, resolve_columns
from heap_dbt.errors import ConfigError, MissingRelationError
from heap_dbt.manifest import Manifest, load_manifest, select_models
from heap_dbt.profiles import ProjectPaths, resolve_project
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
    env: Mapping[str, str] = field(default_factory=dict)


def plan_specs(options: SyncOptions) -> tuple[ProjectPaths, Manifest, list[SyncSpec], list[str]]:
    """Read the manifest and the meta of the selected models; no warehouse access.

    Returns the paths, the manifest, the specs that parsed, and every problem found.
    """
    paths = resolve_project(project_dir=options.project_dir, target_path=options.target_path, env=options.env)
    manifest = load_manifest(paths.target_path / "manifest.json")
    chosen = select_models(manifest, select=options.select, exclude=options.exclude)
    models = sorted((m for m in manifest.heap_models() if m.unique_id in chosen), key=lambda m: m.unique_id)
    problems: list[str] = []
    specs = parse_specs(models, problems)
    return paths, manifest, specs, problems


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

    def build(
        self, *, previous: str | None, duplicates_table: str | None, identities: bool
    ) -> sql.RecordQuery:
        """The record query: only rows that differ from ``previous`` when given, with the
        duplicate-key join only when the probe found a repeated key, and event identities
        only for a rate limiter that counts them."""
        return sql.record_query(
            self.spec,
            self.columns,
            model_label=self.spec.label,
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
        query = sql.record_query(resolved, columns, model_label=spec.label, dialect=reader.dialect)
        prepared.append(Prepared(resolved, app_id or heap.NO_APP_ID, query, reader.dialect, columns))
    prepared.sort(key=lambda p: (OBJECT_ORDER[p.spec.object], p.spec.model.name, p.spec.meta_path))
    return prepared
