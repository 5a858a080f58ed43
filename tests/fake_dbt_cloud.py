"""A fake dbt Cloud Admin API v2 on loopback: accounts, jobs, runs with steps, artifacts per step.

It answers like dbt Cloud where heap-dbt depends on it: ``{"data": ..., "status": ...}``
envelopes, 401 for a wrong token, 404 for an unknown account, job, run or artifact, the
last step's artifact when no ``step`` is given, and the latest successful run of a job
through ``runs/?job_definition_id=&status=10&order_by=-id&limit=1``. A run can stay in
progress for a number of polls (for --wait), have no saved artifacts, and any path can be
scripted to fail (429, 5xx) a few times. Every request is logged with its headers.

    with serve_fake_dbt_cloud() as cloud:
        cloud.add_run(12, job_id=3, steps=[Step("Invoke dbt with `dbt build`", files)])
        ... DBT_CLOUD_HOST=cloud.url, DBT_CLOUD_ACCOUNT_ID=cloud.account_id, DBT_CLOUD_API_TOKEN=cloud.token
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from heap_dbt.serving import serve_in_thread

ACCOUNT_ID = 43
TOKEN = "dbtc_fake-service-token-0123456789"
SETUP_STEPS = ("Clone git repository", "Create profile from connection DuckDB", "Invoke dbt with `dbt deps`")


@dataclass
class Step:
    """One run step: its name (``Invoke dbt with `dbt build` ``), status, and artifact files."""

    name: str
    files: dict[str, bytes] = field(default_factory=dict)
    """``run_results.json``, ``manifest.json``, ... as dbt wrote them in this step."""
    status: int = 10


@dataclass
class FakeRun:
    id: int
    job_id: int
    status: int
    """The status once finished: 10 success, 20 error, 30 cancelled."""
    steps: list[Step]
    artifacts_saved: bool = True
    polls: int = 0
    """GETs of this run still to answer "running" (3) before it shows ``status``."""

    def _step(self, index: int, step: Step, *, running: bool) -> dict[str, Any]:
        # While running: the last step runs and the others have not started (1, queued).
        status = (3 if index == len(self.steps) else 1) if running else step.status
        return {"id": self.id * 100 + index, "run_id": self.id, "index": index, "name": step.name,
                "status": status, "logs": ""}  # fmt: skip

    def as_json(self, *, running: bool) -> dict[str, Any]:
        status = 3 if running else self.status
        return {
            "id": self.id,
            "account_id": ACCOUNT_ID,
            "job_definition_id": self.job_id,
            "status": status,
            "status_humanized": {3: "Running", 10: "Success", 20: "Error", 30: "Cancelled"}[status],
            "is_complete": not running,
            "is_success": status == 10,
            "is_error": status == 20,
            "in_progress": running,
            "artifacts_saved": self.artifacts_saved and not running,
            "run_steps": [self._step(i, s, running=running) for i, s in enumerate(self.steps, start=1)],
        }


@dataclass(frozen=True)
class Logged:
    """One request the fake received."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]


class FakeDbtCloud:
    """The fake's state: runs by id, jobs, a request log, and scripted failures."""

    def __init__(self, *, account_id: int = ACCOUNT_ID, token: str = TOKEN) -> None:
        self.account_id = account_id
        self.token = token
        self.url = ""
        self.runs: dict[int, FakeRun] = {}
        self.jobs: set[int] = set()
        self.requests: list[Logged] = []
        self._failures: dict[str, list[int]] = {}
        self._lock = threading.Lock()

    def add_run(
        self,
        run_id: int,
        *,
        job_id: int,
        steps: list[Step],
        status: int = 10,
        artifacts_saved: bool = True,
        polls: int = 0,
        setup_steps: bool = True,
    ) -> FakeRun:
        """A run of job ``job_id``; ``setup_steps`` puts dbt Cloud's clone/profile/deps steps first."""
        before = [Step(name) for name in SETUP_STEPS] if setup_steps else []
        run = FakeRun(run_id, job_id, status, before + steps, artifacts_saved=artifacts_saved, polls=polls)
        with self._lock:
            self.runs[run_id] = run
            self.jobs.add(job_id)
        return run  # fmt: skip

    def fail(self, path: str, statuses: list[int]) -> None:
        """Answer the next requests to ``path`` (after /api/v2/accounts/N/) with these statuses."""
        with self._lock:
            self._failures[path] = list(statuses)

    def paths(self) -> list[str]:
        """The paths requested, with their query, in order (after /api/v2/accounts/N/)."""
        prefix = f"/api/v2/accounts/{self.account_id}/"
        out = []
        for r in self.requests:
            query = "&".join(f"{k}={v}" for k, v in sorted(r.query.items()))
            out.append(r.path.removeprefix(prefix) + (f"?{query}" if query else ""))
        return out

    # --- the app ---

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/api/v2/accounts/{account}/", self._account)
        app.router.add_get("/api/v2/accounts/{account}/jobs/{job}/", self._job)
        app.router.add_get("/api/v2/accounts/{account}/runs/", self._runs)
        app.router.add_get("/api/v2/accounts/{account}/runs/{run}/", self._run)
        app.router.add_get("/api/v2/accounts/{account}/runs/{run}/artifacts/{name:.+}", self._artifact)
        app.middlewares.append(self._gate)
        return app

    @web.middleware
    async def _gate(self, request: web.Request, handler: Any) -> web.StreamResponse:
        with self._lock:
            self.requests.append(
                Logged(request.method, request.path, dict(request.query), dict(request.headers))
            )
            rest = request.path.removeprefix(f"/api/v2/accounts/{self.account_id}/")
            scripted = self._failures.get(rest)
            status = scripted.pop(0) if scripted else None
        if request.headers.get("Authorization") != f"Token {self.token}":
            return _error(401, "Invalid token.")
        if status is not None:
            return _error(status, "Scripted failure.")
        if request.match_info.get("account") != str(self.account_id):
            return _error(404, "Account not found.")
        response: web.StreamResponse = await handler(request)
        return response

    async def _account(self, request: web.Request) -> web.Response:
        return _data({"id": self.account_id, "name": "Fake account"})

    async def _job(self, request: web.Request) -> web.Response:
        job = int(request.match_info["job"])
        if job not in self.jobs:
            return _error(404, "Job not found.")
        return _data({"id": job, "account_id": self.account_id, "name": f"Job {job}"})

    async def _runs(self, request: web.Request) -> web.Response:
        q = request.query
        with self._lock:
            runs = sorted(self.runs.values(), key=lambda r: r.id, reverse=q.get("order_by") == "-id")
            found = []
            for run in runs:
                running = run.polls > 0
                if "job_definition_id" in q and str(run.job_id) != q["job_definition_id"]:
                    continue
                if "status" in q and (running or str(run.status) != q["status"]):
                    continue
                found.append(run.as_json(running=running))
        return _data(found[: int(q.get("limit", "100"))])

    async def _run(self, request: web.Request) -> web.Response:
        with self._lock:
            run = self.runs.get(int(request.match_info["run"]))
            if run is None:
                return _error(404, "Run not found.")
            running = run.polls > 0
            run.polls = max(0, run.polls - 1)
            body = run.as_json(running=running)
        if "run_steps" not in request.query.get("include_related", ""):
            body.pop("run_steps")
        return _data(body)

    async def _artifact(self, request: web.Request) -> web.Response:
        with self._lock:
            run = self.runs.get(int(request.match_info["run"]))
        if run is None:
            return _error(404, "Run not found.")
        if not run.artifacts_saved or run.polls > 0:
            return _error(404, "No artifacts.")
        with_files = [i for i, s in enumerate(run.steps, start=1) if s.files]
        step = int(request.query["step"]) if "step" in request.query else (with_files or [0])[-1]
        if not 1 <= step <= len(run.steps):
            return _error(404, f"No step {step}.")
        body = run.steps[step - 1].files.get(request.match_info["name"])
        if body is None:
            return _error(404, "Artifact not found.")
        return web.Response(body=body, content_type="application/json")


def _data(value: Any) -> web.Response:
    return web.json_response({"status": {"code": 200, "is_success": True}, "data": value})


def _error(status: int, message: str) -> web.Response:
    body = {"status": {"code": status, "is_success": False, "user_message": message}, "data": None}
    return web.Response(status=status, text=json.dumps(body), content_type="application/json")


@contextlib.contextmanager
def serve_fake_dbt_cloud(cloud: FakeDbtCloud | None = None) -> Iterator[FakeDbtCloud]:
    """Serve a FakeDbtCloud on 127.0.0.1 (a random port) from a thread with its own event loop."""
    cloud = cloud if cloud is not None else FakeDbtCloud()
    with serve_in_thread(cloud.app(), name="fake-dbt-cloud") as url:
        cloud.url = url
        yield cloud
