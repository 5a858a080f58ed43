"""Run dbt in this process (dbt's ``dbtRunner``) and say what that invocation built.

dbt-core is optional (``heap-dbt[dbt]``) and slow to import, so it is imported only here,
only when ``heap-dbt run`` asks for it.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from heap_dbt.errors import ConfigError, DbtError
from heap_dbt.manifest import RUN_COMMANDS, RunResults

_VALUE_FLAGS = {
    "--project-dir": "project_dir",
    "--profiles-dir": "profiles_dir",
    "--target": "target",
    "-t": "target",
    "--target-path": "target_path",
}


@dataclass(frozen=True)
class DbtRun:
    """One dbt invocation: whether every node it ran succeeded, and its results."""

    args: tuple[str, ...]
    success: bool
    results: RunResults


def dbt_command(args: Sequence[str]) -> str | None:
    """The dbt subcommand in ``args`` (its first word that is not an option)."""
    return next((a for a in args if not a.startswith("-")), None)


def dbt_args(
    args: Sequence[str],
    *,
    project_dir: Path | None = None,
    profiles_dir: Path | None = None,
    target: str | None = None,
    target_path: Path | None = None,
) -> list[str]:
    """``args`` plus heap-dbt's project, profiles, target and target path, where dbt's own
    arguments do not already say them, so that dbt builds what heap-dbt then reads."""
    given = {
        name for a in args for flag, name in _VALUE_FLAGS.items() if a == flag or a.startswith(flag + "=")
    }
    out = list(args)
    for name, value in (
        ("project_dir", project_dir),
        ("profiles_dir", profiles_dir),
        ("target", target),
        ("target_path", target_path),
    ):
        if value is not None and name not in given:
            out += [f"--{name.replace('_', '-')}", str(value)]
    return out


def run_dbt(args: Sequence[str]) -> DbtRun:
    """Invoke ``dbt <args>`` in-process; dbt's log goes to stderr (stdout is heap-dbt's).

    Raises:
        ConfigError: the command builds no model, or dbt-core is not installed.
        DbtError: dbt could not start (a bad project, profile or flag).
    """
    command = dbt_command(args)
    if command not in RUN_COMMANDS:
        raise ConfigError(
            f"heap-dbt run syncs what `dbt run` or `dbt build` built, and `dbt {command or ''}` "
            "builds no model; write e.g. `heap-dbt run build --select tag:heap`."
        )
    try:
        from dbt.cli.main import dbtRunner  # ~2.5 s: only for heap-dbt run
    except ImportError as exc:
        raise ConfigError(
            "heap-dbt run needs dbt-core in the same environment as heap-dbt; install it with "
            "`pip install 'heap-dbt[dbt]'` and your adapter (e.g. dbt-duckdb)."
        ) from exc
    with contextlib.redirect_stdout(sys.stderr):
        try:
            outcome = dbtRunner().invoke(list(args))
        finally:
            _release_duckdb()
    if outcome.exception is not None or outcome.result is None:
        raise DbtError(
            f"dbt could not run `dbt {' '.join(args)}`: {outcome.exception}. Fix that and run again."
        )
    return DbtRun(tuple(args), bool(outcome.success), _results(outcome.result))


def _results(result: Any) -> RunResults:
    """Run results from dbt's result object, in the shape ``run_results.json`` gives them."""
    from dbt_common.invocation import get_invocation_id

    statuses = {r.node.unique_id: str(getattr(r.status, "value", r.status)) for r in result.results}
    return RunResults(invocation_id=get_invocation_id(), args=dict(result.args), statuses=statuses)


def _release_duckdb() -> None:
    """Close the DuckDB database dbt-duckdb keeps open after an invocation.

    DuckDB opens a file once per process, so heap-dbt could not open the warehouse while
    dbt-duckdb holds it.
    """
    try:
        from dbt.adapters.duckdb.connections import DuckDBConnectionManager
    except ImportError:
        return
    manager: Any = DuckDBConnectionManager  # dbt-duckdb is untyped
    env = manager._ENV
    if env is not None:
        with contextlib.suppress(Exception):
            env.close()
    manager.close_all_connections()
