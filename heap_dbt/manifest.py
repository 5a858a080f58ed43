"""Read dbt's manifest.json and run_results.json into the few fields heap-dbt needs.

Only the fields named here are decoded (msgspec ignores the rest), so a large manifest
reads in a fraction of a second and fields added by newer dbt versions do no harm.
"""

from __future__ import annotations

import fnmatch
import re
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


class _DependsOn(msgspec.Struct):
    nodes: list[str] = msgspec.field(default_factory=list)


class _Node(msgspec.Struct):
    unique_id: str
    resource_type: str
    name: str
    package_name: str = ""
    relation_name: str | None = None
    database: str | None = None
    schema: str | None = None
    alias: str | None = None
    config: _NodeConfig = msgspec.field(default_factory=_NodeConfig)
    meta: dict[str, Any] = msgspec.field(default_factory=dict)
    tags: list[str] = msgspec.field(default_factory=list)
    fqn: list[str] = msgspec.field(default_factory=list)
    original_file_path: str = ""
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
        """The dbt command that wrote these results (``args.which``), if recorded."""
        which = self.args.get("which")
        return which if isinstance(which, str) else None

    @property
    def builds(self) -> bool:
        """True for the results of ``dbt run`` or ``dbt build`` (or of a dbt too old to say)."""
        return self.command is None or self.command in RUN_COMMANDS


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
    try:
        doc = msgspec.json.decode(raw, type=_Manifest)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ManifestError(
            f"The dbt manifest at {path} is not a valid manifest.json ({exc}). "
            "Re-run `dbt run` to write a fresh one."
        ) from exc
    version = _schema_version(doc.metadata.dbt_schema_version)
    if version not in SUPPORTED_MANIFEST_VERSIONS:
        raise ManifestError(
            f"The dbt manifest at {path} has schema version {version or 'unknown'}; heap-dbt "
            f"reads {', '.join(sorted(SUPPORTED_MANIFEST_VERSIONS))}. Use dbt 1.6 to 1.11."
        )
    models: dict[str, ModelNode] = {}
    tests: dict[str, DataTest] = {}
    for uid, node in doc.nodes.items():
        if node.resource_type == "test" and node.config.enabled:
            tests[uid] = DataTest(uid, node.name, tuple(node.depends_on.nodes))
        if node.resource_type != "model" or not node.config.enabled:
            continue
        # dbt merges top-level meta into config.meta; older manifests may only have one.
        meta = node.config.meta or node.meta or {}
        models[uid] = ModelNode(
            unique_id=uid,
            name=node.name,
            relation_name=node.relation_name,
            materialized=node.config.materialized,
            meta=meta,
            tags=tuple(node.config.tags or node.tags),
            fqn=tuple(node.fqn),
            original_file_path=node.original_file_path,
        )
    return Manifest(
        path=path,
        adapter_type=doc.metadata.adapter_type,
        invocation_id=doc.metadata.invocation_id,
        models=models,
        parent_map=doc.parent_map,
        child_map=doc.child_map,
        tests=tests,
    )


def load_run_results(path: Path) -> RunResults | None:
    """Read ``run_results.json`` if it is there and readable; otherwise None."""
    try:
        doc = msgspec.json.decode(path.read_bytes(), type=_RunResults)
    except (OSError, msgspec.DecodeError, msgspec.ValidationError):
        return None
    return RunResults(
        invocation_id=doc.metadata.invocation_id,
        args=doc.args,
        statuses={r.unique_id: r.status for r in doc.results},
    )


def _walk(start: set[str], graph: dict[str, list[str]], depth: int | None) -> set[str]:
    seen = set(start)
    frontier = set(start)
    level = 0
    while frontier and (depth is None or level < depth):
        frontier = {n for f in frontier for n in graph.get(f, ()) if n not in seen}
        seen |= frontier
        level += 1
    return seen


def _match_atom(manifest: Manifest, atom: str) -> set[str]:
    """Models matched by one selector atom, without graph operators."""
    method, _, value = atom.partition(":") if ":" in atom else ("name", "", atom)
    out: set[str] = set()
    for uid, m in manifest.models.items():
        if method == "name" or method == "fqn":
            if fnmatch.fnmatchcase(m.name, value) or fnmatch.fnmatchcase(".".join(m.fqn), value):
                out.add(uid)
        elif method == "tag":
            if any(fnmatch.fnmatchcase(t, value) for t in m.tags):
                out.add(uid)
        elif method == "path":
            if m.original_file_path == value or m.original_file_path.startswith(value.rstrip("/") + "/"):
                out.add(uid)
        else:
            raise ManifestError(
                f"Unsupported selector method {method!r} in {atom!r}; heap-dbt understands "
                "model names, fqn:, tag: and path:, with + for parents and children."
            )
    return out


_GRAPH_OPS = re.compile(r"^(?:(?P<up>\d*)\+)?(?P<atom>[^+]+?)(?:\+(?P<down>\d*))?$")


def _select_one(manifest: Manifest, selector: str) -> set[str]:
    """One selector, with ``a,b`` intersection and ``+``/``n+`` graph operators."""
    result: set[str] | None = None
    for part in selector.split(","):
        match = _GRAPH_OPS.match(part)
        if match is None:
            raise ManifestError(f"Cannot read the selector {part!r}; write it as dbt does, e.g. +model+.")
        matched = _match_atom(manifest, match["atom"])
        selected = set(matched)
        if match["up"] is not None:
            selected |= _walk(matched, manifest.parent_map, int(match["up"]) if match["up"] else None)
        if match["down"] is not None:
            selected |= _walk(matched, manifest.child_map, int(match["down"]) if match["down"] else None)
        selected &= manifest.models.keys()
        result = selected if result is None else result & selected
    return result or set()


def select_models(manifest: Manifest, *, select: list[str] | None, exclude: list[str] | None) -> set[str]:
    """The unique ids chosen by dbt-style ``--select`` and ``--exclude``.

    Space-separated selectors (or repeated flags) are a union, commas intersect, and
    ``+`` before or after a selector adds parents or children, as in dbt.
    """
    chosen: set[str] = set(manifest.models)
    if select:
        chosen = set()
        for sel in _split(select):
            chosen |= _select_one(manifest, sel)
    for sel in _split(exclude or []):
        chosen -= _select_one(manifest, sel)
    return chosen


def _split(values: list[str]) -> list[str]:
    return [s for v in values for s in v.split() if s]
