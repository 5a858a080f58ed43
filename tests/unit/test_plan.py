"""Planning a sync: the manifest's heap models, their checks against real DuckDB tables, app_id and URL,
and which models a sync keeps after the last dbt run (``plan.gate_models``), and why it skips the rest."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest

from heap_dbt import heap
from heap_dbt.config import SyncSpec, parse_specs
from heap_dbt.errors import ConfigError
from heap_dbt.identity import unique_names
from heap_dbt.manifest import DataTest, Manifest, ModelNode, RunResults
from heap_dbt.plan import (
    Gate,
    SyncOptions,
    base_url,
    gate_models,
    plan_specs,
    prepare,
    resolve_app_id,
)
from heap_dbt.report import SkippedModel
from heap_dbt.warehouse.duckdb import DuckDBReader
from tests.unit.test_manifest import node, write_manifest

USER = {"object": "user", "key": "email"}
ACCOUNT = {"object": "account", "key": "account_id"}
EVENT = {"object": "event", "key": "id", "identity": "email", "event_name": "Signup", "timestamp": "at"}


def project(tmp_path: Path, models: dict[str, Any]) -> Path:
    """A dbt project dir whose target/manifest.json has one model per name (meta.heap given or None)."""
    nodes = [node(name, meta={"heap": block} if block is not None else {}) for name, block in models.items()]
    (tmp_path / "target").mkdir()
    write_manifest(tmp_path / "target", nodes)
    return tmp_path


# --- plan_specs: the manifest alone --------------------------------------------------------------


def test_plan_reads_every_heap_model_in_unique_id_order_and_skips_the_rest(tmp_path: Path) -> None:
    root = project(tmp_path, {"users": USER, "plain": None, "accounts": ACCOUNT})

    paths, manifest, found, problems = plan_specs(SyncOptions(project_dir=root))

    assert paths.project_dir == root.resolve() and paths.target_path == root.resolve() / "target"
    assert [s.model.name for s in found] == ["accounts", "users"]
    assert problems == []
    assert "model.demo.plain" in {m.unique_id for m in manifest.models.values()}


def test_plan_keeps_only_the_selected_models(tmp_path: Path) -> None:
    root = project(tmp_path, {"users": USER, "accounts": ACCOUNT})

    _, _, selected, _ = plan_specs(SyncOptions(project_dir=root, select=["users"]))
    _, _, rest, _ = plan_specs(SyncOptions(project_dir=root, exclude=["users"]))

    assert [s.model.name for s in selected] == ["users"] and [s.model.name for s in rest] == ["accounts"]


def test_plan_collects_every_bad_block_instead_of_stopping_at_the_first(tmp_path: Path) -> None:
    root = project(tmp_path, {"users": {"object": "usr", "key": "email"}, "accounts": {"object": "account"}})

    _, _, found, problems = plan_specs(SyncOptions(project_dir=root))

    assert found == []
    assert [p.split(",")[0] for p in problems] == ["model accounts", "model users"]


def test_plan_finds_the_project_through_dbt_project_dir_and_the_target_path_flag(tmp_path: Path) -> None:
    root = project(tmp_path, {"users": USER})
    (root / "target").rename(root / "elsewhere")

    paths, _, found, _ = plan_specs(
        SyncOptions(target_path=Path("elsewhere"), env={"DBT_PROJECT_DIR": str(root)})
    )

    assert paths.target_path == root.resolve() / "elsewhere" and len(found) == 1


# --- resolve_app_id and base_url -----------------------------------------------------------------


def spec(name: str, block: dict[str, Any]) -> SyncSpec:
    """The parsed sync of model ``name`` (table "dev"."main".<name>) with ``block`` as its meta.heap."""
    model = ModelNode(
        unique_id=f"model.demo.{name}", name=name, relation_name=f'"dev"."main"."{name}"',
        materialized="table", meta={"heap": block}, tags=(), fqn=("demo", name),
        original_file_path=f"models/{name}.sql",
    )  # fmt: skip
    problems: list[str] = []
    (parsed,) = parse_specs([model], problems)
    assert problems == []
    return parsed


def specs(models: dict[str, dict[str, Any]]) -> list[SyncSpec]:
    return [spec(name, block) for name, block in models.items()]


@pytest.mark.parametrize(
    ("block", "flag", "env", "expected"),
    [
        pytest.param("111", "222", {"HEAP_APP_ID": "333"}, "111", id="the-block-wins"),
        pytest.param(None, "222", {"HEAP_APP_ID": "333"}, "222", id="then-the-flag"),
        pytest.param(None, None, {"HEAP_APP_ID": "333"}, "333", id="then-the-environment"),
        pytest.param(None, None, {"HEAP_APP_ID": ""}, None, id="an-empty-variable-is-none"),
        pytest.param(None, None, {}, None, id="none"),
    ],
)
def test_app_id_comes_from_the_block_then_the_flag_then_heap_app_id(
    block: str | None, flag: str | None, env: dict[str, str], expected: str | None
) -> None:
    users = spec("users", {**USER, **({"app_id": block} if block else {})})

    assert resolve_app_id(users, SyncOptions(app_id=flag, env=env)) == expected


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        pytest.param({}, heap.US_BASE_URL, id="us-by-default"),
        pytest.param({"region": "EU"}, heap.EU_BASE_URL, id="eu-any-case"),
        pytest.param({"region": "eu", "env": {"HEAP_BASE_URL": "http://127.0.0.1:8765"}}, "http://127.0.0.1:8765",
                     id="heap-base-url-over-region"),
        pytest.param({"base_url": "https://proxy.example.com", "env": {"HEAP_BASE_URL": "http://127.0.0.1:1"}},
                     "https://proxy.example.com", id="the-option-over-heap-base-url"),
    ],
)  # fmt: skip
def test_base_url(kwargs: dict[str, Any], expected: str) -> None:
    assert base_url(SyncOptions(**kwargs)).rstrip("/") == expected


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"region": "ap"}, "Unknown --region 'ap'; use us or eu.", id="unknown-region"),
        pytest.param({"base_url": "http://heap.example.com"}, "The base URL is http://heap.example.com",
                     id="plain-http-option"),
        pytest.param({"env": {"HEAP_BASE_URL": "ftp://x"}}, "HEAP_BASE_URL is not an http(s) URL",
                     id="heap-base-url-not-http"),
    ],
)  # fmt: skip
def test_a_base_url_heap_dbt_may_not_send_to_is_a_config_error_naming_it(
    kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        base_url(SyncOptions(**kwargs))

    assert caught.value.exit_code == 2
    assert str(caught.value).startswith(message)


# --- prepare: each spec against its table -------------------------------------------------------


@pytest.fixture
def reader(tmp_path: Path) -> Iterator[DuckDBReader]:
    path = tmp_path / "dev.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE TABLE users AS SELECT 'a@x.com' AS email, 'pro' AS plan")
        con.execute("CREATE TABLE accounts AS SELECT 'acme' AS account_id")
        con.execute("CREATE TABLE events AS SELECT 1 AS id, 'a@x.com' AS email, TIMESTAMP '2024-01-01' AS at")
        con.execute("CREATE TABLE bad_events AS SELECT 1 AS id, 'a@x.com' AS email, 'yesterday' AS at")
    opened = DuckDBReader(path)
    yield opened
    opened.close()


def test_prepare_orders_users_then_accounts_then_events_and_builds_each_query(reader: DuckDBReader) -> None:
    chosen = specs({"events": EVENT, "accounts": ACCOUNT, "users": USER})
    problems: list[str] = []

    prepared = prepare(chosen, reader, SyncOptions(app_id="123"), problems)

    assert problems == []
    assert [(p.spec.object, p.spec.model.name, p.app_id) for p in prepared] == [
        ("user", "users", "123"), ("account", "accounts", "123"), ("event", "events", "123"),
    ]  # fmt: skip
    (users, *_) = prepared
    assert users.spec.properties == {"plan": "plan"}  # resolved against the table's columns
    assert [c.name for c in users.columns] == ["email", "plan"]
    assert users.query.sql and users.build(previous=None, duplicates_table=None, identities=False).sql


def test_prepare_collects_every_problem_and_keeps_only_the_syncs_that_pass(reader: DuckDBReader) -> None:
    chosen = specs({
        "users": USER,
        "gone": ACCOUNT,
        "bad_events": EVENT,
        "accounts": {**ACCOUNT, "fields": ["account_id", "nope"]},
    })  # fmt: skip
    problems: list[str] = []

    prepared = prepare(chosen, reader, SyncOptions(app_id="123"), problems)

    assert [p.spec.model.name for p in prepared] == ["users"]
    assert problems[0].startswith(
        'model gone, config.meta.heap: the table "dev"."main"."gone" does not exist; run'
    )
    assert problems[1] == (
        "model bad_events, config.meta.heap.timestamp: column 'at' is VARCHAR; "
        "cast it to a TIMESTAMP in the model."
    )
    assert problems[2].startswith("model accounts, config.meta.heap.fields") and "nope" in problems[2]
    assert len(problems) == 3


def test_prepare_without_an_app_id_is_a_problem_unless_a_dry_run(reader: DuckDBReader) -> None:
    chosen = specs({"users": USER})
    problems: list[str] = []

    prepare(chosen, reader, SyncOptions(), problems)

    assert problems == [
        "model users, config.meta.heap: no Heap app_id; "
        "pass --app-id, set HEAP_APP_ID, or set app_id in the block."
    ]

    dry: list[str] = []
    (prepared,) = prepare(chosen, reader, SyncOptions(dry_run=True), dry)
    assert dry == [] and prepared.app_id == heap.NO_APP_ID


# --- gating on the last dbt run ---------------------------------------------------------------------

RESULTS = Path("/p/target/run_results.json")


def model(name: str) -> ModelNode:
    return ModelNode(
        unique_id=f"model.demo.{name}",
        name=name,
        relation_name=f'"dev"."main"."{name}"',
        materialized="table",
        meta={"heap": {"object": "user", "key": "id"}},
        tags=(),
        fqn=("demo", name),
        original_file_path=f"models/{name}.sql",
    )


MODELS = [model("a"), model("b"), model("c"), model("d")]


def manifest(*tests: DataTest, invocation: str = "inv-1") -> Manifest:
    return Manifest(
        path=Path("/p/target/manifest.json"),
        adapter_type="duckdb",
        invocation_id=invocation,
        models={m.unique_id: m for m in MODELS},
        parent_map={},
        child_map={},
        tests={t.unique_id: t for t in tests},
    )


def results(
    statuses: dict[str, str], *, which: str | None = "build", invocation: str = "inv-1"
) -> RunResults:
    return RunResults(
        invocation_id=invocation,
        args={"which": which} if which else {},
        statuses={(k if "." in k else f"model.demo.{k}"): v for k, v in statuses.items()},
    )


def kept(gate: Gate) -> list[str]:
    return [m.name for m in gate.kept]


def test_without_run_results_every_model_is_kept() -> None:
    gate = gate_models(MODELS, manifest(), None, results_path=RESULTS)
    assert (kept(gate), gate.skipped, gate.warnings) == (["a", "b", "c", "d"], [], [])


def test_only_models_the_run_built_are_kept_and_each_skip_has_its_reason() -> None:
    run = results({"a": "success", "b": "error", "c": "skipped", "x": "success"})

    gate = gate_models(MODELS, manifest(), run, results_path=RESULTS)

    assert kept(gate) == ["a"]
    assert gate.skipped == [
        SkippedModel("b", "model.demo.b", "failed in the last dbt run"),
        SkippedModel("c", "model.demo.c", "not built in the last dbt run (dbt skipped it)"),
        SkippedModel("d", "model.demo.d", "not built in the last dbt run"),
    ]
    assert gate.warnings == []


@pytest.mark.parametrize(
    ("status", "synced"),
    [
        ("success", True),
        ("reused", True),
        ("no-op", True),
        ("error", False),
        ("skipped", False),
        ("partial success", False),
    ],
)
def test_statuses(status: str, synced: bool) -> None:
    gate = gate_models([model("a")], manifest(), results({"a": status}), results_path=RESULTS)
    assert (kept(gate) == ["a"]) is synced


def test_all_keeps_every_model_and_warns_about_the_failed_ones() -> None:
    run = results({"a": "success", "b": "error"})

    gate = gate_models(MODELS, manifest(), run, results_path=RESULTS, all_models=True)

    assert kept(gate) == ["a", "b", "c", "d"] and gate.skipped == []
    assert gate.warnings == [
        "dbt reported b as error in its last run and --all syncs it anyway; its table may be stale "
        "(rebuild it with `dbt run -s +b`)."
    ]


@pytest.mark.parametrize(
    ("which", "shown"),
    [("generate", "docs generate"), ("compile", "compile"), ("ls", "ls"), ("test", "test")],
)
def test_results_of_a_command_that_builds_nothing_are_not_run_results(which: str, shown: str) -> None:
    # docs generate reports a broken model as "success" (it compiled): it must not gate.
    run = results({"a": "success", "b": "success"}, which=which)

    gate = gate_models(MODELS, manifest(), run, results_path=RESULTS)

    assert kept(gate) == ["a", "b", "c", "d"] and gate.skipped == []
    assert gate.warnings == [
        f"{RESULTS} is from `dbt {shown}`, which builds no model, so it is not the results of a run; "
        "heap-dbt syncs every configured model."
    ]


def test_run_results_without_args_which_gate() -> None:
    gate = gate_models(MODELS, manifest(), results({"a": "success"}, which=None), results_path=RESULTS)
    assert kept(gate) == ["a"]


def test_another_invocation_warns_and_gates_on_the_results_node_list() -> None:
    run = results({"a": "success", "b": "error"}, invocation="inv-2")

    gate = gate_models(MODELS, manifest(invocation="inv-1"), run, results_path=RESULTS)

    assert kept(gate) == ["a"]
    assert [s.reason for s in gate.skipped] == [
        "failed in the last dbt run",
        "not built in the last dbt run",
        "not built in the last dbt run",
    ]
    (warning,) = gate.warnings
    assert warning.startswith(f"{RESULTS} is from another dbt invocation than /p/target/manifest.json")
    assert warning.count(". ") == 0 and warning.endswith("report as built.")  # one sentence


def test_require_tests_skips_a_model_whose_test_failed_or_errored() -> None:
    tests = (
        DataTest("test.demo.unique_a_id", "unique_a_id", ("model.demo.a",)),
        DataTest("test.demo.rel_b_to_c", "relationships_b_c", ("model.demo.b", "model.demo.c")),
        DataTest("test.demo.not_null_c_id", "not_null_c_id", ("model.demo.c",)),
        DataTest("test.demo.passes_d", "passes_d", ("model.demo.d",)),
    )
    run = results(
        {
            "a": "success", "b": "success", "c": "success", "d": "success",
            "test.demo.unique_a_id": "fail", "test.demo.rel_b_to_c": "error",
            "test.demo.not_null_c_id": "fail", "test.demo.passes_d": "warn",
        }
    )  # fmt: skip

    strict = gate_models(MODELS, manifest(*tests), run, results_path=RESULTS, require_tests=True)
    lenient = gate_models(MODELS, manifest(*tests), run, results_path=RESULTS)

    assert kept(lenient) == ["a", "b", "c", "d"]
    assert kept(strict) == ["d"]  # a warning is not a failure
    assert {s.model: s.reason for s in strict.skipped} == {
        "a": "test unique_a_id failed in the last dbt run",
        "b": "test relationships_b_c errored in the last dbt run",
        "c": "tests not_null_c_id failed, relationships_b_c errored in the last dbt run",
    }


def test_a_failed_model_is_skipped_for_its_build_not_its_tests() -> None:
    tests = (DataTest("test.demo.t", "t", ("model.demo.b",)),)
    run = results({"b": "error", "test.demo.t": "skipped"})

    gate = gate_models([model("b")], manifest(*tests), run, results_path=RESULTS, require_tests=True)

    assert [s.reason for s in gate.skipped] == ["failed in the last dbt run"]


def test_require_tests_warns_about_kept_models_whose_tests_did_not_run() -> None:
    tests = (
        DataTest("test.demo.unique_a_id", "unique_a_id", ("model.demo.a",)),
        DataTest("test.demo.unique_b_id", "unique_b_id", ("model.demo.b",)),
    )
    run = results(
        {"a": "success", "b": "success", "c": "success", "test.demo.unique_b_id": "pass"}, which="run"
    )

    gate = gate_models(MODELS[:3], manifest(*tests), run, results_path=RESULTS, require_tests=True)

    assert kept(gate) == ["a", "b", "c"]  # c has no test at all: nothing to require
    assert gate.warnings == [
        "--require-tests: the last dbt run ran none of the tests of a, so nothing checked them; run "
        "`dbt build` to build and test them together."
    ]


# --- unique_names: one sync per name ------------------------------------------------------------


def versioned(version: int, block: dict[str, Any], *, latest: int = 2) -> SyncSpec:
    model = ModelNode(
        unique_id=f"model.demo.orders.v{version}", name="orders",
        relation_name=f'"dev"."main"."orders_v{version}"',
        materialized="table", meta={"heap": block}, tags=(), fqn=("demo", "orders"),
        original_file_path=f"models/orders_v{version}.sql", version=version, latest_version=latest,
    )  # fmt: skip
    problems: list[str] = []
    (parsed,) = parse_specs([model], problems)
    return parsed


USERS = {"object": "user", "key": "email"}


def test_two_syncs_of_one_name_are_a_problem_that_names_both_and_the_fix() -> None:
    problems: list[str] = []
    kept, skipped = unique_names(specs({"a": USERS, "b": USERS, "c": {**USERS, "name": "crm"}}), problems)
    assert [s.model.name for s in kept] == ["c"] and skipped == []
    assert problems == [
        "model a, config.meta.heap and model b, config.meta.heap both declare the user sync 'user:email': "
        "they would share one state and one set of event keys. Give each its own `name:` in its block "
        "(a sync's name must not change later)."
    ]


def test_one_name_in_two_app_ids_or_two_objects_is_two_syncs() -> None:
    problems: list[str] = []
    pair = specs({"a": {**USERS, "app_id": "111"}, "b": {**USERS, "app_id": "222"}})
    kept, _ = unique_names(
        [*pair, spec("c", {"object": "account", "key": "email", "name": "user:email"})], problems
    )
    assert problems == [] and len(kept) == 3


@pytest.mark.parametrize("latest", [2, 1])
def test_of_the_versions_of_a_model_that_declare_one_sync_the_latest_syncs(latest: int) -> None:
    problems: list[str] = []
    v1, v2 = versioned(1, USERS, latest=latest), versioned(2, USERS, latest=latest)
    kept, skipped = unique_names([v1, v2], problems)
    assert problems == []
    assert [s.model.version for s in kept] == [latest]
    (other,) = skipped
    assert other.unique_id == f"model.demo.orders.v{3 - latest}"
    assert other.reason == (
        f"version {3 - latest} declares the same user sync 'user:email' as version {latest}, which syncs it"
    )
