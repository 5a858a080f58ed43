"""The Python API: options from keyword arguments, its exports, and the registries concurrent syncs share."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

import heap_dbt
from heap_dbt.api import make_options
from heap_dbt.errors import ConfigError
from heap_dbt.plan import SyncOptions
from heap_dbt.ratelimit import RateLimits
from heap_dbt.shared import shared_limits, state_lock
from tests.fakes import FakeClock


def test_options_from_keywords_take_strings_for_paths_and_selectors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEAP_APP_ID", "123")
    options = make_options(project_dir="/p", state_path="s.duckdb", select="tag:heap", require_tests=True)
    assert options.project_dir == Path("/p") and options.state_path == Path("s.duckdb")
    assert options.select == ["tag:heap"] and options.require_tests is True
    assert options.env["HEAP_APP_ID"] == "123"  # like the CLI, the process environment by default


def test_options_given_are_changed_not_replaced() -> None:
    base = SyncOptions(project_dir=Path("/p"), concurrency=3, env={"A": "1"})
    options = make_options(base, dry_run=True)
    assert (options.project_dir, options.concurrency, options.dry_run, options.env) == (
        Path("/p"), 3, True, {"A": "1"}
    )  # fmt: skip


def test_an_unknown_option_is_a_config_error_naming_it() -> None:
    with pytest.raises(ConfigError, match=r"heap_dbt.sync\(\) has no option 'projectdir'; its options are"):
        heap_dbt.sync(projectdir="/p")


async def test_sync_async_raises_a_typed_error_before_sending(tmp_path: Path) -> None:
    (tmp_path / "dbt_project.yml").write_text("name: x\nprofile: x\n")
    with pytest.raises(heap_dbt.ManifestError, match="No dbt manifest at"):
        await heap_dbt.sync_async(project_dir=tmp_path, env={})


def test_the_package_exports_the_api_and_every_error() -> None:
    import heap_dbt.errors as errors

    error_classes = {
        name
        for name, value in vars(errors).items()
        if isinstance(value, type) and issubclass(value, Exception)
    }
    assert error_classes <= set(heap_dbt.__all__)
    for name in heap_dbt.__all__:
        assert getattr(heap_dbt, name) is not None
    assert heap_dbt.SyncOptions is SyncOptions


def test_importing_heap_dbt_loads_neither_the_engine_nor_dbt() -> None:
    code = "import sys, heap_dbt; print(sorted(m for m in sys.modules if m.startswith(('heap_dbt.', 'dbt'))))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['heap_dbt.errors']"


def limits(per_app: int, per_identity: int, clock: FakeClock) -> RateLimits:
    return shared_limits(
        events_per_minute=per_app, events_per_identity_per_minute=per_identity, clock=clock, window=60.0
    )


async def test_syncs_of_one_app_in_one_loop_share_its_limits() -> None:
    clock = FakeClock()
    first = limits(100, 10, clock)
    again = limits(50, 10, clock)
    assert again is first and (again.events_per_minute, again.events_per_identity_per_minute) == (100, 10)
    assert first.for_app("app-1") is again.for_app("app-1")
    assert first.for_app("app-2") is not first.for_app("app-1")


def test_each_event_loop_has_its_own_limits_and_locks() -> None:
    async def grab() -> tuple[object, object]:
        return limits(1, 1, FakeClock()), state_lock("k")

    one, two = asyncio.run(grab()), asyncio.run(grab())
    assert one[0] is not two[0] and one[1] is not two[1]


async def test_one_state_has_one_lock() -> None:
    assert state_lock("/p|dev|None") is state_lock("/p|dev|None")
    assert state_lock("/p|dev|None") is not state_lock("/p|prod|None")
