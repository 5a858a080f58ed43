"""Fetch a dbt Cloud run's manifest and run results through the Admin API v2, step by step.

dbt Cloud serves the last step's artifacts by default, and the last step is often `dbt docs
generate`, whose results call every model a success. So heap-dbt reads the run's steps,
fetches ``run_results.json`` of each `dbt run`/`dbt build` step, gates on their union, and
takes the manifest of the last such step. aiohttp is imported only when a run is fetched.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from heap_dbt.clock import Clock, SystemClock
from heap_dbt.dbt_cloud_api import AdminClient
from heap_dbt.errors import (
    ConfigError,
    DbtCloudError,
    DbtCloudNotFoundError,
    ManifestError,
    NoArtifactsError,
    RunNotFinishedError,
)
from heap_dbt.manifest import RUN_COMMANDS, RunResults, parse_run_results
from heap_dbt.urls import is_loopback

DEFAULT_HOST = "cloud.getdbt.com"
SUCCESS = 10
STATUS_NAMES = {1: "queued", 2: "starting", 3: "running", 10: "success", 20: "error", 30: "cancelled"}
FINISHED = frozenset({10, 20, 30})
POLL_SECONDS = 10.0
"""How often --wait asks whether the run has finished."""


@dataclass(frozen=True)
class CloudConfig:
    """Where the dbt Cloud Admin API is and how to authenticate to it."""

    base_url: str
    """``https://cloud.getdbt.com``, a regional or cell URL, or ``http://127.0.0.1:PORT``; no
    trailing slash."""
    account_id: int
    token: str = field(repr=False)
    """A service token; never in repr, messages, logs or reports."""

    @classmethod
    def resolve(
        cls,
        env: Mapping[str, str],
        *,
        token: str | None = None,
        account_id: int | str | None = None,
        host: str | None = None,
    ) -> CloudConfig:
        """The flags given, else DBT_CLOUD_API_TOKEN, DBT_CLOUD_ACCOUNT_ID and DBT_CLOUD_HOST.

        Raises:
            ConfigError: a missing token or account, or a host heap-dbt may not send the token to.
        """
        token = (token or env.get("DBT_CLOUD_API_TOKEN") or "").strip()
        if not token:
            raise ConfigError(
                "No dbt Cloud API token; set DBT_CLOUD_API_TOKEN to a service token that can read the "
                "job's runs (or pass --dbt-cloud-token)."
            )
        if any(c.isspace() or not c.isprintable() for c in token):
            raise ConfigError(
                "The dbt Cloud API token holds spaces or control characters; set DBT_CLOUD_API_TOKEN (or "
                "--dbt-cloud-token) to the token alone, as dbt Cloud showed it."
            )
        raw_account = account_id if account_id is not None else env.get("DBT_CLOUD_ACCOUNT_ID")
        if raw_account is None or str(raw_account).strip() == "":
            raise ConfigError(
                "No dbt Cloud account; set DBT_CLOUD_ACCOUNT_ID (the number after /accounts/ in dbt "
                "Cloud's URLs) or pass --dbt-cloud-account-id."
            )
        try:
            account = int(str(raw_account).strip())
        except ValueError:
            account = 0
        if account <= 0:
            raise ConfigError(
                f"The dbt Cloud account ID {str(raw_account).strip()!r} is not a positive number; set "
                "DBT_CLOUD_ACCOUNT_ID (or --dbt-cloud-account-id) to the number after /accounts/ in "
                "dbt Cloud's URLs."
            )
        return cls(base_url=host_url(host or env.get("DBT_CLOUD_HOST") or DEFAULT_HOST), account_id=account,
                   token=token)  # fmt: skip


def host_url(host: str) -> str:
    """The base URL of a dbt Cloud host given as a name (``emea.dbt.com``) or a URL.

    Raises:
        ConfigError: not a host or http(s) URL, credentials in it, or plain http to another host.
    """
    text = host.strip()
    url = text if "://" in text else f"https://{text}"
    try:
        parts = urlsplit(url)
        name = parts.hostname
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        name = None
    if not name or parts.scheme.lower() not in ("http", "https") or parts.query or parts.fragment:
        raise ConfigError(
            f"The dbt Cloud host {text!r} is not a host name or an http(s) URL; set DBT_CLOUD_HOST (or "
            "--dbt-cloud-host) like cloud.getdbt.com or https://emea.dbt.com."
        )
    if parts.username is not None or parts.password is not None:
        raise ConfigError(
            "The dbt Cloud host holds a user name or password; remove them and give the token in "
            "DBT_CLOUD_API_TOKEN instead."
        )
    if parts.scheme.lower() == "http" and not is_loopback(name):
        raise ConfigError(
            f"The dbt Cloud host is plain http to {name}, which would send the API token unencrypted; "
            "use https://, or a loopback host (127.0.0.1, ::1 or localhost) for a local test server."
        )
    return url.rstrip("/")


@dataclass(frozen=True)
class CloudArtifacts:
    """What heap-dbt syncs from: a finished dbt Cloud run and the artifacts of its run/build steps."""

    run_id: int
    job_id: int | None
    status: int
    """dbt Cloud's run status: 10 success, 20 error, 30 cancelled."""
    manifest: bytes
    """manifest.json of the last `dbt run`/`dbt build` step."""
    run_results: RunResults
    """The union of the run/build steps' results; a later step wins for a node in several."""
    steps: tuple[int, ...]
    """The step indexes whose results were used."""

    @property
    def failed(self) -> bool:
        return self.status != SUCCESS

    @property
    def status_name(self) -> str:
        return STATUS_NAMES.get(self.status, str(self.status))


_COMMAND = re.compile(r"`dbt\s+([^`]*)`")


def step_command(name: str) -> str | None:
    """The dbt command a run step's name shows (``Invoke dbt with `dbt build` `` -> ``build``)."""
    found = _COMMAND.search(name)
    if not found:
        return None
    words = [w for w in found.group(1).split() if not w.startswith("-")]
    return words[0] if words else None


def build_steps(run: Mapping[str, Any]) -> list[int]:
    """Indexes of the run's steps that ran `dbt run` or `dbt build` and finished, in order.

    `dbt run-operation` is not a run; a step dbt Cloud never started has no results.
    """
    indexes: list[int] = []
    for step in run.get("run_steps") or []:
        if not isinstance(step, Mapping) or not isinstance(step.get("index"), int):
            continue
        if step_command(str(step.get("name") or "")) not in RUN_COMMANDS:
            continue
        if step.get("status") is not None and step.get("status") not in (10, 20):
            continue
        indexes.append(step["index"])
    return sorted(indexes)


def union_results(parts: Sequence[RunResults]) -> RunResults:
    """The results of several steps as one: a later step's status wins for a node in several.

    The invocation ID is the last step's, whose manifest heap-dbt reads; the args keep only
    the command, since the rest (dbt Cloud's paths and target) describe dbt Cloud's machine.
    """
    if not parts:
        raise ValueError("no run results to unite")
    statuses: dict[str, str] = {}
    for part in parts:
        statuses.update(part.statuses)
    last = parts[-1]
    return RunResults(
        invocation_id=last.invocation_id,
        args={"which": last.command} if last.command else {},
        statuses=statuses,
    )


def _status(run: Mapping[str, Any]) -> int:
    status = run.get("status")
    return status if isinstance(status, int) else 0


def _finished(run: Mapping[str, Any]) -> bool:
    complete = run.get("is_complete")
    return bool(complete) if isinstance(complete, bool) else _status(run) in FINISHED


async def _unknown_account(api: AdminClient, exc: DbtCloudNotFoundError) -> DbtCloudNotFoundError:
    """The 404 to report: of the account, when that is what dbt Cloud does not know."""
    if await api.account_missing():
        return DbtCloudNotFoundError(
            f"dbt Cloud at {api.cloud.base_url} has no account {api.cloud.account_id} (HTTP 404); check "
            "DBT_CLOUD_ACCOUNT_ID (or --dbt-cloud-account-id) and DBT_CLOUD_HOST.",
            status=404,
        )
    return exc


async def _run(api: AdminClient, run_id: int) -> dict[str, Any]:
    try:
        run = await api.data(
            f"runs/{run_id}/", what=f"run {run_id} in account {api.cloud.account_id}",
            params={"include_related": "['run_steps','job']"},
        )  # fmt: skip
    except DbtCloudNotFoundError as exc:
        raise await _unknown_account(api, exc) from exc
    if not isinstance(run, dict):
        raise DbtCloudNotFoundError(f"dbt Cloud returned no run {run_id}; check the run ID.")
    return run


async def _wait(api: AdminClient, run: dict[str, Any], *, wait: float | None, poll: float) -> dict[str, Any]:
    """The run once it has finished, polling every ``poll`` s for up to ``wait`` s."""
    run_id = int(run["id"])
    if _finished(run):
        return run
    name = STATUS_NAMES.get(_status(run), "in progress")
    if wait is None:
        raise RunNotFinishedError(
            f"dbt Cloud run {run_id} is still {name}; run heap-dbt again when it has finished, or "
            "pass --wait to wait for it."
        )
    deadline = api.clock.monotonic() + wait
    while not _finished(run):
        left = deadline - api.clock.monotonic()
        if left <= 0:
            raise RunNotFinishedError(
                f"dbt Cloud run {run_id} is still {STATUS_NAMES.get(_status(run), 'in progress')} after "
                f"waiting {wait:g} s; give --wait-timeout more seconds, or run heap-dbt again later."
            )
        await api.clock.sleep(min(poll, left))
        run = await _run(api, run_id)
    return run


async def _job_run(api: AdminClient, job_id: int, *, wait: float | None, poll: float) -> dict[str, Any]:
    """The job's latest successful run, after waiting for a run in progress when ``wait`` is given."""
    account = api.cloud.account_id
    try:
        await api.data(f"jobs/{job_id}/", what=f"job {job_id} in account {account}")
    except DbtCloudNotFoundError as exc:
        raise await _unknown_account(api, exc) from exc
    if wait is not None:
        newest = await api.data(
            "runs/", what=f"the runs of job {job_id}",
            params={"job_definition_id": str(job_id), "order_by": "-id", "limit": "1"},
        )  # fmt: skip
        if isinstance(newest, list) and newest and isinstance(newest[0], dict) and not _finished(newest[0]):
            await _wait(api, newest[0], wait=wait, poll=poll)
    found = await api.data(
        "runs/", what=f"the successful runs of job {job_id}",
        params={"job_definition_id": str(job_id), "status": str(SUCCESS), "order_by": "-id", "limit": "1"},
    )  # fmt: skip
    if not isinstance(found, list) or not found or not isinstance(found[0], dict):
        raise DbtCloudNotFoundError(
            f"dbt Cloud job {job_id} has no successful run yet; run it in dbt Cloud first, or pick a run "
            "with --dbt-cloud-run."
        )
    return await _run(api, int(found[0]["id"]))


async def _artifacts(api: AdminClient, run: dict[str, Any]) -> CloudArtifacts:
    run_id = int(run["id"])
    if run.get("artifacts_saved") is False:
        raise NoArtifactsError(
            f"dbt Cloud run {run_id} saved no artifacts, so heap-dbt cannot tell what it built; pick a "
            "run that saved them, or run the job again."
        )
    statuses = {s.get("index"): s.get("status") for s in run.get("run_steps") or [] if isinstance(s, dict)}
    used: list[int] = []
    parts: list[RunResults] = []
    for index in build_steps(run):
        try:
            raw = await api.raw(
                f"runs/{run_id}/artifacts/run_results.json", params={"step": str(index)},
                what=f"run_results.json of run {run_id} step {index}",
            )  # fmt: skip
        except DbtCloudNotFoundError as exc:
            if statuses.get(index) == 20:
                continue  # a step that failed before dbt wrote results built nothing
            raise _no_artifacts(run_id, f"run_results.json of step {index}") from exc
        try:
            results = parse_run_results(raw)
        except ManifestError as exc:
            raise DbtCloudError(f"dbt Cloud run {run_id} step {index}: {exc}") from exc
        if results.command is not None and results.command not in RUN_COMMANDS:
            continue  # named like a run, but its results say otherwise
        used.append(index)
        parts.append(results)
    if not parts:
        raise NoArtifactsError(
            f"dbt Cloud run {run_id} has no `dbt run` or `dbt build` step with results, so nothing says "
            "which models it built; add one to the job, or pick another run."
        )
    try:
        manifest = await api.raw(
            f"runs/{run_id}/artifacts/manifest.json", what=f"manifest.json of run {run_id} step {used[-1]}",
            params={"step": str(used[-1])},
        )  # fmt: skip
    except DbtCloudNotFoundError as exc:
        raise _no_artifacts(run_id, f"manifest.json of step {used[-1]}") from exc
    job = run.get("job_definition_id")
    return CloudArtifacts(
        run_id=run_id,
        job_id=job if isinstance(job, int) else None,
        status=_status(run),
        manifest=manifest,
        run_results=union_results(parts),
        steps=tuple(used),
    )


def _no_artifacts(run_id: int, what: str) -> NoArtifactsError:
    return NoArtifactsError(
        f"dbt Cloud run {run_id} has no {what} (HTTP 404), so heap-dbt cannot tell what it built; pick a "
        "run that saved its artifacts, or run the job again.",
        status=404,
    )


async def fetch_artifacts(
    cloud: CloudConfig,
    *,
    run_id: int | None = None,
    job_id: int | None = None,
    wait: float | None = None,
    clock: Clock | None = None,
    poll_interval: float = POLL_SECONDS,
) -> CloudArtifacts:
    """The artifacts of run ``run_id``, or of job ``job_id``'s latest successful run.

    ``wait``: seconds to wait for a run in progress to finish (polling every ``poll_interval``
    s); None refuses a run in progress. A run that failed is returned (``failed``): its
    results say which models it still built.

    Raises:
        ConfigError: neither or both of run_id and job_id.
        DbtCloudError: a subclass saying what to fix (token, IDs, in progress, artifacts, host).
    """
    if (run_id is None) == (job_id is None):
        raise ConfigError("Give exactly one of --dbt-cloud-run RUN_ID and --dbt-cloud-job JOB_ID.")
    async with AdminClient(cloud, clock=clock or SystemClock()) as api:
        if job_id is not None:
            run = await _job_run(api, job_id, wait=wait, poll=poll_interval)
        else:
            assert run_id is not None
            run = await _wait(api, await _run(api, run_id), wait=wait, poll=poll_interval)
        return await _artifacts(api, run)
