"""Parity with dbt: for each selection, heap-dbt chooses the models ``dbt ls`` lists.

Every case runs through real dbt (``dbt ls --resource-type model --output name``, all in one
process by tests/dbt_ls_batch.py) and through heap-dbt on the manifest of the built sample
project. Two things are compared: heap-dbt's selection of all models (the stronger check, as
the sample has only three synced models), and the syncs ``heap-dbt ls`` would plan, which are
dbt's models restricted to those with ``meta.heap``. The sample has models without meta.heap
on both sides of the synced ones (staging below, reporting/account_health above), seeds below
those, and selectors.yml, so that lineage, depth and set operations change the answer.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from heap_dbt.emulator import RunningEmulator
from heap_dbt.errors import ConfigError
from heap_dbt.manifest import load_manifest
from heap_dbt.plan import SyncOptions, plan_specs
from heap_dbt.selectors import select
from tests.conftest import APP_ID, clean_env, heap_dbt

# Whichever test runs first pays for the module's fixture: dbt imported once, the project parsed,
# and one in-process `dbt ls` per case (about 0.2 s of CPU each, more on a busy machine).
pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

BATCH = Path(__file__).resolve().parents[1] / "dbt_ls_batch.py"

# (select, exclude, selector); select and exclude are lists of words, each passed as dbt takes them
CASES: list[tuple[list[str] | None, list[str] | None, str | None]] = [
    (None, None, None),
    # names, globs and fqn
    (["heap_users"], None, None),
    (["heap_*"], None, None),
    (["*_users"], None, None),
    (["heap_demo.marts.*"], None, None),
    (["marts"], None, None),
    (["marts.heap_users"], None, None),
    (["fqn:heap_demo.staging.*"], None, None),
    (["fqn:*"], None, None),
    # tags
    (["tag:heap"], None, None),
    (["tag:staging"], None, None),
    (["tag:report*"], None, None),
    # paths and files
    (["path:models/marts"], None, None),
    (["path:models/marts/"], None, None),
    (["path:models/staging/schema.yml"], None, None),
    (["path:models/*/heap_*.sql"], None, None),
    (["path:models/**/stg_*.sql"], None, None),
    (["path:**/reporting"], None, None),
    (["models/reporting"], None, None),
    (["path:models/mart"], None, None),
    (["heap_users.sql"], None, None),
    (["file:stg_*"], None, None),
    # config, nested meta included
    (["config.materialized:view"], None, None),
    (["config.materialized:table"], None, None),
    (["config.meta.heap.object:user"], None, None),
    (["config.meta.heap.object:event"], None, None),
    (["config.meta.heap.key:email"], None, None),
    (["config.meta.owner:growth"], None, None),
    (["config.meta.heap:*"], None, None),
    (["config.tags:heap"], None, None),
    # other methods
    (["package:heap_demo"], None, None),
    (["package:this"], None, None),
    (["resource_type:seed+2"], None, None),
    (["+test_name:relationships"], None, None),
    (["+test_type:generic"], None, None),
    # lineage: + and n+ on either side, and @
    (["+heap_users"], None, None),
    (["heap_users+"], None, None),
    (["+account_health"], None, None),
    (["1+account_health"], None, None),
    (["2+account_health"], None, None),
    (["stg_orders+"], None, None),
    (["stg_orders+1"], None, None),
    (["raw_orders+1"], None, None),
    (["raw_orders+2"], None, None),
    (["heap_users+0"], None, None),
    (["+heap_purchases+"], None, None),
    (["@heap_accounts"], None, None),
    (["@stg_accounts"], None, None),
    (["@raw_accounts"], None, None),
    # union (spaces, repeated values) and intersection (commas)
    (["heap_users heap_accounts"], None, None),
    (["heap_users", "heap_purchases"], None, None),
    (["tag:heap,+account_health"], None, None),
    (["+heap_users,tag:staging"], None, None),
    (["stg_orders+,tag:heap"], None, None),
    (["tag:heap,config.meta.heap.object:account"], None, None),
    (["tag:heap,tag:staging tag:reporting"], None, None),
    # exclude
    (["tag:heap"], ["heap_purchases"], None),
    (None, ["tag:staging"], None),
    (["+account_health"], ["+heap_users"], None),
    (["tag:heap"], ["stg_orders+,config.meta.heap.object:event"], None),
    # selectors.yml
    (None, None, "heap_marts_but_events"),
    (None, None, "fed_by_orders"),
    (None, None, "one_level_above_the_report"),
    (None, None, "user_tables"),
    (None, None, "account_lineage"),
    (None, None, "users_only"),
    (None, None, "marts_again"),
]

# dbt fails on these; heap-dbt says why in one sentence
REFUSED = ["tag:heap,bogus:x", "@heap_users+"]


def dbt_args(select_: list[str] | None, exclude: list[str] | None, selector: str | None) -> list[str]:
    args: list[str] = []
    if select_:
        args += ["--select", *select_]
    if exclude:
        args += ["--exclude", *exclude]
    if selector:
        args += ["--selector", selector]
    return args


def case_id(case: tuple[list[str] | None, list[str] | None, str | None]) -> str:
    return " ".join(dbt_args(*case)) or "no-selection"


@pytest.fixture(scope="module")
def dbt_ls(built_sample: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """The sample project (a private copy: dbt writes logs/ into it) and dbt's answer per case."""
    project = tmp_path_factory.mktemp("selectors") / "heap_demo"
    shutil.copytree(built_sample, project)
    out = project.parent / "dbt_ls.json"
    proc = subprocess.run(
        [sys.executable, str(BATCH), str(project), str(project.parent / "scratch_target"), str(out)],
        input=json.dumps([dbt_args(*c) for c in CASES] + [["--select", s] for s in REFUSED]),
        cwd=project,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    answers = {" ".join(r["args"]) or "no-selection": r for r in json.loads(out.read_text())}
    return project, answers


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_heap_dbt_selects_what_dbt_ls_lists(
    dbt_ls: tuple[Path, dict[str, Any]], case: tuple[list[str] | None, list[str] | None, str | None]
) -> None:
    project, answers = dbt_ls
    answer = answers[case_id(case)]
    assert answer["ok"], answer["error"]
    expected = set(answer["names"])
    sel, exclude, selector = case
    manifest = load_manifest(project / "target" / "manifest.json")

    chosen = select(manifest, select=sel, exclude=exclude, selector=selector)
    assert {manifest.models[uid].name for uid in chosen.models} == expected

    options = SyncOptions(
        project_dir=project, select=sel, exclude=exclude, selector=selector, env=clean_env()
    )
    if chosen.unmatched:  # dbt selects nothing for a criterion; heap-dbt calls it the usage error it is
        with pytest.raises(ConfigError, match="check the spelling") as info:
            plan_specs(options)
        assert all(u in str(info.value) for u in chosen.unmatched)
        return
    _, _, specs, problems = plan_specs(options)
    heap_models = {m.name for m in manifest.heap_models()}
    assert problems == []
    assert {s.model.name for s in specs} == expected & heap_models


def test_the_cases_exercise_every_part_of_the_sample(dbt_ls: tuple[Path, dict[str, Any]]) -> None:
    """The parity cases mean something: answers differ, some pick no synced model, some all."""
    _, answers = dbt_ls
    heap = {"heap_users", "heap_accounts", "heap_purchases"}
    picked = [frozenset(a["names"]) for a in answers.values() if a["ok"]]
    assert len(set(picked)) >= 20
    assert any(p and not p & heap for p in picked)  # only models heap-dbt does not sync
    assert any(p & heap and p - heap for p in picked)  # lineage through unsynced models
    assert any(p & heap and len(p & heap) < 3 for p in picked)


@pytest.mark.parametrize("selector", REFUSED)
def test_what_dbt_refuses_heap_dbt_refuses(dbt_ls: tuple[Path, dict[str, Any]], selector: str) -> None:
    project, answers = dbt_ls
    assert not answers[f"--select {selector}"]["ok"]
    proc = heap_dbt(project, "ls", "--select", selector)
    assert proc.returncode == 2
    assert proc.stderr.startswith("Error: ") and "Traceback" not in proc.stderr
    assert "bogus" in proc.stderr or "@" in proc.stderr


def test_ls_with_a_selector_from_selectors_yml(built_sample: Path) -> None:
    proc = heap_dbt(built_sample, "ls", "--selector", "heap_marts_but_events", "--json")
    assert proc.returncode == 0, proc.stderr
    assert sorted(r["model"] for r in json.loads(proc.stdout)["syncs"]) == ["heap_accounts", "heap_users"]


def test_the_default_selector_applies_as_in_dbt(built_sample: Path, tmp_path: Path) -> None:
    """With `default: true` on a selector, dbt ls without --select lists its models; so does heap-dbt."""
    project = tmp_path / "heap_demo"
    shutil.copytree(built_sample, project)
    selectors = project / "selectors.yml"
    text = selectors.read_text()
    marked = text.replace("  - name: fed_by_orders\n", "  - name: fed_by_orders\n    default: true\n")
    assert marked != text
    selectors.write_text(marked)
    out = tmp_path / "dbt_ls.json"
    cases = [[], ["--select", "heap_accounts"]]
    proc = subprocess.run(
        [sys.executable, str(BATCH), str(project), str(project / "target"), str(out)],
        input=json.dumps(cases),
        cwd=project,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    by_default, explicit = json.loads(out.read_text())
    assert by_default["names"] == ["account_health", "heap_purchases", "heap_users", "stg_orders"]
    assert explicit["names"] == ["heap_accounts"]

    manifest = load_manifest(project / "target" / "manifest.json")  # dbt parse just wrote it
    chosen = select(manifest)
    assert sorted(manifest.models[u].name for u in chosen.models) == by_default["names"]
    assert chosen.default_selector == "fed_by_orders"
    listed = heap_dbt(project, "ls", "--json")
    assert sorted(r["model"] for r in json.loads(listed.stdout)["syncs"]) == ["heap_purchases", "heap_users"]
    listed = heap_dbt(project, "ls", "--select", "heap_accounts", "--json")
    assert [r["model"] for r in json.loads(listed.stdout)["syncs"]] == ["heap_accounts"]


def test_sync_with_a_selector_sends_only_its_models(project: Path, emulator: RunningEmulator) -> None:
    proc = heap_dbt(project, "sync", "--selector", "users_only", base_url=emulator.url)
    assert proc.returncode == 0, proc.stderr
    state = emulator.emulator.snapshot()
    assert len(state["users"][APP_ID]) == 36
    assert state["accounts"] == {} and state["events"] == []
    results = json.loads((project / "target" / "heap_sync_results.json").read_text())
    assert [s["model"] for s in results["syncs"]] == ["heap_users"]
