"""Read dbt's manifest.json and run_results.json into the few fields heap-dbt needs.

Only the fields named here are decoded (msgspec ignores the rest), so a large manifest
reads in a fraction of a second and fields added by newer dbt versions do no harm.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from heap_dbt.errors import ManifestError

SUPPORTED_MANIFEST_VERSIONS = frozenset({"v10", "v11", "v12"})


class _NodeConfig(msgspec.Struct):
    materialized: str | None = None
    enabled: bool = True
    meta: dict[str, Any] = msgspec.field(default_factory=dict)
    tags: list[str] = msgspec.field(default_factory=list)


class _TestMetadata(msgspec.Struct):
    name: str = ""


class _DependsOn(msgspec.Struct):
    nodes: list[str] = msgspec.field(default_factory=list)


class _Node(msgspec.Struct):
    """A node of any resource type (model, seed, test, source, exposure, ...)."""

    unique_id: str
    resource_type: str
    name: str
    package_name: str = ""
    relation_name: str | None = None
    database: str | None = None
    schema: str | None = None
    alias: str | None = None
    # Raw, so that only models pay for decoding it, and `config.<key>:` selectors can read any key.
    config: msgspec.Raw = msgspec.field(default_factory=lambda: msgspec.Raw(b"{}"))
    meta: dict[str, Any] = msgspec.field(default_factory=dict)
    tags: list[str] = msgspec.field(default_factory=list)
    fqn: list[str] = msgspec.field(default_factory=list)
    # Raw: only read for a heap block in a column's meta, where heap-dbt does not look.
    columns: msgspec.Raw = msgspec.field(default_factory=lambda: msgspec.Raw(b"{}"))
    original_file_path: str = ""
    patch_path: str | None = None
    version: str | int | float | None = None
    latest_version: str | int | float | None = None
    access: str | None = None
    source_name: str | None = None
    test_metadata: _TestMetadata | None = None
    depends_on: _DependsOn = msgspec.field(default_factory=_DependsOn)


class _Metadata(msgspec.Struct):
    dbt_schema_version: str = ""
    dbt_version: str = ""
    invocation_id: str | None = None
    adapter_type: str | None = None
    project_name: str | None = None


class _Manifest(msgspec.Struct):
    metadata: _Metadata
    nodes: dict[str, _Node] = msgspec.field(default_factory=dict)
    sources: dict[str, _Node] = msgspec.field(default_factory=dict)
    exposures: dict[str, _Node] = msgspec.field(default_factory=dict)
    metrics: dict[str, _Node] = msgspec.field(default_factory=dict)
    semantic_models: dict[str, _Node] = msgspec.field(default_factory=dict)
    saved_queries: dict[str, _Node] = msgspec.field(default_factory=dict)
    unit_tests: dict[str, _Node] = msgspec.field(default_factory=dict)
    functions: dict[str, _Node] = msgspec.field(default_factory=dict)
    selectors: dict[str, Any] = msgspec.field(default_factory=dict)
    parent_map: dict[str, list[str]] = msgspec.field(default_factory=dict)
    child_map: dict[str, list[str]] = msgspec.field(default_factory=dict)


class _RunResult(msgspec.Struct):
    unique_id: str
    status: str


class _RunResults(msgspec.Struct):
    metadata: _Metadata
    results: list[_RunResult] = msgspec.field(default_factory=list)
    args: dict[str, Any] = msgspec.field(default_factory=dict)


@dataclass(frozen=True)
class ModelNode:
    """One dbt model, as heap-dbt sees it."""

    unique_id: str
    name: str
    relation_name: str | None
    materialized: str | None
    meta: dict[str, Any]
    tags: tuple[str, ...]
    fqn: tuple[str, ...]
    original_file_path: str
    package_name: str = ""
    version: str | int | float | None = None
    latest_version: str | int | float | None = None
    patch_path: str | None = None
    misplaced: tuple[str, ...] = ()
    """Where the manifest holds a heap block that heap-dbt does not read (``config.heap``,
    ``config.meta.Heap``, ``columns.id.meta.heap``): a configuration error, not a sync."""


class GraphNode(msgspec.Struct, frozen=True):
    """Any node of dbt's graph (model, seed, test, source, exposure, ...), with what selectors read.

    A Struct, not a dataclass: a manifest has tens of thousands of nodes, and a Struct is
    built several times faster.
    """

    unique_id: str
    resource_type: str
    name: str
    package_name: str
    fqn: tuple[str, ...]
    tags: tuple[str, ...]
    original_file_path: str
    patch_path: str | None
    raw_config: bytes
    version: str | int | float | None = None
    latest_version: str | int | float | None = None
    access: str | None = None
    source_name: str | None = None
    test_name: str | None = None

    def config(self) -> dict[str, Any]:
        """The node's whole config, decoded on demand (only ``config.<key>:`` selectors need it)."""
        value = _ANY.decode(self.raw_config)
        return value if isinstance(value, dict) else {}


@dataclass(frozen=True)
class DataTest:
    """A data test (generic or singular) and the nodes it depends on."""

    unique_id: str
    name: str
    depends_on: tuple[str, ...]


@dataclass(frozen=True)
class Manifest:
    """The models of a manifest, with lineage for selection and the tests that check them."""

    path: Path
    adapter_type: str | None
    invocation_id: str | None
    models: dict[str, ModelNode]
    parent_map: dict[str, list[str]]
    child_map: dict[str, list[str]]
    project_name: str | None = None
    nodes: dict[str, GraphNode] = field(default_factory=dict)
    """Every enabled node of the graph, models included, for selection."""
    selectors: dict[str, Any] = field(default_factory=dict)
    """selectors.yml as dbt wrote it into the manifest: name -> {definition, default, ...}."""
    tests: dict[str, DataTest] = field(default_factory=dict)

    def heap_models(self) -> list[ModelNode]:
        """Models whose meta declares a ``heap`` block, in a stable order."""
        return [m for m in self.models.values() if "heap" in m.meta]


RUN_COMMANDS = frozenset({"run", "build"})
"""The dbt commands whose run_results.json says which models were built."""


@dataclass(frozen=True)
class RunResults:
    """What the last dbt invocation ran, and with which arguments."""

    invocation_id: str | None
    args: dict[str, Any]
    statuses: dict[str, str]

    @property
    def command(self) -> str | None:
        """The dbt command that wrote these results, if recorded: ``args.which`` (dbt Core), else
        the command that ``args.command`` or ``args.invocation_command`` names (dbt Fusion, whose
        args hold only the command: ``build``, or ``dbt build -s x``)."""
        which = self.args.get("which")
        if isinstance(which, str) and which:
            return which
        for key in ("command", "invocation_command"):
            text = self.args.get(key)
            if isinstance(text, str):
                words = [w for w in text.split() if not w.startswith("-")]
                if words and words[0] in ("dbt", "dbtf"):
                    words = words[1:]
                if words:
                    return words[0]
        return None

    @property
    def builds(self) -> bool:
        """True for the results of ``dbt run`` or ``dbt build`` (or of a dbt too old to say)."""
        return self.command is None or self.command in RUN_COMMANDS


# Every typed decode goes through a Decoder built here, at import: msgspec builds a type's
# decoding info lazily on its first typed decode, and two threads doing that first decode at
# once (syncs planned concurrently on worker threads) crashed the interpreter in C code.
_CONFIG = msgspec.json.Decoder(_NodeConfig)
_ANY = msgspec.json.Decoder()
_MANIFEST = msgspec.json.Decoder(_Manifest)
_RUN_RESULTS = msgspec.json.Decoder(_RunResults)


def _schema_version(url: str) -> str:
    # "https://schemas.getdbt.com/dbt/manifest/v12.json" -> "v12"
    return url.rsplit("/", 1)[-1].removesuffix(".json")


def load_manifest(path: Path) -> Manifest:
    """Read ``manifest.json`` at ``path``.

    Raises:
        ManifestError: the file is missing, is not JSON, or has an unsupported version.
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ManifestError(
            f"No dbt manifest at {path}. Run `dbt run` (or `dbt build`) in the project first, "
            "or point --project-dir/--target-path at the right place."
        ) from None
    except OSError as exc:
        raise ManifestError(f"Cannot read the dbt manifest at {path}: {exc.strerror}.") from exc
    return parse_manifest(raw, path=path)


def parse_manifest(raw: bytes, *, path: Path) -> Manifest:
    """Decode the bytes of a manifest.json; ``path`` names where they came from, for messages
    (a local file, or a dbt Cloud run's artifact, which heap-dbt never writes to disk).

    Raises:
        ManifestError: not JSON, or an unsupported version.
    """
    try:
        doc = _MANIFEST.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ManifestError(
            f"The dbt manifest at {path} is not a valid manifest.json ({exc}). "
            "Re-run `dbt run` to write a fresh one."
        ) from exc
    version = _schema_version(doc.metadata.dbt_schema_version)
    if version not in SUPPORTED_MANIFEST_VERSIONS:
        raise ManifestError(
            f"The dbt manifest at {path} has schema version {version or 'unknown'}; heap-dbt "
            f"reads {', '.join(sorted(SUPPORTED_MANIFEST_VERSIONS))}. Use dbt 1.6 to 1.12, or dbt "
            "Fusion (dbt Core 2.0) that writes manifest v12."
        )
    models: dict[str, ModelNode] = {}
    graph: dict[str, GraphNode] = {}
    tests: dict[str, DataTest] = {}
    collections = (doc.nodes, doc.sources, doc.exposures, doc.metrics, doc.semantic_models,
                   doc.saved_queries, doc.unit_tests, doc.functions)  # fmt: skip
    for collection in collections:
        for uid, node in collection.items():
            config = None
            if node.resource_type == "model":
                try:
                    config = _CONFIG.decode(node.config)
                except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                    raise ManifestError(
                        f"The dbt manifest at {path} has an unreadable config for {uid} ({exc}). "
                        "Re-run `dbt run` to write a fresh one."
                    ) from exc
                if not config.enabled:
                    continue
            elif node.resource_type == "test":
                try:
                    enabled = _CONFIG.decode(node.config).enabled
                except (msgspec.DecodeError, msgspec.ValidationError):
                    enabled = True  # a test's config is only read for this; dbt itself ran it
                if enabled:
                    tests[uid] = DataTest(uid, node.name, tuple(node.depends_on.nodes))
            # dbt keeps disabled nodes of other types under `disabled`, out of these collections
            graph[uid] = GraphNode(
                unique_id=uid,
                resource_type=node.resource_type,
                name=node.name,
                package_name=node.package_name,
                fqn=tuple(node.fqn),
                tags=tuple(node.tags),
                original_file_path=node.original_file_path,
                patch_path=node.patch_path,
                raw_config=bytes(node.config),
                version=node.version,
                latest_version=node.latest_version,
                access=node.access,
                source_name=node.source_name,
                test_name=node.test_metadata.name if node.test_metadata else None,
            )
            if config is None:
                continue
            # dbt merges top-level meta into config.meta; older manifests may only have one.
            meta = config.meta or node.meta or {}
            models[uid] = ModelNode(
                unique_id=uid,
                name=node.name,
                relation_name=node.relation_name,
                materialized=config.materialized,
                meta=meta,
                tags=tuple(config.tags or node.tags),
                fqn=tuple(node.fqn),
                original_file_path=node.original_file_path,
                package_name=node.package_name,
                version=node.version,
                latest_version=node.latest_version,
                patch_path=node.patch_path,
                misplaced=_misplaced(node),
            )
    return Manifest(
        path=path,
        adapter_type=doc.metadata.adapter_type,
        invocation_id=doc.metadata.invocation_id,
        models=models,
        parent_map=doc.parent_map,
        child_map=doc.child_map,
        project_name=doc.metadata.project_name,
        nodes=graph,
        selectors=doc.selectors,
        tests=tests,
    )


def is_heap_key(key: object) -> bool:
    """A key that names a heap block in any case (``heap``, ``Heap``, ``HEAP``)."""
    return isinstance(key, str) and key.strip().lower() == "heap"


def _misplaced(node: _Node) -> tuple[str, ...]:
    """The places of ``node`` where dbt kept a heap block that heap-dbt does not read: a key
    of the config itself, a case variant in the meta, or a column's meta. Only a node whose
    JSON has the word is decoded."""
    found: list[str] = []
    config_raw = bytes(node.config)
    if b"heap" in config_raw.lower():
        config = _ANY.decode(config_raw)
        if isinstance(config, dict):
            found += [f"config.{k}" for k in config if is_heap_key(k)]
            meta = config.get("meta")
            if isinstance(meta, dict):
                found += [f"config.meta.{k}" for k in meta if is_heap_key(k) and k != "heap"]
    found += [f"config.meta.{k}" for k in node.meta if is_heap_key(k) and k != "heap"]
    columns_raw = bytes(node.columns)
    if b"heap" in columns_raw.lower():
        columns = _ANY.decode(columns_raw)
        for name, column in columns.items() if isinstance(columns, dict) else ():
            if not isinstance(column, dict):
                continue
            config = column.get("config")
            for meta in (column.get("meta"), config.get("meta") if isinstance(config, dict) else None):
                if isinstance(meta, dict):
                    found += [f"columns.{name}.meta.{k}" for k in meta if is_heap_key(k)]
    return tuple(dict.fromkeys(found))


def load_run_results(path: Path) -> RunResults | None:
    """Read ``run_results.json`` if it is there and readable; otherwise None."""
    try:
        return parse_run_results(path.read_bytes())
    except (OSError, ManifestError):
        return None


def parse_run_results(raw: bytes) -> RunResults:
    """Decode the bytes of a run_results.json.

    Raises:
        ManifestError: not a run_results.json.
    """
    try:
        doc = _RUN_RESULTS.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ManifestError(f"Not a dbt run_results.json ({exc}).") from exc
    return RunResults(
        invocation_id=doc.metadata.invocation_id,
        args=doc.args,
        statuses={r.unique_id: r.status for r in doc.results},
    )
