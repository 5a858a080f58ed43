"""Which models a sync keeps after the last dbt run (``plan.gate_models``), and why it skips the rest."""

from __future__ import annotations

from pathlib import Path

import pytest

from heap_dbt.manifest import DataTest, Manifest, ModelNode, RunResults
from heap_dbt.plan import Gate, gate_models
from heap_dbt.report import SkippedModel

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
    [("success", True), ("reused", True), ("error", False), ("skipped", False), ("partial success", False)],
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
