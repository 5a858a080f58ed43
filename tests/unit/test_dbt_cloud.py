"""The dbt Cloud client: configuration, which steps count, the union of their results, and errors.

HTTP goes to the fake Admin API (tests/fake_dbt_cloud.py) with canned artifacts; the real
dbt artifacts and the whole sync are in tests/integration/test_dbt_cloud_sync.py.
"""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

import pytest

from heap_dbt import __version__
from heap_dbt.cli import wait_seconds
from heap_dbt.dbt_cloud import (
    CloudConfig,
    build_steps,
    fetch_artifacts,
    host_url,
    step_command,
    union_results,
)
from heap_dbt.errors import (
    ConfigError,
    DbtCloudAuthError,
    DbtCloudError,
    DbtCloudNotFoundError,
    DbtCloudUnreachableError,
    NoArtifactsError,
    RunNotFinishedError,
)
from heap_dbt.manifest import RunResults
from tests.fake_dbt_cloud import FakeDbtCloud, Step
from tests.fakes import FakeClock

TOKEN = "dbtc_s3cr3t-t0ken-value"
ENV = {"DBT_CLOUD_API_TOKEN": TOKEN, "DBT_CLOUD_ACCOUNT_ID": "7"}


# --- CloudConfig.resolve ---------------------------------------------------------------------------


def test_resolve_reads_the_environment_with_cloud_getdbt_com_by_default() -> None:
    cloud = CloudConfig.resolve(ENV)
    assert (cloud.base_url, cloud.account_id, cloud.token) == ("https://cloud.getdbt.com", 7, TOKEN)


def test_flags_override_the_environment() -> None:
    env = {**ENV, "DBT_CLOUD_HOST": "emea.dbt.com"}
    cloud = CloudConfig.resolve(env, token="other", account_id="12", host="https://au.dbt.com/")
    assert (cloud.base_url, cloud.account_id, cloud.token) == ("https://au.dbt.com", 12, "other")
    assert CloudConfig.resolve(env).base_url == "https://emea.dbt.com"


@pytest.mark.parametrize(
    ("host", "url"),
    [
        pytest.param("cloud.getdbt.com", "https://cloud.getdbt.com", id="name"),
        pytest.param("ab123.us1.dbt.com", "https://ab123.us1.dbt.com", id="cell-name"),
        pytest.param("https://emea.dbt.com/", "https://emea.dbt.com", id="url-trailing-slash"),
        pytest.param("http://127.0.0.1:8123", "http://127.0.0.1:8123", id="loopback-http"),
        pytest.param("http://localhost:9", "http://localhost:9", id="localhost-http"),
        pytest.param("http://[::1]:9", "http://[::1]:9", id="ipv6-loopback-http"),
        pytest.param(" https://cloud.getdbt.com ", "https://cloud.getdbt.com", id="spaces"),
    ],
)
def test_host_forms(host: str, url: str) -> None:
    assert host_url(host) == url


@pytest.mark.parametrize(
    ("host", "says"),
    [
        pytest.param("http://cloud.getdbt.com", "unencrypted", id="plain-http-remote"),
        pytest.param("http://10.0.0.1:80", "unencrypted", id="plain-http-private"),
        pytest.param("ftp://cloud.getdbt.com", "not a host name", id="ftp"),
        pytest.param("https://", "not a host name", id="no-host"),
        pytest.param("https://u:p@cloud.getdbt.com", "user name or password", id="credentials"),
        pytest.param("https://cloud.getdbt.com:99999", "not a host name", id="bad-port"),
    ],
)
def test_hosts_refused(host: str, says: str) -> None:
    with pytest.raises(ConfigError, match=says) as info:
        CloudConfig.resolve(ENV, host=host)
    assert "u:p" not in str(info.value) and TOKEN not in str(info.value)


@pytest.mark.parametrize(
    ("env", "says"),
    [
        pytest.param({"DBT_CLOUD_ACCOUNT_ID": "7"}, "DBT_CLOUD_API_TOKEN", id="no-token"),
        pytest.param({"DBT_CLOUD_API_TOKEN": TOKEN}, "DBT_CLOUD_ACCOUNT_ID", id="no-account"),
        pytest.param({**ENV, "DBT_CLOUD_ACCOUNT_ID": "acme"}, "not a positive number", id="account-text"),
        pytest.param({**ENV, "DBT_CLOUD_ACCOUNT_ID": "0"}, "not a positive number", id="account-zero"),
        pytest.param({**ENV, "DBT_CLOUD_API_TOKEN": f"Token {TOKEN}"}, "spaces", id="token-prefixed"),
        pytest.param({**ENV, "DBT_CLOUD_API_TOKEN": f"{TOKEN}\r\nX-Evil: 1"}, "control", id="token-newline"),
    ],
)
def test_missing_configuration_says_what_to_set(env: dict[str, str], says: str) -> None:
    with pytest.raises(ConfigError, match=says) as info:
        CloudConfig.resolve(env)
    assert TOKEN not in str(info.value)


def test_the_token_is_not_in_repr() -> None:
    cloud = CloudConfig.resolve(ENV)
    assert TOKEN not in repr(cloud) and TOKEN not in str(cloud)


# --- steps and union --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "command"),
    [
        pytest.param("Invoke dbt with `dbt build`", "build", id="build"),
        pytest.param("Invoke dbt with `dbt run --select tag:heap`", "run", id="run-select"),
        pytest.param("Invoke dbt with `dbt --debug run`", "run", id="global-flag-first"),
        pytest.param("Invoke dbt with `dbt run-operation grant`", "run-operation", id="run-operation"),
        pytest.param("Invoke dbt with `dbt docs generate`", "docs", id="docs"),
        pytest.param("Clone git repository", None, id="clone"),
        pytest.param("Create profile from connection Postgres", None, id="profile"),
    ],
)
def test_step_command(name: str, command: str | None) -> None:
    assert step_command(name) == command


def test_build_steps_are_the_finished_run_and_build_steps() -> None:
    run = {
        "run_steps": [
            {"index": 1, "name": "Clone git repository", "status": 10},
            {"index": 2, "name": "Create profile from connection Postgres", "status": 10},
            {"index": 3, "name": "Invoke dbt with `dbt deps`", "status": 10},
            {"index": 4, "name": "Invoke dbt with `dbt run-operation stage`", "status": 10},
            {"index": 6, "name": "Invoke dbt with `dbt build -s tag:b`", "status": 20},
            {"index": 5, "name": "Invoke dbt with `dbt run -s tag:a`", "status": 10},
            {"index": 7, "name": "Invoke dbt with `dbt run -s tag:c`", "status": 30},
            {"index": 8, "name": "Invoke dbt with `dbt docs generate`", "status": 10},
        ]
    }
    assert build_steps(run) == [5, 6]


def test_union_later_step_wins_and_keeps_the_last_invocation() -> None:
    first = RunResults(
        "inv-1", {"which": "run", "project_dir": "/usr/src/dbt"}, {"a": "success", "b": "error"}
    )
    second = RunResults("inv-2", {"which": "build", "target": "prod"}, {"b": "success", "c": "skipped"})
    union = union_results([first, second])
    assert union.statuses == {"a": "success", "b": "success", "c": "skipped"}
    assert union.invocation_id == "inv-2"
    assert union.args == {"which": "build"}  # dbt Cloud's project_dir and target are gone


# --- --wait [SECONDS] --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        pytest.param(["sync", "--wait"], ["sync", "--wait"], id="bare"),
        pytest.param(["sync", "--wait", "600"], ["sync", "--wait", "--wait-timeout", "600"], id="seconds"),
        pytest.param(["sync", "--wait=90"], ["sync", "--wait", "--wait-timeout", "90"], id="equals"),
        pytest.param(["sync", "--wait", "--json"], ["sync", "--wait", "--json"], id="bare-then-option"),
        pytest.param(["run", "build", "--wait", "5"], ["run", "build", "--wait", "5"], id="not-sync"),
    ],
)
def test_wait_seconds(argv: list[str], expected: list[str]) -> None:
    assert wait_seconds(argv) == expected


# --- HTTP, against the fake Admin API (canned artifacts) -------------------------------------------------

DOCS = "Invoke dbt with `dbt docs generate`"


def results(invocation: str, which: str, statuses: dict[str, str]) -> bytes:
    return json.dumps({
        "metadata": {"invocation_id": invocation},
        "args": {"which": which, "project_dir": "/usr/app/dbt", "target": "prod"},
        "results": [{"unique_id": k, "status": v} for k, v in statuses.items()],
    }).encode()  # fmt: skip


def files(invocation: str, which: str, statuses: dict[str, str]) -> dict[str, bytes]:
    manifest = json.dumps({"metadata": {"invocation_id": invocation}, "nodes": {}}).encode()
    return {"run_results.json": results(invocation, which, statuses), "manifest.json": manifest}


def config(cloud: FakeDbtCloud, **changes: Any) -> CloudConfig:
    values = {"base_url": cloud.url, "account_id": cloud.account_id, "token": cloud.token, **changes}
    return CloudConfig(**values)


async def test_the_docs_generate_step_is_not_gated_on(dbt_cloud: FakeDbtCloud) -> None:
    dbt_cloud.add_run(5, job_id=3, steps=[
        Step("Invoke dbt with `dbt run`", files("inv-run", "run", {"m": "error"}), status=20),
        Step(DOCS, files("inv-docs", "generate", {"m": "success"})),
    ], status=20)  # fmt: skip
    got = await fetch_artifacts(config(dbt_cloud), run_id=5, clock=FakeClock())
    assert got.steps == (4,) and got.run_results.statuses == {"m": "error"}
    assert got.run_results.invocation_id == "inv-run" and b"inv-run" in got.manifest
    assert got.failed and got.status == 20 and got.job_id == 3
    assert dbt_cloud.paths() == [
        "runs/5/?include_related=['run_steps','job']",
        "runs/5/artifacts/run_results.json?step=4", "runs/5/artifacts/manifest.json?step=4",
    ]  # fmt: skip


async def test_requests_carry_the_token_accept_and_user_agent(dbt_cloud: FakeDbtCloud) -> None:
    dbt_cloud.add_run(5, job_id=3, steps=[Step("Invoke dbt with `dbt build`", files("i", "build", {}))])
    await fetch_artifacts(config(dbt_cloud), run_id=5, clock=FakeClock())
    for request in dbt_cloud.requests:
        assert request.headers["Authorization"] == f"Token {dbt_cloud.token}"
        assert request.headers["Accept"] == "application/json"
        assert request.headers["User-Agent"] == f"heap-dbt/{__version__}"


async def test_two_run_steps_are_united_and_a_later_step_wins(dbt_cloud: FakeDbtCloud) -> None:
    dbt_cloud.add_run(5, job_id=3, steps=[
        Step("Invoke dbt with `dbt run -s a b`", files("inv-1", "run", {"a": "success", "b": "error"})),
        Step("Invoke dbt with `dbt run-operation grant`", files("inv-op", "run-operation", {})),
        Step("Invoke dbt with `dbt build -s b c`", files("inv-2", "build", {"b": "success", "c": "skipped"})),
        Step(DOCS, files("inv-docs", "generate", {"a": "success", "b": "success", "c": "success"})),
    ])  # fmt: skip
    got = await fetch_artifacts(config(dbt_cloud), run_id=5, clock=FakeClock())
    assert got.steps == (4, 6)
    assert got.run_results.statuses == {"a": "success", "b": "success", "c": "skipped"}
    assert got.run_results.invocation_id == "inv-2" and b"inv-2" in got.manifest
    assert got.run_results.args == {"which": "build"}


async def test_a_step_named_run_whose_results_are_not_a_run_is_ignored(dbt_cloud: FakeDbtCloud) -> None:
    dbt_cloud.add_run(5, job_id=3, steps=[
        Step("Invoke dbt with `dbt run`", files("inv-1", "run", {"a": "success"})),
        Step("Invoke dbt with `dbt run`", files("inv-2", "compile", {"a": "error"})),
    ])  # fmt: skip
    got = await fetch_artifacts(config(dbt_cloud), run_id=5, clock=FakeClock())
    assert got.steps == (4,) and got.run_results.statuses == {"a": "success"}


async def test_a_job_takes_its_latest_successful_run(dbt_cloud: FakeDbtCloud) -> None:
    dbt_cloud.add_run(5, job_id=3, steps=[Step("Invoke dbt with `dbt build`", files("i5", "build", {}))])
    dbt_cloud.add_run(
        6, job_id=3, status=20, steps=[Step("Invoke dbt with `dbt build`", files("i6", "build", {}))]
    )
    dbt_cloud.add_run(7, job_id=4, steps=[Step("Invoke dbt with `dbt build`", files("i7", "build", {}))])
    got = await fetch_artifacts(config(dbt_cloud), job_id=3, clock=FakeClock())
    assert (got.run_id, got.job_id, got.failed) == (5, 3, False)
    assert "runs/?job_definition_id=3&limit=1&order_by=-id&status=10" in dbt_cloud.paths()


@pytest.mark.parametrize(
    ("change", "run_id", "error", "says"),
    [
        pytest.param(
            {"token": "wrong"}, 5, DbtCloudAuthError, "refused the API token (HTTP 401)", id="token"
        ),
        pytest.param({"account_id": 99}, 5, DbtCloudNotFoundError, "has no account 99", id="account"),
        pytest.param({}, 404404, DbtCloudNotFoundError, "has no run 404404 in account 43", id="run"),
    ],
)
async def test_refusals_map_to_errors(
    dbt_cloud: FakeDbtCloud, change: dict[str, Any], run_id: int, error: type[Exception], says: str
) -> None:
    dbt_cloud.add_run(5, job_id=3, steps=[Step("Invoke dbt with `dbt build`", files("i", "build", {}))])
    with pytest.raises(error) as info:
        await fetch_artifacts(config(dbt_cloud, **change), run_id=run_id, clock=FakeClock())
    assert type(info.value) is error and says in str(info.value)
    assert dbt_cloud.token not in str(info.value)


async def test_the_account_is_asked_for_only_to_explain_a_404(dbt_cloud: FakeDbtCloud) -> None:
    dbt_cloud.add_run(5, job_id=3, steps=[Step("Invoke dbt with `dbt build`", files("i", "build", {}))])
    await fetch_artifacts(config(dbt_cloud), run_id=5, clock=FakeClock())
    assert "" not in dbt_cloud.paths()  # a token that may read runs only need not read the account
    with pytest.raises(DbtCloudNotFoundError, match="has no run 6 in account 43"):
        await fetch_artifacts(config(dbt_cloud), run_id=6, clock=FakeClock())
    assert dbt_cloud.paths()[-2:] == ["runs/6/?include_related=['run_steps','job']", ""]


async def test_an_unknown_job(dbt_cloud: FakeDbtCloud) -> None:
    with pytest.raises(DbtCloudNotFoundError, match="has no job 8 in account 43"):
        await fetch_artifacts(config(dbt_cloud), job_id=8, clock=FakeClock())


async def test_another_4xx_says_what_dbt_cloud_said(dbt_cloud: FakeDbtCloud) -> None:
    dbt_cloud.fail("runs/5/", [400])
    with pytest.raises(DbtCloudError, match="HTTP 400 for run 5 in account 43: Scripted failure"):
        await fetch_artifacts(config(dbt_cloud), run_id=5, clock=FakeClock())


async def test_429_and_5xx_are_retried_with_backoff(dbt_cloud: FakeDbtCloud) -> None:
    dbt_cloud.add_run(5, job_id=3, steps=[Step("Invoke dbt with `dbt build`", files("i", "build", {}))])
    dbt_cloud.fail("runs/5/", [429, 503])
    clock = FakeClock()
    got = await fetch_artifacts(config(dbt_cloud), run_id=5, clock=clock)
    assert got.steps == (4,) and clock.sleeps == [0.5, 1.0]
    assert dbt_cloud.paths().count("runs/5/?include_related=['run_steps','job']") == 3


async def test_repeated_5xx_is_unreachable_after_a_few_attempts(dbt_cloud: FakeDbtCloud) -> None:
    dbt_cloud.fail("runs/5/", [502, 502, 502, 502])
    clock = FakeClock()
    with pytest.raises(DbtCloudUnreachableError, match="HTTP 502, 4 times, for run 5 in account 43"):
        await fetch_artifacts(config(dbt_cloud), run_id=5, clock=clock)
    assert clock.sleeps == [0.5, 1.0, 2.0]


async def test_a_run_in_progress_without_wait_suggests_wait(dbt_cloud: FakeDbtCloud) -> None:
    dbt_cloud.add_run(
        5, job_id=3, polls=1, steps=[Step("Invoke dbt with `dbt build`", files("i", "build", {}))]
    )
    with pytest.raises(RunNotFinishedError, match=r"run 5 is still running; .*pass --wait"):
        await fetch_artifacts(config(dbt_cloud), run_id=5, clock=FakeClock())


async def test_wait_polls_until_the_run_finishes(dbt_cloud: FakeDbtCloud) -> None:
    dbt_cloud.add_run(
        5, job_id=3, polls=3, steps=[Step("Invoke dbt with `dbt build`", files("i", "build", {}))]
    )
    clock = FakeClock()
    got = await fetch_artifacts(config(dbt_cloud), run_id=5, wait=100, poll_interval=10, clock=clock)
    assert got.steps == (4,) and clock.sleeps == [10, 10, 10]


async def test_wait_gives_up_after_its_timeout(dbt_cloud: FakeDbtCloud) -> None:
    dbt_cloud.add_run(
        5, job_id=3, polls=99, steps=[Step("Invoke dbt with `dbt build`", files("i", "build", {}))]
    )
    clock = FakeClock()
    with pytest.raises(RunNotFinishedError, match="still running after waiting 25 s; give --wait-timeout"):
        await fetch_artifacts(config(dbt_cloud), run_id=5, wait=25, poll_interval=10, clock=clock)
    assert clock.sleeps == [10, 10, 5]


async def test_a_job_with_wait_waits_for_its_run_in_progress(dbt_cloud: FakeDbtCloud) -> None:
    dbt_cloud.add_run(5, job_id=3, steps=[Step("Invoke dbt with `dbt build`", files("i5", "build", {}))])
    dbt_cloud.add_run(
        6, job_id=3, polls=2, steps=[Step("Invoke dbt with `dbt build`", files("i6", "build", {}))]
    )
    got = await fetch_artifacts(config(dbt_cloud), job_id=3, wait=60, poll_interval=1, clock=FakeClock())
    assert got.run_id == 6 and got.run_results.invocation_id == "i6"


async def test_artifacts_not_saved(dbt_cloud: FakeDbtCloud) -> None:
    dbt_cloud.add_run(5, job_id=3, artifacts_saved=False,
                      steps=[Step("Invoke dbt with `dbt build`", files("i", "build", {}))])  # fmt: skip
    with pytest.raises(NoArtifactsError, match="run 5 saved no artifacts"):
        await fetch_artifacts(config(dbt_cloud), run_id=5, clock=FakeClock())


async def test_a_missing_artifact_of_a_successful_step(dbt_cloud: FakeDbtCloud) -> None:
    dbt_cloud.add_run(5, job_id=3, steps=[Step("Invoke dbt with `dbt build`", {})])
    with pytest.raises(NoArtifactsError, match=r"no run_results.json of step 4 \(HTTP 404\)"):
        await fetch_artifacts(config(dbt_cloud), run_id=5, clock=FakeClock())


async def test_a_run_without_a_run_or_build_step(dbt_cloud: FakeDbtCloud) -> None:
    dbt_cloud.add_run(5, job_id=3, steps=[
        Step("Invoke dbt with `dbt run-operation stage`", files("i", "run-operation", {})),
        Step(DOCS, files("d", "generate", {"a": "success"})),
    ])  # fmt: skip
    with pytest.raises(NoArtifactsError, match="no `dbt run` or `dbt build` step"):
        await fetch_artifacts(config(dbt_cloud), run_id=5, clock=FakeClock())


async def test_a_job_without_a_successful_run(dbt_cloud: FakeDbtCloud) -> None:
    dbt_cloud.add_run(
        5, job_id=3, status=20, steps=[Step("Invoke dbt with `dbt build`", files("i", "build", {}))]
    )
    with pytest.raises(DbtCloudNotFoundError, match="job 3 has no successful run yet"):
        await fetch_artifacts(config(dbt_cloud), job_id=3, clock=FakeClock())


async def test_a_host_that_refuses_connections_is_unreachable() -> None:
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cloud = CloudConfig(base_url=f"http://127.0.0.1:{port}", account_id=7, token=TOKEN)
    clock = FakeClock()
    with pytest.raises(
        DbtCloudUnreachableError, match=f"Cannot reach dbt Cloud at http://127.0.0.1:{port}"
    ) as info:
        await fetch_artifacts(cloud, run_id=5, clock=clock)
    assert TOKEN not in str(info.value) and len(clock.sleeps) == 3


def test_run_and_job_are_exclusive() -> None:
    with pytest.raises(ConfigError, match="exactly one"):
        asyncio.run(fetch_artifacts(CloudConfig.resolve(ENV), clock=FakeClock()))
    with pytest.raises(ConfigError, match="exactly one"):
        asyncio.run(fetch_artifacts(CloudConfig.resolve(ENV), run_id=1, job_id=2, clock=FakeClock()))


def test_the_client_module_does_not_import_aiohttp_until_it_fetches() -> None:
    import subprocess
    import sys

    code = "import sys, heap_dbt.dbt_cloud, heap_dbt.api; print('aiohttp' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "False"
