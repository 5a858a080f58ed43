"""The dbt Cloud client: configuration, which steps count, the union of their results, and errors.

HTTP goes to aioresponses here (canned answers, no socket); the fake Admin API with real dbt
artifacts is in tests/integration/test_dbt_cloud_sync.py.
"""

from __future__ import annotations

import pytest

from heap_dbt.cli import wait_seconds
from heap_dbt.dbt_cloud import (
    CloudConfig,
    build_steps,
    host_url,
    step_command,
    union_results,
)
from heap_dbt.errors import (
    ConfigError,
)
from heap_dbt.manifest import RunResults

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
