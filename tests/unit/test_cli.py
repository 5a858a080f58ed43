"""The ``heap-dbt`` command line in-process (typer's CliRunner): help, ls, history, dry runs, exit codes.

Commands that need a project run on a copy of the dbt-built sample project; none sends
anything (dry runs only), so no Heap emulator is needed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from heap_dbt import __version__
from heap_dbt.cli import _progress_bar, app
from heap_dbt.report import RESULTS_FILE

MODELS = ["heap_users", "heap_accounts", "heap_purchases"]


@pytest.fixture(autouse=True)
def user_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No HEAP_ or DBT_ variable of the caller's leaks in, and the umask ``sync`` sets is undone."""
    for name in list(os.environ):
        if name.startswith(("HEAP_", "DBT_")):
            monkeypatch.delenv(name)
    umask = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(umask)


def run(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


# --- help and version ----------------------------------------------------------------------------


def test_help_lists_every_command() -> None:
    result = run("--help")

    assert result.exit_code == 0
    for command in ("sync", "ls", "history", "version"):
        assert command in result.stdout


def test_no_command_shows_the_help() -> None:
    result = run()

    assert "Usage:" in result.output and "sync" in result.output
    assert result.exit_code == 2  # click's code for a usage error


def test_sync_help_shows_the_flags_users_reach_for() -> None:
    result = run("sync", "--help")

    assert result.exit_code == 0
    for flag in ("--select", "--dry-run", "--full-refresh", "--app-id", "--state-path", "--json"):
        assert flag in result.stdout


def test_version() -> None:
    result = run("version")

    assert (result.exit_code, result.stdout) == (0, f"{__version__}\n")


# --- ls and history on the sample project ---------------------------------------------------------


def test_ls_lists_the_sample_project_syncs(project: Path) -> None:
    result = run("ls", "--project-dir", str(project))

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert sorted(line.split()[0] for line in lines) == sorted(MODELS)
    assert next(line for line in lines if line.startswith("heap_purchases")).split()[1] == "event"


def test_ls_json_with_a_selection(project: Path) -> None:
    result = run("ls", "--project-dir", str(project), "--select", "heap_users", "--json")

    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert [s["model"] for s in doc["syncs"]] == ["heap_users"] and doc["problems"] == []


def test_history_before_any_sync(project: Path) -> None:
    result = run("history", "--project-dir", str(project))

    assert (result.exit_code, result.stdout) == (0, "No sync has run yet.\n")


# --- sync --dry-run -------------------------------------------------------------------------------


def test_dry_run_reads_every_row_sends_nothing_and_writes_the_results_file(project: Path) -> None:
    result = run("sync", "--project-dir", str(project), "--dry-run")

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "DRY RUN: nothing was sent."
    assert sorted(line.split()[1] for line in lines if line.startswith("OK ")) == sorted(MODELS)
    assert sum(line.startswith("    sample: ") for line in lines) == len(MODELS)
    assert lines[-1].startswith("Total: read ")
    doc = json.loads((project / "target" / RESULTS_FILE).read_text())
    assert doc["dry_run"] is True and doc["success"] is True
    assert doc["totals"]["sent"] == 0
    assert doc["totals"]["read"] == doc["totals"]["would_send"] > 0
    assert (
        run("history", "--project-dir", str(project)).stdout == "No sync has run yet.\n"
    )  # no state written


def test_dry_run_json_is_the_results_document_and_masks_the_app_id(project: Path) -> None:
    result = run("sync", "--project-dir", str(project), "--dry-run", "--json", "--app-id", "8675309123457")

    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc == json.loads((project / "target" / RESULTS_FILE).read_text())
    assert {s["app_id"] for s in doc["syncs"]} == {"86*********57"}
    assert "8675309123457" not in result.output


# --- exit codes -----------------------------------------------------------------------------------


def test_a_missing_manifest_is_exit_2_with_one_sentence_and_no_traceback(tmp_path: Path) -> None:
    for command in ("ls", "sync"):
        result = run(command, "--project-dir", str(tmp_path))

        assert result.exit_code == 2
        assert result.stderr.startswith("Error: No dbt manifest at ")
        assert "Traceback" not in result.output


def test_sync_without_an_app_id_is_exit_2_and_names_every_model(project: Path) -> None:
    result = run("sync", "--project-dir", str(project))

    assert result.exit_code == 2
    for model in MODELS:
        assert f"model {model}, config.meta.heap: no Heap app_id" in result.stderr


def test_a_flag_out_of_range_is_a_usage_error(project: Path) -> None:
    result = run("sync", "--project-dir", str(project), "--concurrency", "0")

    assert result.exit_code == 2
    assert "--concurrency" in result.stderr


def test_ls_of_a_bad_meta_block_prints_the_problem_and_exits_2(project: Path) -> None:
    manifest = project / "target" / "manifest.json"
    doc = json.loads(manifest.read_text())
    node = doc["nodes"]["model.heap_demo.heap_users"]
    node["config"]["meta"]["heap"]["object"] = "usr"
    manifest.write_text(json.dumps(doc))

    result = run("ls", "--project-dir", str(project))

    assert result.exit_code == 2
    assert "Problem: model heap_users, config.meta.heap.object: unknown object 'usr'" in result.stderr


def test_an_unexpected_error_says_it_is_a_bug_and_debug_shows_the_traceback(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr("heap_dbt.engine.run_sync", broken)

    plain = run("sync", "--project-dir", str(project), "--dry-run")
    debug = run("sync", "--project-dir", str(project), "--dry-run", "--debug")

    assert plain.exit_code == debug.exit_code == 2
    assert plain.stderr == (
        "Error: unexpected RuntimeError: boom. This is a bug in heap-dbt; run again with --debug for the "
        "traceback and report it.\n"
    )
    assert "Traceback" in debug.stderr and debug.stderr.endswith(plain.stderr)


def test_a_module_that_cannot_be_imported_is_an_install_problem_not_a_bug(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise ModuleNotFoundError("No module named 'pyarrow'", name="pyarrow")

    monkeypatch.setattr("heap_dbt.engine.run_sync", broken)

    result = run("sync", "--project-dir", str(project), "--dry-run")

    assert result.exit_code == 2
    assert result.stderr.startswith("Error: the Python module pyarrow cannot be imported")
    assert "reinstall it" in result.stderr and "bug" not in result.stderr


# --- the progress bar -----------------------------------------------------------------------------


def test_no_progress_bar_when_stderr_is_not_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TTY_COMPATIBLE", "FORCE_COLOR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr("sys.stderr.isatty", lambda: False)
    assert _progress_bar(True) is None


def test_progress_bar_when_forced(monkeypatch: pytest.MonkeyPatch) -> None:
    """rich's own override (TTY_COMPATIBLE=1) still turns the bar on in a pipe."""
    monkeypatch.setenv("TTY_COMPATIBLE", "1")
    assert _progress_bar(True) is not None
    assert _progress_bar(False) is None
