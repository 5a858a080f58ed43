"""Reading manifest.json and run_results.json into the fields heap-dbt needs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from heap_dbt.errors import ManifestError
from heap_dbt.manifest import load_manifest, load_run_results

SCHEMA = "https://schemas.getdbt.com/dbt/manifest/v12.json"


def node(
    name: str,
    *,
    path: str | None = None,
    tags: list[str] | None = None,
    meta: dict[str, Any] | None = None,
    top_meta: dict[str, Any] | None = None,
    enabled: bool = True,
    materialized: str = "table",
    resource_type: str = "model",
) -> dict[str, Any]:
    return {
        "unique_id": f"{resource_type}.demo.{name}",
        "resource_type": resource_type,
        "name": name,
        "package_name": "demo",
        "relation_name": f'"dev"."main"."{name}"',
        "config": {
            "materialized": materialized,
            "enabled": enabled,
            "meta": meta or {},
            "tags": tags or [],
        },
        "meta": top_meta or {},
        "tags": tags or [],
        "fqn": [
            "demo",
            *(path or f"models/{name}.sql").removeprefix("models/").removesuffix(".sql").split("/"),
        ],
        "original_file_path": path or f"models/{name}.sql",
        "columns": {"ignored": {"name": "ignored"}},
    }


def write_manifest(
    tmp_path: Path,
    nodes: list[dict[str, Any]],
    *,
    edges: list[tuple[str, str]] = (),  # type: ignore[assignment]
    schema: str = SCHEMA,
) -> Path:
    """Write a manifest; ``edges`` are (parent, child) pairs of node names."""
    ids = {n["name"]: n["unique_id"] for n in nodes}
    parent_map: dict[str, list[str]] = {uid: [] for uid in ids.values()}
    child_map: dict[str, list[str]] = {uid: [] for uid in ids.values()}
    for parent, child in edges:
        parent_map[ids[child]].append(ids[parent])
        child_map[ids[parent]].append(ids[child])
    doc = {
        "metadata": {
            "dbt_schema_version": schema,
            "dbt_version": "1.10.0",
            "invocation_id": "inv-1",
            "adapter_type": "duckdb",
            "generated_at": "2025-01-01T00:00:00Z",
        },
        "nodes": {n["unique_id"]: n for n in nodes},
        "sources": {},
        "parent_map": parent_map,
        "child_map": child_map,
    }
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(doc))
    return path


# --- load_manifest ----------------------------------------------------------------------------------


def test_missing_manifest_says_to_run_dbt(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match=r"No dbt manifest at .*manifest\.json\. Run `dbt run`"):
        load_manifest(tmp_path / "target" / "manifest.json")


def test_manifest_that_is_a_directory_is_reported(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").mkdir()
    with pytest.raises(ManifestError, match="Cannot read the dbt manifest"):
        load_manifest(tmp_path / "manifest.json")


@pytest.mark.parametrize(
    "content",
    [
        pytest.param("{not json", id="not-json"),
        pytest.param("", id="empty"),
        pytest.param("[]", id="a-list"),
        pytest.param('{"nodes": {}}', id="no-metadata"),
        pytest.param('{"metadata": {}, "nodes": {"x": {"name": "x"}}}', id="node-missing-fields"),
    ],
)
def test_invalid_manifest_is_reported(tmp_path: Path, content: str) -> None:
    path = tmp_path / "manifest.json"
    path.write_text(content)
    with pytest.raises(ManifestError, match=r"is not a valid manifest\.json .*Re-run `dbt run`"):
        load_manifest(path)


@pytest.mark.parametrize(
    ("schema", "supported"),
    [
        ("https://schemas.getdbt.com/dbt/manifest/v10.json", True),
        ("https://schemas.getdbt.com/dbt/manifest/v11.json", True),
        ("https://schemas.getdbt.com/dbt/manifest/v12.json", True),
        ("https://schemas.getdbt.com/dbt/manifest/v9.json", False),
        ("https://schemas.getdbt.com/dbt/manifest/v99.json", False),
        ("", False),
    ],
    ids=["v10", "v11", "v12", "v9", "v99", "none"],
)
def test_schema_version(tmp_path: Path, schema: str, supported: bool) -> None:
    path = write_manifest(tmp_path, [node("a")], schema=schema)
    if supported:
        assert set(load_manifest(path).models) == {"model.demo.a"}
    else:
        with pytest.raises(ManifestError, match=r"has schema version \w+; heap-dbt reads v10, v11, v12\."):
            load_manifest(path)


def test_model_fields_are_read(tmp_path: Path) -> None:
    heap = {"object": "user", "key": "id"}
    path = write_manifest(
        tmp_path,
        [node("dim_users", path="models/marts/dim_users.sql", tags=["nightly"], meta={"heap": heap})],
    )
    manifest = load_manifest(path)
    m = manifest.models["model.demo.dim_users"]
    assert (m.name, m.relation_name, m.materialized, m.meta, m.tags, m.fqn, m.original_file_path) == (
        "dim_users",
        '"dev"."main"."dim_users"',
        "table",
        {"heap": heap},
        ("nightly",),
        ("demo", "marts", "dim_users"),
        "models/marts/dim_users.sql",
    )
    assert (manifest.adapter_type, manifest.invocation_id) == ("duckdb", "inv-1")


def test_meta_is_read_from_config_meta(tmp_path: Path) -> None:
    path = write_manifest(
        tmp_path,
        [node("a", meta={"heap": {"object": "user"}}, top_meta={"heap": {"object": "stale"}}), node("b")],
    )
    manifest = load_manifest(path)
    assert manifest.models["model.demo.a"].meta == {"heap": {"object": "user"}}
    assert [m.name for m in manifest.heap_models()] == ["a"]


def test_top_level_meta_is_the_fallback(tmp_path: Path) -> None:
    path = write_manifest(tmp_path, [node("a", top_meta={"heap": {"object": "user"}})])
    assert load_manifest(path).models["model.demo.a"].meta == {"heap": {"object": "user"}}


def test_disabled_models_and_other_nodes_are_skipped(tmp_path: Path) -> None:
    path = write_manifest(
        tmp_path,
        [
            node("on", meta={"heap": {}}),
            node("off", enabled=False, meta={"heap": {}}),
            node("seed_users", resource_type="seed", meta={"heap": {}}),
            node("check", resource_type="test"),
        ],
    )
    manifest = load_manifest(path)
    assert set(manifest.models) == {"model.demo.on"}
    assert [m.name for m in manifest.heap_models()] == ["on"]


# --- run_results ------------------------------------------------------------------------------------


def test_run_results_are_read(tmp_path: Path) -> None:
    path = tmp_path / "run_results.json"
    path.write_text(
        json.dumps(
            {
                "metadata": {
                    "dbt_schema_version": "https://schemas.getdbt.com/dbt/run-results/v6.json",
                    "invocation_id": "inv-9",
                },
                "results": [
                    {"unique_id": "model.demo.a", "status": "success"},
                    {"unique_id": "model.demo.b", "status": "error"},
                ],
                "args": {"which": "build", "target": "prod"},
            }
        )
    )
    results = load_run_results(path)
    assert results is not None
    assert (results.invocation_id, results.args["which"], results.args["target"]) == (
        "inv-9",
        "build",
        "prod",
    )
    assert results.statuses == {"model.demo.a": "success", "model.demo.b": "error"}


@pytest.mark.parametrize("content", [None, "{oops", "[]"], ids=["missing", "not-json", "wrong-shape"])
def test_unreadable_run_results_are_none(tmp_path: Path, content: str | None) -> None:
    path = tmp_path / "run_results.json"
    if content is not None:
        path.write_text(content)
    assert load_run_results(path) is None


def test_tests_and_what_they_depend_on_are_read(tmp_path: Path) -> None:
    generic = node("unique_a_id", resource_type="test")
    generic["depends_on"] = {"nodes": ["model.demo.a"], "macros": ["macro.dbt.test_unique"]}
    singular = node("a_matches_b", resource_type="test")
    singular["depends_on"] = {"nodes": ["model.demo.a", "model.demo.b"]}
    off = node("disabled_test", resource_type="test", enabled=False)

    manifest = load_manifest(write_manifest(tmp_path, [node("a"), node("b"), generic, singular, off]))

    assert {t.name: t.depends_on for t in manifest.tests.values()} == {
        "unique_a_id": ("model.demo.a",),
        "a_matches_b": ("model.demo.a", "model.demo.b"),
    }
    assert set(manifest.models) == {"model.demo.a", "model.demo.b"}


@pytest.mark.parametrize(
    ("which", "builds"),
    [("run", True), ("build", True), (None, True), ("generate", False), ("compile", False), ("ls", False)],
)
def test_which_run_results_say_what_was_built(tmp_path: Path, which: str | None, builds: bool) -> None:
    path = tmp_path / "run_results.json"
    doc: dict[str, Any] = {"metadata": {"invocation_id": "i"}, "results": []}
    if which is not None:
        doc["args"] = {"which": which}
    path.write_text(json.dumps(doc))
    results = load_run_results(path)
    assert results is not None and results.builds is builds and results.command == which


def test_every_typed_msgspec_decode_uses_a_decoder_built_at_import() -> None:
    """msgspec builds a type's decoding info on its first typed decode; two threads doing that
    at once (syncs planned on worker threads) crashed the interpreter. So heap_dbt never passes
    ``type=`` to ``msgspec.json.decode`` or calls ``msgspec.convert``: Decoders are module-level."""
    import ast

    import heap_dbt

    offenders = []
    for path in Path(heap_dbt.__file__).parent.rglob("*.py"):
        for call in ast.walk(ast.parse(path.read_text())):
            if not isinstance(call, ast.Call):
                continue
            name = ast.unparse(call.func)
            typed = name.endswith("msgspec.json.decode") and any(k.arg == "type" for k in call.keywords)
            if typed or name.endswith("msgspec.convert"):
                offenders.append(f"{path.name}:{call.lineno}")
    assert offenders == []


def test_manifests_decode_concurrently_on_threads(tmp_path: Path) -> None:
    """The decoders are shared by threads; many concurrent decodes give the same manifest."""
    from concurrent.futures import ThreadPoolExecutor

    path = write_manifest(tmp_path, [node(f"m{i}") for i in range(50)])
    with ThreadPoolExecutor(8) as pool:
        manifests = list(pool.map(lambda _: load_manifest(path), range(64)))
    assert {tuple(sorted(m.models)) for m in manifests} == {tuple(sorted(manifests[0].models))}
    assert len(manifests[0].models) == 50


@pytest.mark.parametrize(
    ("args", "command"),
    [
        pytest.param({"invocation_command": "build"}, "build", id="fusion-command-only"),
        pytest.param({"invocation_command": "dbt build -s tag:heap"}, "build", id="fusion-command-line"),
        pytest.param({"invocation_command": "dbtf --quiet compile"}, "compile", id="fusion-compile"),
        pytest.param({"command": "run"}, "run", id="command"),
        pytest.param({"which": "run", "invocation_command": "dbt compile"}, "run", id="which-wins"),
        pytest.param({"invocation_command": ""}, None, id="empty"),
    ],
)
def test_the_command_of_results_whose_args_hold_only_the_command(
    tmp_path: Path, args: dict[str, Any], command: str | None
) -> None:
    path = tmp_path / "run_results.json"
    path.write_text(json.dumps({"metadata": {"invocation_id": "i"}, "results": [], "args": args}))
    results = load_run_results(path)
    assert results is not None and results.command == command


# --- heap blocks where heap-dbt does not read them ----------------------------------------------------


@pytest.mark.parametrize(
    ("change", "misplaced"),
    [
        pytest.param(lambda n: None, (), id="none"),
        pytest.param(lambda n: n["config"]["meta"].update(heap={}), (), id="config-meta-heap-is-read"),
        pytest.param(lambda n: n["config"].update(heap={}), ("config.heap",), id="config-heap"),
        pytest.param(lambda n: n["config"].update(HEAP={}), ("config.HEAP",), id="config-heap-upper"),
        pytest.param(lambda n: n["config"]["meta"].update(Heap={}), ("config.meta.Heap",), id="meta-case"),
        pytest.param(lambda n: n["meta"].update(Heap={}), ("config.meta.Heap",), id="top-meta-case"),
        pytest.param(
            lambda n: n["columns"].update(id={"name": "id", "meta": {"heap": {}}}),
            ("columns.id.meta.heap",),
            id="column-meta",
        ),
        pytest.param(
            lambda n: n["columns"].update(id={"name": "id", "config": {"meta": {"heap": {}}}}),
            ("columns.id.meta.heap",),
            id="column-config-meta",
        ),
        # the word elsewhere (a tag, a description) is no block
        pytest.param(lambda n: n["config"].update(tags=["heap"]), (), id="a-tag"),
    ],
)
def test_heap_blocks_heap_dbt_does_not_read_are_found(
    tmp_path: Path, change: Any, misplaced: tuple[str, ...]
) -> None:
    n = node("a")
    change(n)
    manifest = load_manifest(write_manifest(tmp_path, [n]))
    assert manifest.models["model.demo.a"].misplaced == misplaced
