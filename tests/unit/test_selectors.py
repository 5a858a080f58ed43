"""dbt's selection syntax over a manifest: methods, graph operators, set operations, YAML selectors.

The parity with dbt itself is proven against ``dbt ls`` in tests/integration/test_selectors.py;
these tests pin each rule on a small hand-made graph:

    raw_users (seed) ─> stg_users ─> dim_users ─> fct_activity ─> exposure heap_sync
    source raw.events ─> stg_events ────────────┘     └─> test not_null_fct_activity_id
    other (alone, a view)          versioned: orders v1, orders v2 (latest), orders v3 (prerelease)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from heap_dbt.errors import ConfigError
from heap_dbt.manifest import Manifest, load_manifest
from heap_dbt.selectors import Criterion, SetOp, parse_cli, parse_criterion, parse_definition, select

SCHEMA = "https://schemas.getdbt.com/dbt/manifest/v12.json"
COLLECTION = {"source": "sources", "exposure": "exposures", "metric": "metrics", "unit_test": "unit_tests"}


def node(
    name: str,
    path: str,
    *,
    resource_type: str = "model",
    tags: list[str] | None = None,
    config: dict[str, Any] | None = None,
    patch_path: str | None = None,
    package: str = "demo",
    **extra: Any,
) -> dict[str, Any]:
    folder = [p for p in path.split("/")[1:-1]]
    version = extra.get("version")
    uid = f"{resource_type}.{package}.{name}" + (f".v{version}" if version is not None else "")
    fqn = [package, *folder, name] + ([f"v{version}"] if version is not None else [])
    return {
        "unique_id": uid,
        "resource_type": resource_type,
        "name": name,
        "package_name": package,
        "fqn": fqn,
        "tags": tags or [],
        "original_file_path": path,
        "patch_path": patch_path,
        "config": {
            "enabled": True,
            "materialized": "table",
            "tags": tags or [],
            "meta": {},
            **(config or {}),
        },
        **extra,
    }


NODES = [
    node("raw_users", "seeds/raw_users.csv", resource_type="seed"),
    node("events", "models/staging/sources.yml", resource_type="source", source_name="raw", tags=["raw"]),
    node("stg_users", "models/staging/stg_users.sql", tags=["staging"],
         patch_path="demo://models/staging/schema.yml", config={"materialized": "view"}),
    node("stg_events", "models/staging/stg_events.sql", tags=["staging", "events"],
         patch_path="demo://models/staging/schema.yml", config={"materialized": "view"}),
    node("dim_users", "models/marts/dim_users.sql", tags=["heap", "nightly"], access="public",
         config={"meta": {"heap": {"object": "user", "key": "id"}, "owner": "growth"}, "group": "growth"}),
    node("fct_activity", "models/marts/fct_activity.sql", tags=["heap", "events"],
         config={"meta": {"heap": {"object": "event", "key": "id"}, "items": "x"},
                 "materialized": "incremental", "contract": {"enforced": False}}),
    node("other", "models/other.sql", config={"materialized": "view", "tags": ["a", "b"]}, tags=["a", "b"]),
    node("not_null_fct_activity_id", "models/marts/schema.yml", resource_type="test",
         test_metadata={"name": "not_null"}),
    node("assert_positive", "tests/assert_positive.sql", resource_type="test"),
    node("heap_sync", "models/heap_exposures.yml", resource_type="exposure"),
    node("orders", "models/orders_v1.sql", version=1, latest_version=2),
    node("orders", "models/orders_v2.sql", version=2, latest_version=2),
    node("orders", "models/orders_v3.sql", version=3, latest_version=2),
    node("pkg_model", "models/pkg_model.sql", package="other_pkg"),
    node("disabled_one", "models/disabled_one.sql", config={"enabled": False}),
]  # fmt: skip
EDGES = [
    ("seed.demo.raw_users", "model.demo.stg_users"),
    ("source.demo.events", "model.demo.stg_events"),
    ("model.demo.stg_users", "model.demo.dim_users"),
    ("model.demo.dim_users", "model.demo.fct_activity"),
    ("model.demo.stg_events", "model.demo.fct_activity"),
    ("model.demo.fct_activity", "exposure.demo.heap_sync"),
    ("model.demo.fct_activity", "test.demo.not_null_fct_activity_id"),
]


def write(tmp_path: Path, selectors: dict[str, Any] | None = None) -> Manifest:
    doc: dict[str, Any] = {
        "metadata": {"dbt_schema_version": SCHEMA, "project_name": "demo", "adapter_type": "duckdb"},
        "nodes": {},
        "selectors": selectors or {},
    }
    for n in NODES:
        doc.setdefault(COLLECTION.get(n["resource_type"], "nodes"), {})[n["unique_id"]] = n
    enabled = [n["unique_id"] for n in NODES if n["config"]["enabled"]]
    doc["parent_map"] = {uid: [p for p, c in EDGES if c == uid] for uid in enabled}
    doc["child_map"] = {uid: [c for p, c in EDGES if p == uid] for uid in enabled}
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(doc))
    return load_manifest(path)


@pytest.fixture
def dag(tmp_path: Path) -> Manifest:
    return write(tmp_path)


def names(manifest: Manifest, uids: frozenset[str]) -> set[str]:
    return {uid.removeprefix("model.demo.").removeprefix("model.other_pkg.") for uid in uids}


MODELS = {"stg_users", "stg_events", "dim_users", "fct_activity", "other", "orders.v1", "orders.v2",
          "orders.v3", "pkg_model"}  # fmt: skip

SELECTIONS = [
    pytest.param(None, None, MODELS, id="everything"),
    pytest.param(["dim_users"], None, {"dim_users"}, id="name"),
    pytest.param(["stg_*"], None, {"stg_users", "stg_events"}, id="glob"),
    pytest.param(["demo.marts.*"], None, {"dim_users", "fct_activity"}, id="fqn-glob"),
    pytest.param(["marts"], None, {"dim_users", "fct_activity"}, id="fqn-folder-without-package"),
    pytest.param(["demo.staging"], None, {"stg_users", "stg_events"}, id="fqn-prefix"),
    pytest.param(["fqn:demo.staging.stg_users"], None, {"stg_users"}, id="fqn-method"),
    pytest.param(["orders"], None, {"orders.v1", "orders.v2", "orders.v3"}, id="versioned-name"),
    pytest.param(["orders.v2"], None, {"orders.v2"}, id="versioned-name-and-version"),
    pytest.param(["tag:heap"], None, {"dim_users", "fct_activity"}, id="tag"),
    pytest.param(["tag:night*"], None, {"dim_users"}, id="tag-glob"),
    pytest.param(["tag:raw+"], None, {"stg_events", "fct_activity"}, id="tag-of-a-source-then-children"),
    pytest.param(["path:models/marts"], None, {"dim_users", "fct_activity"}, id="path-dir"),
    pytest.param(["path:models/marts/"], None, {"dim_users", "fct_activity"}, id="path-dir-slash"),
    pytest.param(["models/marts"], None, {"dim_users", "fct_activity"}, id="bare-path"),
    pytest.param(["path:models/other.sql"], None, {"other"}, id="path-file"),
    pytest.param(["path:models/other.sql/"], None, set(), id="path-file-with-slash-is-not-a-dir"),
    pytest.param(["path:models/mart"], None, set(), id="path-prefix-is-not-a-dir"),
    pytest.param(["path:models/*/dim_*.sql"], None, {"dim_users"}, id="path-glob"),
    pytest.param(["path:models/**/stg_*.sql"], None, {"stg_users", "stg_events"}, id="path-recursive-glob"),
    pytest.param(["path:**/marts"], None, {"dim_users", "fct_activity"}, id="path-recursive-dir"),
    pytest.param(["path:models/staging/schema.yml"], None, {"stg_users", "stg_events"}, id="path-patch-file"),
    pytest.param(["path:./models/./marts"], None, {"dim_users", "fct_activity"}, id="path-dots"),
    pytest.param(["file:other.sql"], None, {"other"}, id="file"),
    pytest.param(["dim_users.sql"], None, {"dim_users"}, id="bare-file"),
    pytest.param(["file:stg_*"], None, {"stg_users", "stg_events"}, id="file-stem-glob"),
    pytest.param(["package:other_pkg"], None, {"pkg_model"}, id="package"),
    pytest.param(["package:this"], None, MODELS - {"pkg_model"}, id="package-this"),
    pytest.param(["config.materialized:view"], None, {"stg_users", "stg_events", "other"}, id="config"),
    pytest.param(["config.meta.heap.object:user"], None, {"dim_users"}, id="config-nested-meta"),
    pytest.param(["config.meta.owner:growth"], None, {"dim_users"}, id="config-meta-key"),
    pytest.param(["config.meta.heap:*"], None, set(), id="config-a-mapping-equals-no-value"),
    pytest.param(["config.meta.items:x"], None, set(), id="config-dict-method-name-as-in-dbt"),
    pytest.param(["config.tags:b"], None, {"other"}, id="config-list-contains"),
    pytest.param(["config.contract.enforced:false"], None, {"fct_activity"}, id="config-boolean"),
    pytest.param(["config.MATERIALIZED:view"], None, set(), id="config-keys-are-case-sensitive"),
    pytest.param(
        ["resource_type:seed+"], None, {"stg_users", "dim_users", "fct_activity"}, id="resource-type"
    ),
    pytest.param(["source:raw+"], None, {"stg_events", "fct_activity"}, id="source"),
    pytest.param(["source:raw.events+1"], None, {"stg_events"}, id="source-table"),
    pytest.param(["source:demo.raw.*+1"], None, {"stg_events"}, id="source-package"),
    pytest.param(
        ["+exposure:heap_sync"],
        None,
        {"stg_users", "stg_events", "dim_users", "fct_activity"},
        id="exposure-parents",
    ),
    pytest.param(
        ["+test_name:not_null"],
        None,
        {"stg_users", "stg_events", "dim_users", "fct_activity"},
        id="test-name-parents",
    ),
    pytest.param(["+test_type:singular"], None, set(), id="test-type"),
    pytest.param(["group:grow*"], None, {"dim_users"}, id="group"),
    pytest.param(["access:public"], None, {"dim_users"}, id="access"),
    pytest.param(["version:latest"], None, {"orders.v2"}, id="version-latest"),
    pytest.param(["version:old"], None, {"orders.v1"}, id="version-old"),
    pytest.param(["version:prerelease"], None, {"orders.v3"}, id="version-prerelease"),
    pytest.param(["+dim_users"], None, {"stg_users", "dim_users"}, id="parents"),
    pytest.param(["dim_users+"], None, {"dim_users", "fct_activity"}, id="children"),
    pytest.param(["+dim_users+"], None, {"stg_users", "dim_users", "fct_activity"}, id="both-ways"),
    pytest.param(
        ["1+fct_activity"], None, {"dim_users", "stg_events", "fct_activity"}, id="one-parent-level"
    ),
    pytest.param(
        ["2+fct_activity"],
        None,
        {"stg_users", "dim_users", "stg_events", "fct_activity"},
        id="two-parent-levels",
    ),
    pytest.param(["stg_users+1"], None, {"stg_users", "dim_users"}, id="one-child-level"),
    pytest.param(["stg_users+0"], None, {"stg_users"}, id="zero-child-levels"),
    pytest.param(
        ["@dim_users"],
        None,
        {"stg_users", "stg_events", "dim_users", "fct_activity"},
        id="at-childrens-parents",
    ),
    pytest.param(
        ["@stg_events"],
        None,
        {"stg_users", "stg_events", "dim_users", "fct_activity"},
        id="at-reaches-a-sibling-branch",
    ),
    pytest.param(["tag:heap,tag:events"], None, {"fct_activity"}, id="intersection"),
    pytest.param(
        ["+fct_activity,tag:staging"], None, {"stg_users", "stg_events"}, id="intersection-with-graph"
    ),
    pytest.param(["dim_users other"], None, {"dim_users", "other"}, id="space-union"),
    pytest.param(["dim_users", "other"], None, {"dim_users", "other"}, id="repeated-flag-union"),
    pytest.param(["tag:heap"], ["fct_activity"], {"dim_users"}, id="exclude"),
    pytest.param(
        None,
        ["tag:staging marts"],
        MODELS - {"stg_users", "stg_events", "dim_users", "fct_activity"},
        id="exclude-only",
    ),
    pytest.param(
        ["+fct_activity"], ["+stg_users"], {"stg_events", "dim_users", "fct_activity"}, id="exclude-graph"
    ),
    pytest.param(
        ["tag:heap,tag:events"], ["tag:nightly,tag:heap"], {"fct_activity"}, id="exclude-intersection"
    ),
    pytest.param(["disabled_one"], None, set(), id="disabled-model"),
    pytest.param(["nothing_like_this"], None, set(), id="no-match"),
]


@pytest.mark.parametrize(("sel", "exclude", "expected"), SELECTIONS)
def test_select(dag: Manifest, sel: list[str] | None, exclude: list[str] | None, expected: set[str]) -> None:
    assert names(dag, select(dag, select=sel, exclude=exclude).models) == expected


def test_graph_walk_passes_through_non_model_nodes(dag: Manifest) -> None:
    # stg_users is reached from the seed, two levels down via the seed's child
    assert names(dag, select(dag, select=["raw_users+2"]).models) == {"stg_users", "dim_users"}


# --- parsing --------------------------------------------------------------------------------------


def test_parse_criterion_reads_every_part() -> None:
    assert parse_criterion("2+config.meta.heap.object:user+3") == Criterion(
        raw="2+config.meta.heap.object:user+3",
        method="config",
        arguments=("meta", "heap", "object"),
        value="user",
        parents=True,
        parents_depth=2,
        children=True,
        children_depth=3,
    )
    assert parse_criterion("@tag:x") == Criterion("@tag:x", "tag", (), "x", childrens_parents=True)
    assert parse_criterion("models/marts").method == "path"
    assert parse_criterion("a.sql").method == "file"
    assert parse_criterion("my_model").method == "fqn"


def test_parse_cli_is_a_difference_of_unions_of_intersections() -> None:
    spec = parse_cli(["a b,c"], ["d"])
    assert isinstance(spec, SetOp) and spec.op == "difference"
    include, exclude = spec.parts
    assert isinstance(include, SetOp) and [p.op for p in include.parts] == ["intersection", "intersection"]  # type: ignore[union-attr]
    assert [c.value for c in include.parts[1].parts] == ["b", "c"]  # type: ignore[union-attr]
    assert isinstance(exclude, SetOp) and exclude.op == "union"


@pytest.mark.parametrize(
    ("selector", "message"),
    [
        pytest.param(
            "bogus:x",
            "Unknown selector method 'bogus' in 'bogus:x'; heap-dbt understands fqn, tag,",
            id="unknown-method",
        ),
        pytest.param(
            "state:modified",
            "The selector method 'state' (in 'state:modified') needs dbt's --state",
            id="state-method",
        ),
        pytest.param("result:error+", "The selector method 'result'", id="result-method"),
        pytest.param(
            "config:view", "The selector 'config:view' names no config key", id="config-without-key"
        ),
        pytest.param("+", "The selector '+' has no value to match", id="bare-plus"),
        pytest.param("tag:", "The selector 'tag:' has no value", id="empty-value"),
        pytest.param("@a+", "The selector '@a+' has both @ and a trailing +", id="at-and-children"),
        pytest.param("a,", "The selector 'a,' has an empty part beside a comma", id="dangling-comma"),
        pytest.param("path:/etc", "The selector path:/etc is absolute", id="absolute-path"),
        pytest.param("resource_type:table", "Unknown resource type 'table'", id="bad-resource-type"),
        pytest.param("version:newest", "Unknown version 'newest'", id="bad-version"),
        pytest.param("test_type:odd", "Unknown test type 'odd'", id="bad-test-type"),
        pytest.param("source:a.b.c.d", "too many dots", id="source-too-deep"),
        pytest.param("exposure:a.b.c", "too many dots", id="exposure-too-deep"),
    ],
)
def test_bad_selector_is_a_clear_error(dag: Manifest, selector: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        select(dag, select=[selector])
    assert message in str(info.value)


def test_bad_exclude_is_an_error(dag: Manifest) -> None:
    with pytest.raises(ConfigError, match="Unknown selector method 'bogus'"):
        select(dag, exclude=["bogus:x"])


# --- YAML selectors ---------------------------------------------------------------------------------

DEFINITIONS = [
    pytest.param("tag:heap", {"dim_users", "fct_activity"}, id="string-tag"),
    pytest.param("+tag:heap", {"stg_users", "stg_events", "dim_users", "fct_activity"}, id="string"),
    # dbt reads a string definition as one criterion: no union, no intersection
    pytest.param("tag:heap,tag:events", set(), id="string-is-one-criterion"),
    pytest.param({"method": "tag", "value": "heap"}, {"dim_users", "fct_activity"}, id="method-value"),
    pytest.param({"tag": "staging"}, {"stg_users", "stg_events"}, id="one-key"),
    pytest.param({"config.materialized": "view"}, {"stg_users", "stg_events", "other"}, id="one-key-config"),
    pytest.param(
        {"method": "fqn", "value": "dim_users", "parents": True}, {"stg_users", "dim_users"}, id="parents"
    ),
    pytest.param(
        {"method": "fqn", "value": "stg_users", "children": True, "children_depth": 1},
        {"stg_users", "dim_users"},
        id="children-depth",
    ),
    pytest.param(
        {"method": "fqn", "value": "fct_activity", "parents": True, "parents_depth": "1"},
        {"dim_users", "stg_events", "fct_activity"},
        id="depth-as-a-string",
    ),
    pytest.param(
        {"method": "fqn", "value": "stg_events", "childrens_parents": True},
        {"stg_users", "stg_events", "dim_users", "fct_activity"},
        id="childrens-parents",
    ),
    pytest.param(
        {"method": "tag", "value": "heap", "exclude": [{"method": "fqn", "value": "dim_users"}]},
        {"fct_activity"},
        id="method-with-exclude",
    ),
    pytest.param(
        {"union": ["dim_users", {"method": "tag", "value": "staging"}]},
        {"dim_users", "stg_users", "stg_events"},
        id="union",
    ),
    pytest.param({"intersection": ["tag:heap", "tag:events"]}, {"fct_activity"}, id="intersection"),
    pytest.param(
        {"union": ["tag:heap", "tag:staging", {"exclude": ["tag:events"]}]},
        {"stg_users", "dim_users"},
        id="union-with-exclude",
    ),
    pytest.param(
        {
            "intersection": [
                {"union": ["tag:heap", "tag:staging"]},
                "+fct_activity",
                {"exclude": ["stg_users", "stg_events"]},
            ]
        },
        {"dim_users", "fct_activity"},
        id="nested",
    ),
    pytest.param({"method": "config.contract.enforced", "value": False}, {"fct_activity"}, id="yaml-boolean"),
]


@pytest.mark.parametrize(("definition", "expected"), DEFINITIONS)
def test_yaml_selector(tmp_path: Path, definition: Any, expected: set[str]) -> None:
    manifest = write(tmp_path, {"mine": {"name": "mine", "definition": definition, "default": False}})
    assert names(manifest, select(manifest, selector="mine").models) == expected


def test_selector_refers_to_an_earlier_one() -> None:
    earlier = parse_definition("tag:heap")
    assert parse_definition({"method": "selector", "value": "heap"}, known={"heap": earlier}) == earlier
    with pytest.raises(ConfigError, match="refers to selector 'later', which is not defined before it"):
        parse_definition({"method": "selector", "value": "later"}, where="x")


@pytest.mark.parametrize(
    ("definition", "message"),
    [
        pytest.param(["tag:a"], "holds ['tag:a']; expected a string", id="a-list"),
        pytest.param({"union": "tag:a"}, "has a union that is not a list", id="union-not-a-list"),
        pytest.param(
            {"union": [{"exclude": ["a"]}, {"exclude": ["b"]}]}, "two exclude lists", id="two-excludes"
        ),
        pytest.param({"exclude": ["a"]}, "exclude outside a union or intersection", id="bare-exclude"),
        pytest.param(
            {"method": "tag", "value": "a", "exclude": "b"}, "exclude that is not a list", id="exclude-str"
        ),
        pytest.param({"method": "tag", "valu": "a"}, "has keys ['method', 'valu']", id="misspelt-key"),
        pytest.param({"method": "bogus", "value": "a"}, "Unknown selector method 'bogus'", id="bad-method"),
        pytest.param(
            {"method": "fqn", "value": "a", "parents_depth": "x"},
            "depth 'x' that is not a number",
            id="bad-depth",
        ),
    ],
)
def test_bad_yaml_selector_is_a_clear_error(tmp_path: Path, definition: Any, message: str) -> None:
    manifest = write(tmp_path, {"mine": {"name": "mine", "definition": definition, "default": False}})
    with pytest.raises(ConfigError) as info:
        select(manifest, selector="mine")
    assert message in str(info.value) and "'mine'" in str(info.value)


def test_unknown_selector_names_the_ones_there_are(tmp_path: Path) -> None:
    manifest = write(
        tmp_path, {"nightly": {"name": "nightly", "definition": "tag:nightly", "default": False}}
    )
    with pytest.raises(ConfigError, match=r"No selector named 'nighty' in the manifest \(it has: nightly\)"):
        select(manifest, selector="nighty")


def test_default_selector_applies_only_when_nothing_is_selected(tmp_path: Path) -> None:
    manifest = write(tmp_path, {"d": {"name": "d", "definition": "tag:heap", "default": True}})
    chosen = select(manifest)
    assert names(manifest, chosen.models) == {"dim_users", "fct_activity"} and chosen.default_selector == "d"
    assert names(manifest, select(manifest, select=["other"]).models) == {"other"}
    assert names(manifest, select(manifest, exclude=["tag:heap"]).models) == MODELS - {
        "dim_users",
        "fct_activity",
    }
    assert select(manifest, select=["other"]).default_selector is None


def test_selector_and_select_together_is_an_error(tmp_path: Path) -> None:
    manifest = write(tmp_path, {"d": {"name": "d", "definition": "tag:heap", "default": False}})
    with pytest.raises(ConfigError, match="--selector cannot be combined with --select or --exclude"):
        select(manifest, select=["other"], selector="d")


@pytest.mark.parametrize(
    "fqn",
    [("demo", "marts", "dim_users"), ("demo", "dim_users"), ("demo.x", "marts", "a.b"), ("demo",),
     ("demo", "orders", "v2"), ("other", "demo", "x")],
)  # fmt: skip
@pytest.mark.parametrize(
    "name", ["demo", "marts", "dim_users", "x", "orders", "v2", "orders_v2", "a", "b", "other"]
)
@pytest.mark.parametrize("versioned", [False, True])
def test_plain_names_take_a_shortcut_with_the_same_answer(
    fqn: tuple[str, ...], name: str, versioned: bool
) -> None:
    from heap_dbt.selectors import _is_named, _is_selected_fqn

    general = _is_selected_fqn(fqn, name, versioned) or (
        len(fqn) > 1 and _is_selected_fqn(fqn[1:], name, versioned)
    )
    assert _is_named(fqn, name, versioned) == general


# --- criteria that match nothing ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sel", "exclude", "unmatched"),
    [
        pytest.param(["dim_users"], None, (), id="a-name"),
        pytest.param(["dim_userz"], None, ("--select 'dim_userz'",), id="a-typo"),
        pytest.param(["+dim_userz+"], None, ("--select '+dim_userz+'",), id="a-typo-with-graph-operators"),
        pytest.param(["other tag:nope,tag:heap"], None, ("--select 'tag:nope'",), id="a-part-of-a-word"),
        pytest.param(None, ["tag:nope"], ("--exclude 'tag:nope'",), id="an-exclusion"),
        # matches a node that is no model (a source, a test): not a typo
        pytest.param(["source:raw", "test_name:not_null"], None, (), id="nodes-that-are-no-models"),
        # matches models, none of them left after the exclusion: not a typo either
        pytest.param(["other"], ["other"], (), id="excluded-again"),
    ],
)
def test_criteria_that_match_no_node_are_named(
    dag: Manifest, sel: list[str] | None, exclude: list[str] | None, unmatched: tuple[str, ...]
) -> None:
    assert select(dag, select=sel, exclude=exclude).unmatched == unmatched


def test_criteria_of_a_yaml_selector_that_match_no_node_are_named(tmp_path: Path) -> None:
    definition = {"union": ["tag:heap", {"method": "path", "value": "models/nope"}]}
    manifest = write(tmp_path, {"d": {"name": "d", "definition": definition, "default": True}})
    assert select(manifest).unmatched == ("the default selector d 'path:models/nope'",)
    assert select(manifest, selector="d").unmatched == ("--selector d 'path:models/nope'",)
