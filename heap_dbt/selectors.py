"""dbt's node selection (``--select``, ``--exclude``, ``--selector``) over the manifest's graph.

The same syntax and the same answers as ``dbt ls`` (tests compare the two on the sample
project), written over the manifest's nodes and ``parent_map``/``child_map`` so that heap-dbt
needs neither dbt's import (seconds) nor a project on disk: a manifest from dbt Cloud selects
the same way. Selection runs over every node of the graph, seeds, tests and exposures
included, because ``+`` walks through them; the caller keeps the models it wants.

A selector is parsed into a tree of ``Criterion`` (one method and value, with its graph
operators) and ``SetOp`` (union, intersection, difference), then evaluated, as in dbt.
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, Literal

from heap_dbt.errors import ConfigError
from heap_dbt.manifest import GraphNode, Manifest

# dbt's own pattern (dbt/graph/selector_spec.py): [@][n+][method[.arg...]:]value[+n]
_SPEC = re.compile(
    r"\A(?P<childrens_parents>@)?(?P<parents>(?P<parents_depth>\d*)\+)?"
    r"(?:(?P<method>[\w.]+):)?(?P<value>.*?)(?P<children>\+(?P<children_depth>\d*))?\Z"
)

SUPPORTED = (
    "fqn", "tag", "path", "file", "package", "config", "resource_type", "source", "exposure",
    "metric", "semantic_model", "saved_query", "unit_test", "group", "access", "test_name",
    "test_type", "version",
)  # fmt: skip
# Methods dbt has that need a previous run's artifacts (--state) or a source freshness run.
_NEEDS_STATE = ("state", "result", "source_status")
_RESOURCE_TYPES = frozenset(
    {
        "model", "analysis", "test", "snapshot", "operation", "seed", "rpc", "sql_operation", "doc",
        "source", "macro", "exposure", "metric", "group", "saved_query", "semantic_model", "unit_test",
        "fixture", "function",
    }
)  # fmt: skip
_WILDCARDS = ("*", "?", "[", "]")
_DICT_ATTRIBUTES = frozenset(dir(dict))


@dataclass(frozen=True)
class Criterion:
    """One selector method and value, with its graph operators (``@``, ``n+``, ``+n``)."""

    raw: str
    method: str
    arguments: tuple[str, ...]
    value: str
    childrens_parents: bool = False
    parents: bool = False
    parents_depth: int | None = None
    children: bool = False
    children_depth: int | None = None


@dataclass(frozen=True)
class SetOp:
    """Union, intersection or difference (the first part minus the union of the rest)."""

    op: Literal["union", "intersection", "difference"]
    parts: tuple[Spec, ...]


Spec = Criterion | SetOp


# --- parsing ------------------------------------------------------------------------------------


def _depth(raw: Any, spec: str) -> int | None:
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"The selector {spec!r} has a depth {raw!r} that is not a number.") from None


def _default_method(value: str) -> str:
    """dbt's choice for a bare value: a path if it has a slash, a file name, else an fqn."""
    if os.path.sep in value or (os.path.altsep and os.path.altsep in value):
        return "path"
    if value.lower().endswith((".sql", ".py", ".csv")):
        return "file"
    return "fqn"


def _check_method(method: str, raw: str) -> None:
    if method in SUPPORTED:
        return
    if method in _NEEDS_STATE:
        raise ConfigError(
            f"The selector method {method!r} (in {raw!r}) needs dbt's --state artifacts, which heap-dbt "
            f"does not read; select by name, tag, path or config instead."
        )
    raise ConfigError(
        f"Unknown selector method {method!r} in {raw!r}; heap-dbt understands {', '.join(SUPPORTED)} "
        "(as in dbt)."
    )


def _criterion(
    raw: str, method: str | None, value: Any, *, flags: Mapping[str, Any], depths: Mapping[str, Any]
) -> Criterion:
    if value is None or (isinstance(value, str) and not value.strip()):
        raise ConfigError(f"The selector {raw!r} has no value to match; write it like tag:heap or +my_model.")
    if isinstance(value, bool):
        value = "true" if value else "false"
    value = str(value)
    arguments: tuple[str, ...] = ()
    if method is None:
        name = _default_method(value)
    else:
        name, *args = method.split(".")
        arguments = tuple(args)
    _check_method(name, raw)
    if name == "config" and not arguments:
        raise ConfigError(
            f"The selector {raw!r} names no config key; write it like config.materialized:view."
        )
    childrens_parents = bool(flags.get("childrens_parents"))
    children = bool(flags.get("children"))
    if childrens_parents and children:
        raise ConfigError(f"The selector {raw!r} has both @ and a trailing +, which dbt does not allow.")
    return Criterion(
        raw=raw,
        method=name,
        arguments=arguments,
        value=value,
        childrens_parents=childrens_parents,
        parents=bool(flags.get("parents")),
        parents_depth=_depth(depths.get("parents_depth"), raw),
        children=children,
        children_depth=_depth(depths.get("children_depth"), raw),
    )


def parse_criterion(raw: str) -> Criterion:
    """One selector as typed on the command line, e.g. ``2+tag:heap`` or ``@path:models/marts``."""
    match = _SPEC.match(raw)
    if match is None:  # the pattern matches any single line; this guards newlines
        raise ConfigError(f"Cannot read the selector {raw!r}; write it as dbt does, e.g. +my_model+.")
    groups = match.groupdict()
    return _criterion(raw, groups["method"], groups["value"], flags=groups, depths=groups)


def _union_of_words(values: Iterable[str]) -> SetOp:
    """dbt's CLI form: words separated by spaces are a union, commas within a word intersect."""
    words = [w for v in values for w in v.split(" ") if w]
    for w in words:
        if "" in w.split(","):
            raise ConfigError(f"The selector {w!r} has an empty part beside a comma; write it like a,b.")
    return SetOp(
        "union",
        tuple(SetOp("intersection", tuple(parse_criterion(p) for p in w.split(","))) for w in words),
    )


EVERYTHING = Criterion(raw="fqn:*", method="fqn", arguments=(), value="*")


def parse_cli(select: list[str] | None, exclude: list[str] | None) -> Spec:
    """``--select`` (default: everything) minus ``--exclude``."""
    include: Spec = _union_of_words(select) if select else EVERYTHING
    return SetOp("difference", (include, _union_of_words(exclude or [])))


def parse_definition(definition: Any, *, known: Mapping[str, Spec] | None = None, where: str = "") -> Spec:
    """A YAML selector definition (selectors.yml, or the manifest's copy of it), as dbt reads it:
    a CLI-style string, ``{method: x, value: y, ...}``, a one-key ``{tag: x}``, or
    ``union``/``intersection`` lists, each of which may hold one ``exclude`` list."""
    known = known or {}
    label = f"selector {where!r}" if where else "selector definition"
    if isinstance(definition, str):
        return parse_criterion(definition)
    if not isinstance(definition, dict):
        raise ConfigError(
            f"The {label} holds {definition!r}; expected a string, a method/value mapping, "
            "or a union or intersection list."
        )
    for op in ("union", "intersection"):
        if op in definition:
            items = definition[op]
            if not isinstance(items, list):
                raise ConfigError(f"The {label} has a {op} that is not a list.")
            include: list[Spec] = []
            excluded: Spec | None = None
            for item in items:
                if isinstance(item, dict) and "exclude" in item:
                    if excluded is not None:
                        raise ConfigError(f"The {label} has two exclude lists in one {op}; merge them.")
                    excluded = _exclusions(item, known, where)
                else:
                    include.append(parse_definition(item, known=known, where=where))
            combined = SetOp("union" if op == "union" else "intersection", tuple(include))
            return combined if excluded is None else SetOp("difference", (combined, excluded))
    if definition.get("method") == "selector":
        name = str(definition.get("value"))
        if name not in known:
            raise ConfigError(f"The {label} refers to selector {name!r}, which is not defined before it.")
        return known[name]
    if len(definition) == 1:
        ((method, value),) = definition.items()
        if method == "exclude":
            raise ConfigError(f"The {label} has an exclude outside a union or intersection list.")
        return _criterion(f"{method}:{value}", str(method), value, flags={}, depths={})
    if "method" in definition and "value" in definition:
        method = str(definition["method"])
        raw = f"{method}:{definition['value']}"
        base = _criterion(raw, method, definition["value"], flags=definition, depths=definition)
        if "exclude" in definition:
            return SetOp("difference", (base, _exclusions(definition, known, where)))
        return base
    raise ConfigError(f"The {label} has keys {sorted(definition)}; expected method and value, or one key.")


def _exclusions(definition: dict[str, Any], known: Mapping[str, Spec], where: str) -> Spec:
    items = definition["exclude"]
    if not isinstance(items, list):
        raise ConfigError(f"The selector {where!r} has an exclude that is not a list.")
    return SetOp("union", tuple(parse_definition(i, known=known, where=where) for i in items))


def named_selector(manifest: Manifest, name: str) -> Spec:
    """The selector ``name`` from selectors.yml, as dbt stored it in the manifest."""
    entry = manifest.selectors.get(name)
    if not isinstance(entry, dict):
        have = ", ".join(sorted(manifest.selectors)) or "none"
        raise ConfigError(
            f"No selector named {name!r} in the manifest (it has: {have}); define it in selectors.yml "
            "and run dbt (dbt parse is enough) to write it into the manifest."
        )
    try:
        return parse_definition(entry.get("definition"), where=name)
    except ConfigError as exc:
        if f"{name!r}" in str(exc):
            raise
        raise ConfigError(f"In selectors.yml, selector {name!r}: {exc}") from None


def default_selector(manifest: Manifest) -> str | None:
    """The selector with ``default: true``, which dbt (and heap-dbt) use when nothing is selected."""
    for name, entry in manifest.selectors.items():
        if isinstance(entry, dict) and entry.get("default") is True:
            return name
    return None


# --- evaluation ---------------------------------------------------------------------------------


def _is_selected_fqn(fqn: tuple[str, ...], selector: str, versioned: bool) -> bool:
    """dbt's ``is_selected_node``: the leaf name, an fqn prefix, or an fqn glob."""
    if versioned:
        if len(fqn) >= 2 and fqn[-2] == selector:
            return True
        if "_".join(fqn[-2:]) == "_".join(selector.split(".")[-2:]):
            return True
    elif fqn and fqn[-1] == selector:
        return True
    flat = [part for segment in fqn for part in segment.split(".")]
    parts = selector.split(".")
    if len(flat) < len(parts):
        return False
    for i, part in enumerate(parts):
        if any(w in part for w in _WILDCARDS):
            if fnmatch.fnmatch(".".join(flat[i:]), ".".join(parts[i:])):
                return True
            if "." not in selector and fqn:
                return fnmatch.fnmatch(fqn[-2] if versioned and len(fqn) >= 2 else fqn[-1], selector)
            return False
        if flat[i] != part:
            return False
    return True


def _glob_match(pattern: list[str], path: list[str], *, is_dir: bool) -> bool:
    """Whether ``Path(root).glob(pattern)`` (Python 3.11) yields ``path``: each part is an
    fnmatch pattern, ``**`` is any number of directories, and a pattern that ends in ``**``
    or ``/`` (the empty last part) yields directories only."""
    if not pattern:
        return not path
    head, rest = pattern[0], pattern[1:]
    if head == "":
        return not path and is_dir
    if head == "**":
        if not rest and not is_dir:
            return False
        return any(_glob_match(rest, path[i:], is_dir=is_dir) for i in range(len(path) + 1))
    if not path:
        return False
    if any(w in head for w in _WILDCARDS):
        if not fnmatch.fnmatchcase(path[0], head):
            return False
    elif path[0] != head:
        return False
    return _glob_match(rest, path[1:], is_dir=is_dir)


def _path_pattern(value: str) -> list[str]:
    if os.path.altsep:
        value = value.replace(os.path.altsep, os.path.sep)
    if value.startswith("/"):
        raise ConfigError(f"The selector path:{value} is absolute; write it relative to the project dir.")
    parts = [p for p in value.split("/") if p != "."]
    # A trailing slash (an empty last part) keeps only directories, as pathlib's glob does.
    parts = [p for p in parts if p] + ([""] if value.endswith("/") else [])
    if not [p for p in parts if p]:
        raise ConfigError(f"The selector path:{value} names no path; write it like path:models/marts.")
    return parts


def _path_matcher(pattern: list[str]) -> Callable[[GraphNode], bool]:
    """dbt matches the pattern's glob against a node's file, its directories and its YAML file."""
    if not any(p == "**" or any(w in p for w in _WILDCARDS) for p in pattern):
        # no wildcard: the file itself, or any file below the directory
        literal = "/".join(p for p in pattern if p)
        below = literal + "/"
        dir_only = pattern[-1] == ""

        def plain(n: GraphNode) -> bool:
            ofp = n.original_file_path
            patch = n.patch_path.split("://", 1)[1] if n.patch_path and "://" in n.patch_path else None
            return ofp.startswith(below) or (not dir_only and literal in (ofp, patch))

        return plain

    def glob(n: GraphNode) -> bool:
        candidates: list[tuple[list[str], bool]] = []
        if n.original_file_path:
            parts = n.original_file_path.split("/")
            candidates.append((parts, False))
            candidates += [(parts[:k], True) for k in range(len(parts) - 1, -1, -1)]
        if n.patch_path and "://" in n.patch_path:
            candidates.append((n.patch_path.split("://", 1)[1].split("/"), False))
        return any(_glob_match(pattern, parts, is_dir=is_dir) for parts, is_dir in candidates)

    return glob


def _descend(config: Any, keys: tuple[str, ...]) -> tuple[bool, Any]:
    """dbt's ``_getattr_descend`` on the config's JSON form: (found, value)."""
    value = config
    for key in keys:
        if not isinstance(value, dict):
            return False, None
        if key in _DICT_ATTRIBUTES:  # dbt's getattr finds the dict's method, which equals no value
            return False, None
        if key not in value:
            return False, None
        value = value[key]
    return True, value


def _config_equals(selector: str, value: Any, *, case_insensitive: bool) -> bool:
    def same(v: Any) -> bool:
        if isinstance(v, bool):
            return selector.upper() == ("TRUE" if v else "FALSE")
        if isinstance(v, str):
            return selector.upper() == v.upper() if case_insensitive else selector == v
        return False

    if isinstance(value, list):
        return any(same(v) for v in value)
    return same(value)


def _version_key(v: str | int | float) -> tuple[int, float | str]:
    try:
        return (0, float(v))
    except (TypeError, ValueError):
        return (1, str(v))


def _matcher(manifest: Manifest, c: Criterion) -> Callable[[GraphNode], bool]:
    """A test of one node for ``c``'s method and value (graph operators come after)."""
    value, method = c.value, c.method
    if method == "fqn":
        if "." in value or any(w in value for w in _WILDCARDS):
            return lambda n: n.resource_type != "source" and _is_selected_fqn_any(n, value)
        return lambda n: n.resource_type != "source" and _is_named(n.fqn, value, n.version is not None)
    if method == "tag":
        return lambda n: any(fnmatch.fnmatch(t, value) for t in n.tags)
    if method == "path":
        return _path_matcher(_path_pattern(value))
    if method == "file":
        return lambda n: _file_matches(n.original_file_path, value)
    if method == "package":
        package = manifest.project_name if value == "this" and manifest.project_name else value
        return lambda n: fnmatch.fnmatch(n.package_name, package)
    if method == "config":
        severity = c.arguments == ("severity",)  # dbt compares severities case-insensitively

        def config(n: GraphNode) -> bool:
            if n.resource_type in _UNCONFIGURABLE:
                return False
            found, got = _descend(n.config(), c.arguments)
            return found and _config_equals(value, got, case_insensitive=severity)

        return config
    if method == "resource_type":
        if value not in _RESOURCE_TYPES:
            raise ConfigError(
                f"Unknown resource type {value!r} in {c.raw!r}; "
                f"use one of {', '.join(sorted(_RESOURCE_TYPES))}."
            )
        return lambda n: n.resource_type == value
    if method == "source":
        parts = value.split(".")
        if len(parts) > 3:
            raise ConfigError(
                f"The selector {c.raw!r} has too many dots; write it as source or source.table."
            )
        # dbt: source, source.table or package.source.table
        pkg, src, table = {1: ["*", parts[0], "*"], 2: ["*", *parts], 3: parts}[len(parts)]
        return lambda n: (
            n.resource_type == "source"
            and fnmatch.fnmatch(n.package_name, pkg)
            and fnmatch.fnmatch(n.source_name or "", src)
            and fnmatch.fnmatch(n.name, table)
        )
    if method in ("exposure", "metric", "semantic_model", "saved_query", "unit_test"):
        parts = value.split(".")
        if len(parts) > 2:
            raise ConfigError(f"The selector {c.raw!r} has too many dots; write it as name or package.name.")
        pkg, name = parts if len(parts) == 2 else ["*", parts[0]]
        return lambda n: (
            n.resource_type == method
            and fnmatch.fnmatch(n.package_name, pkg)
            and fnmatch.fnmatch(n.name, name)
        )
    if method == "group":

        def group(n: GraphNode) -> bool:
            got = n.config().get("group") if n.resource_type not in _UNGROUPABLE else None
            return isinstance(got, str) and fnmatch.fnmatch(got, value)

        return group
    if method == "access":
        return lambda n: n.resource_type == "model" and n.access == value
    if method == "test_name":

        def test_name(n: GraphNode) -> bool:
            tested = (
                n.test_name
                if n.resource_type == "test"
                else n.name
                if n.resource_type == "unit_test"
                else None
            )
            return tested is not None and fnmatch.fnmatch(tested, value)

        return test_name
    if method == "test_type":
        kinds = {
            "generic": {"generic"}, "schema": {"generic"}, "data": {"generic", "singular"},
            "singular": {"singular"}, "unit": {"unit"},
        }.get(value)  # fmt: skip
        if kinds is None:
            raise ConfigError(
                f"Unknown test type {value!r} in {c.raw!r}; use generic, singular, unit or data."
            )
        return lambda n: _test_kind(n) in kinds
    if value not in ("latest", "prerelease", "old", "none"):
        raise ConfigError(f"Unknown version {value!r} in {c.raw!r}; use latest, prerelease, old or none.")
    return lambda n: n.resource_type == "model" and _version_matches(n, value)


def _test_kind(n: GraphNode) -> str | None:
    if n.resource_type == "unit_test":
        return "unit"
    if n.resource_type == "test":
        return "generic" if n.test_name is not None else "singular"
    return None


def _file_matches(original_file_path: str, value: str) -> bool:
    name = original_file_path.rsplit("/", 1)[-1]
    return fnmatch.fnmatch(name, value) or fnmatch.fnmatch(PurePosixPath(name).stem, value)


def _search(manifest: Manifest, c: Criterion) -> set[str]:
    """The nodes that ``c``'s method and value match, before graph operators."""
    match = _matcher(manifest, c)
    return {uid for uid, node in manifest.nodes.items() if match(node)}


# dbt's config: method reads the nodes of manifest.nodes and sources, not these.
_UNCONFIGURABLE = frozenset({"exposure", "metric", "semantic_model", "saved_query", "unit_test", "function"})
# dbt reads config.group of the nodes in manifest.nodes and of metrics, not of these.
_UNGROUPABLE = frozenset({"source", "exposure", "semantic_model", "saved_query", "unit_test", "function"})


def _is_named(fqn: tuple[str, ...], name: str, versioned: bool) -> bool:
    """``_is_selected_fqn_any`` for a plain name (no dot, no wildcard), without its loop: the
    leaf (or, versioned, the model name or ``name_v2``), or the first part of the fqn with or
    without its package (a package or top folder)."""
    if not fqn:
        return False
    if fqn[0].split(".", 1)[0] == name or (len(fqn) > 1 and fqn[1].split(".", 1)[0] == name):
        return True
    if versioned:
        return (len(fqn) >= 2 and fqn[-2] == name) or "_".join(fqn[-2:]) == name
    return fqn[-1] == name


def _is_selected_fqn_any(node: GraphNode, value: str) -> bool:
    versioned = node.version is not None
    return _is_selected_fqn(node.fqn, value, versioned) or _is_selected_fqn(node.fqn[1:], value, versioned)


def _version_matches(node: GraphNode, value: str) -> bool:
    v, latest = node.version, node.latest_version
    if value == "none":
        return v is None
    if value == "latest":
        return v is not None and v == latest
    if v is None or latest is None:
        return False
    if value == "prerelease":
        return _version_key(v) > _version_key(latest)
    return _version_key(v) < _version_key(latest)


def _walk(start: set[str], graph: Mapping[str, list[str]], depth: int | None) -> set[str]:
    """dbt's select_parents/select_children: the nodes within ``depth`` steps (None: any)."""
    reached: set[str] = set()
    frontier = set(start)
    level = 0
    while frontier and (depth is None or level < depth):
        frontier = {n for f in frontier for n in graph.get(f, ()) if n not in reached}
        reached |= frontier
        level += 1
    return reached


def _evaluate(manifest: Manifest, spec: Spec, empty: set[Criterion] | None = None) -> set[str]:
    """The nodes ``spec`` selects; each criterion whose method and value match no node at all
    goes into ``empty`` (a typo, or a model the manifest does not have yet)."""
    if isinstance(spec, Criterion):
        selected = _search(manifest, spec)
        if not selected and empty is not None:
            empty.add(spec)
        extra: set[str] = set()
        if spec.childrens_parents:
            down = _walk(selected, manifest.child_map, None) | selected
            extra |= _walk(down, manifest.parent_map, None) | down
        if spec.parents:
            extra |= _walk(selected, manifest.parent_map, spec.parents_depth)
        if spec.children:
            extra |= _walk(selected, manifest.child_map, spec.children_depth)
        # the maps may name nodes that are not in the graph (disabled ones)
        return (selected | extra) & manifest.nodes.keys()
    sets = [_evaluate(manifest, part, empty) for part in spec.parts]
    if not sets:
        return set()
    if spec.op == "union":
        return set().union(*sets)
    if spec.op == "intersection":
        return set.intersection(*sets)
    return sets[0].difference(*sets[1:])


@dataclass(frozen=True)
class Selection:
    """The chosen models, and the default selector that chose them, if one did."""

    models: frozenset[str]
    default_selector: str | None = None
    unmatched: tuple[str, ...] = ()
    """Each criterion that matches no node of the manifest, with where it was given
    (``--select 'customrs'``): dbt selects nothing for it, which is almost always a typo."""


def _criteria(spec: Spec) -> Iterable[Criterion]:
    if isinstance(spec, Criterion):
        yield spec
    else:
        for part in spec.parts:
            yield from _criteria(part)


def select(
    manifest: Manifest,
    *,
    select: list[str] | None = None,
    exclude: list[str] | None = None,
    selector: str | None = None,
) -> Selection:
    """The models chosen as dbt would choose them.

    ``--selector`` names a selector from selectors.yml and cannot be mixed with ``--select``
    or ``--exclude`` (dbt ignores them then; heap-dbt says so instead). With none of the
    three, the selector marked ``default: true`` applies, as in dbt; else every model.
    """
    if selector is not None and (select or exclude):
        raise ConfigError(
            "--selector cannot be combined with --select or --exclude (dbt would ignore them); "
            "put the whole selection in the selector, or drop --selector."
        )
    used_default: str | None = None
    spec: Spec
    # where each part of the spec was given, for naming a criterion that matches nothing
    origins: list[tuple[str, Spec]]
    if selector is not None:
        spec = named_selector(manifest, selector)
        origins = [(f"--selector {selector}", spec)]
    elif not select and not exclude and (used_default := default_selector(manifest)):
        spec = named_selector(manifest, used_default)
        origins = [(f"the default selector {used_default}", spec)]
    else:
        spec = parse_cli(select, exclude)
        assert isinstance(spec, SetOp)
        origins = [("--select", spec.parts[0]), ("--exclude", spec.parts[1])]
    empty: set[Criterion] = set()
    chosen = _evaluate(manifest, spec, empty) & manifest.models.keys()
    unmatched = dict.fromkeys(
        f"{where} {c.raw!r}"
        for where, part in origins
        for c in _criteria(part)
        if c in empty and c is not EVERYTHING
    )
    return Selection(frozenset(chosen), used_default, tuple(unmatched))
