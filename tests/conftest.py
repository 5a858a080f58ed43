"""Shared fixtures: a dbt-built copy of the sample project, the Heap emulator, and a CLI runner."""

from __future__ import annotations

import os

# Before anything imports the Snowflake connector (dbt-snowflake, fakesnow, heap-dbt's reader),
# here and in every subprocess that inherits this environment: without it the connector probes
# cloud metadata addresses (169.254.169.254, metadata.google.internal) when it connects.
os.environ.setdefault("SNOWFLAKE_DISABLE_PLATFORM_DETECTION", "true")

import shutil
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from heap_dbt.emulator import RunningEmulator, run_in_thread
from tests.fake_dbt_cloud import FakeDbtCloud, serve_fake_dbt_cloud
from tests.fakesnow_server import FakeSnow, run_fakesnow
from tests.snowflake_warehouse import Snowflake
from tests.warehouses import Warehouse, postgres_or_skip

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_dbt_project"
BIN = Path(sys.executable).parent
APP_ID = "4815162342"


def clean_env(**extra: str) -> dict[str, str]:
    """The environment for dbt and heap-dbt subprocesses, without leaks from the caller's."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("HEAP_", "DBT_")) and k != "PYTEST_CURRENT_TEST"
    }
    env["DBT_SEND_ANONYMOUS_USAGE_STATS"] = "false"
    env["DBT_PARTIAL_PARSE"] = "false"
    env.update(extra)
    return env


def dbt(project: Path, *args: str) -> None:
    """Run a real dbt command on ``project``, in this process (dbt's ``dbtRunner``): a dbt
    process of its own costs seconds of start-up each time. Fail the test with dbt's error if it
    fails. The environment is the one ``clean_env`` gives the heap-dbt processes."""
    from dbt.cli.main import dbtRunner

    env = clean_env()
    saved = {k: os.environ.get(k) for k in set(os.environ) | set(env)}
    os.environ.clear()
    os.environ.update(env)
    cwd = os.getcwd()
    try:
        os.chdir(project)  # a DuckDB profile's relative path is read from the current directory
        # As in a dbt process of its own, dbt's and its drivers' warnings (the Snowflake connector
        # warns of its own deprecated options) are not this suite's to turn into errors.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # Relative, as a user in the project directory gives them: the run results record
            # them, and a copy of the project must not point back at this one.
            result = dbtRunner().invoke([*args, "--profiles-dir", ".", "--log-level-file", "none"])
    finally:
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update({k: v for k, v in saved.items() if v is not None})
        _close_duckdb()
    if not result.success:
        pytest.fail(f"dbt {' '.join(args)} failed: {result.exception or result.result}")


def _close_duckdb() -> None:
    """Close the DuckDB file dbt-duckdb keeps open in this process between invocations: a
    heap-dbt process needs it next, and the next dbt call may be on another project's file."""
    connections = sys.modules.get("dbt.adapters.duckdb.connections")
    manager = getattr(connections, "DuckDBConnectionManager", None)
    if manager is not None and manager._ENV is not None:
        manager._ENV.close()
        manager._ENV = None


def heap_dbt(
    project: Path, *args: str, base_url: str | None = None, app_id: str | None = APP_ID, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run the real ``heap-dbt`` CLI in ``project`` as a user would."""
    extra = dict(env)
    if base_url:
        extra["HEAP_BASE_URL"] = base_url
    if app_id:
        extra["HEAP_APP_ID"] = app_id
    return subprocess.run(
        [str(BIN / "heap-dbt"), *args],
        cwd=project,
        env=clean_env(**extra),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture(scope="session")
def built_sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample project, copied and built once per session with `dbt build`."""
    project = tmp_path_factory.mktemp("sample") / "heap_demo"
    shutil.copytree(
        SAMPLE, project, ignore=shutil.ignore_patterns("target", "logs", "*.duckdb*", "dbt_packages")
    )
    dbt(project, "build", "--quiet")
    return project


@pytest.fixture(scope="session", params=["duckdb", "postgres", "snowflake"])
def warehouse(request: pytest.FixtureRequest) -> Iterator[Warehouse]:
    """Each warehouse the parametrised integration tests run on (Snowflake: fakesnow's server)."""
    wh: Warehouse
    if request.param == "duckdb":
        wh = Warehouse()
    elif request.param == "postgres":
        wh = postgres_or_skip()
    else:
        wh = Snowflake(request.getfixturevalue("fakesnow"))
    try:
        yield wh
    finally:
        wh.close()


@pytest.fixture(scope="session")
def wh_built_sample(warehouse: Warehouse, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample project built with `dbt build` in ``warehouse``, once per session."""
    project = tmp_path_factory.mktemp(f"sample-{warehouse.name}") / "heap_demo"
    shutil.copytree(
        SAMPLE, project, ignore=shutil.ignore_patterns("target", "logs", "*.duckdb*", "dbt_packages")
    )
    warehouse.setup(project)
    dbt(project, "build", "--quiet")
    return project


@pytest.fixture
def wh_project(warehouse: Warehouse, wh_built_sample: Path, tmp_path: Path) -> Path:
    """A private copy of the sample project built in ``warehouse``, its data included."""
    return warehouse.copy(wh_built_sample, tmp_path / "heap_demo")


@pytest.fixture
def project(built_sample: Path, tmp_path: Path) -> Path:
    """A private copy of the built sample project (DuckDB file and target/ included)."""
    dest = tmp_path / "heap_demo"
    shutil.copytree(built_sample, dest)
    return dest


@pytest.fixture
def emulator() -> Iterator[RunningEmulator]:
    """A fresh local Heap emulator on loopback."""
    with run_in_thread() as running:
        yield running


@pytest.fixture
def dbt_cloud() -> Iterator[FakeDbtCloud]:
    """A fresh fake dbt Cloud Admin API on loopback, with no runs yet (``add_run`` adds them)."""
    with serve_fake_dbt_cloud() as cloud:
        yield cloud


@pytest.fixture(scope="session")
def fakesnow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeSnow]:
    """fakesnow's Snowflake server on a loopback port, for the whole session."""
    with run_fakesnow(log=tmp_path_factory.mktemp("fakesnow") / "fakesnow.log") as server:
        yield server


INTEGRATION = Path(__file__).resolve().parent / "integration"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything under tests/integration/ is an integration test (``-m "not integration"`` skips it)."""
    for item in items:
        if INTEGRATION in item.path.parents:
            item.add_marker(pytest.mark.integration)
