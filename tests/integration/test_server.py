"""``heap-dbt serve`` end to end: signed deliveries from "dbt Cloud", syncs of a DuckDB copy of the
sample project through the fake Admin API (real `dbt build` artifacts) to the Heap emulator.

The server runs in-process (on a random loopback port, in the test's event loop) where a
test needs to look inside it, and as a real ``heap-dbt serve`` subprocess for SIGTERM and
restarts. The status page is loaded in Debian's headless chromium.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import shutil
import signal
import struct
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import duckdb
import pytest

from heap_dbt import webhooks
from heap_dbt.api import make_options, sync_cloud_async
from heap_dbt.dbt_cloud import CloudConfig
from heap_dbt.emulator import RunningEmulator
from heap_dbt.engine import open_state
from heap_dbt.report import SyncReport
from heap_dbt.server import WebhookServer, serve
from tests.cloud_artifacts import ACCOUNTS, EVENTS, USERS, Artifacts, build_cloud_artifacts
from tests.conftest import APP_ID, BIN, clean_env
from tests.fake_dbt_cloud import FakeDbtCloud, Step
from tests.warehouses import Warehouse

pytestmark = pytest.mark.integration

SECRET = "whsec-serve-test-5f1c0a9b7e"
JOB, RUN = 7, 101
CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)


def delivery(
    event_id: str, *, job: int = JOB, run: int = RUN, status: int = 10, event_type: str = "job.run.completed"
) -> bytes:
    """A delivery's body as dbt Cloud sends it (its IDs are strings)."""
    return json.dumps(
        {
            "accountId": 43,
            "webhooksID": "wsu_test",
            "eventId": event_id,
            "timestamp": "2026-01-31T19:29:35.789265936Z",
            "eventType": event_type,
            "webhookName": "heap-dbt",
            "data": {
                "jobId": str(job),
                "jobName": "Daily (dbt build)",
                "runId": str(run),
                "runStatus": {10: "Success", 20: "Error"}.get(status, "Cancelled"),
                "runStatusCode": status,
                "runStatusMessage": "None",
            },
        }
    ).encode()


def signed(body: bytes, secret: str = SECRET) -> dict[str, str]:
    return {"Authorization": webhooks.signature(secret, body), "Content-Type": "application/json"}


def add_build_run(cloud: FakeDbtCloud, project: Path, run_id: int = RUN, *, job_id: int = JOB) -> None:
    """A successful dbt Cloud run whose `dbt build` step wrote the project's real artifacts."""
    files = {name: (project / "target" / name).read_bytes() for name in ("manifest.json", "run_results.json")}
    cloud.add_run(run_id, job_id=job_id, steps=[Step("Invoke dbt with `dbt build`", files)])


def run_fetches(cloud: FakeDbtCloud) -> list[int]:
    """The runs whose details the server asked dbt Cloud for, in order."""
    prefix = f"/api/v2/accounts/{cloud.account_id}/runs/"
    return [
        int(r.path.removeprefix(prefix).strip("/"))
        for r in cloud.requests
        if r.path.startswith(prefix) and r.path.removeprefix(prefix).strip("/").isdigit()
    ]


def model_rows(project: Path) -> dict[str, int]:
    """Rows of each model the sample syncs, as dbt built them."""
    with duckdb.connect(str(project / "heap_demo.duckdb"), read_only=True) as con:
        return {
            m: int(con.execute(f"SELECT count(*) FROM main.{m}").fetchone()[0])  # type: ignore[index]
            for m in ("heap_users", "heap_accounts", "heap_purchases")
        }


def server_env(project: Path, emulator: RunningEmulator, cloud: FakeDbtCloud) -> dict[str, str]:
    return clean_env(
        HEAP_BASE_URL=emulator.url,
        HEAP_APP_ID=APP_ID,
        DBT_CLOUD_HOST=cloud.url,
        DBT_CLOUD_ACCOUNT_ID=str(cloud.account_id),
        DBT_CLOUD_API_TOKEN=cloud.token,
        DBT_CLOUD_WEBHOOK_SECRET=SECRET,
    )


# --- in-process -------------------------------------------------------------------------------


@dataclass
class Running:
    server: WebhookServer
    url: str
    logs: list[dict[str, Any]]
    syncs: list[tuple[str, str]]
    stop: asyncio.Event
    task: asyncio.Task[None]

    async def post(
        self, body: bytes | io.BytesIO, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, Any]]:
        assert headers is not None or isinstance(body, bytes)
        async with (
            aiohttp.ClientSession() as http,
            http.post(f"{self.url}/webhooks/dbt-cloud", data=body, headers=headers or signed(body)) as resp,
        ):
            return resp.status, await resp.json()

    async def get(self, path: str) -> tuple[int, str]:
        async with aiohttp.ClientSession() as http, http.get(f"{self.url}{path}") as resp:
            return resp.status, await resp.text()

    async def idle(self, timeout: float = 60) -> None:
        """Wait until no sync is pending or in flight and every delivery is persisted."""
        deadline = time.monotonic() + timeout
        while self.server.pending or self.server.in_flight or self.server._unsaved:
            assert time.monotonic() < deadline, "the server did not finish its syncs"
            await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def running_server(
    project: Path, emulator: RunningEmulator, cloud: FakeDbtCloud, *, jobs: tuple[str, ...] = (str(JOB),)
) -> AsyncIterator[Running]:
    env = server_env(project, emulator, cloud)
    options = make_options(project_dir=project, env=env)
    config = CloudConfig.resolve(env)
    logs: list[dict[str, Any]] = []
    syncs: list[tuple[str, str]] = []

    async def sync(job_id: str, run_id: str) -> SyncReport:
        syncs.append((job_id, run_id))
        return await sync_cloud_async(options, cloud=config, run_id=int(run_id))

    def state(*, writable: bool) -> Any:
        return open_state(options, writable=writable)

    server = WebhookServer(secret=SECRET, jobs=jobs, sync=sync, open_state=state, log=logs.append)
    stop = asyncio.Event()
    task = asyncio.create_task(serve(server, host="127.0.0.1", port=0, grace_seconds=5, stop=stop))
    for _ in range(400):
        if server.ready or task.done():
            break
        await asyncio.sleep(0.025)
    if task.done():
        task.result()
    url = next(e["url"] for e in logs if e["event"] == "listening")
    try:
        yield Running(server, url, logs, syncs, stop, task)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


@pytest.fixture
def cloud_run(project: Path, dbt_cloud: FakeDbtCloud) -> FakeDbtCloud:
    add_build_run(dbt_cloud, project)
    return dbt_cloud


async def test_a_signed_delivery_syncs_the_run_and_healthz_says_ready(
    project: Path, emulator: RunningEmulator, cloud_run: FakeDbtCloud
) -> None:
    async with running_server(project, emulator, cloud_run) as srv:
        assert await srv.get("/healthz") == (200, '{"status": "ok"}')
        status, answer = await srv.post(delivery("wev_1"))
        assert (status, answer) == (202, {"status": "accepted"})
        await srv.idle()

    state = emulator.emulator.snapshot()
    assert len(state["users"][APP_ID]) > 0 and len(state["events"]) > 0
    assert srv.syncs == [(str(JOB), str(RUN))]
    assert run_fetches(cloud_run) == [RUN]
    line = next(e for e in srv.logs if e.get("event_id") == "wev_1" and e["event"] == "delivery")
    assert (line["job"], line["run"], line["decision"]) == (str(JOB), str(RUN), "sync")
    done = next(e for e in srv.logs if e.get("event_id") == "wev_1" and e["event"] == "sync finished")
    total = sum(model_rows(project).values())
    assert done["outcome"].startswith(f"success: sent {total},") and done["counts"]["sent"] == total
    with open_state(make_options(project_dir=project, env=clean_env()), writable=False) as st:
        assert st is not None
        [kept] = st.deliveries(limit=5)
    assert (kept.event_id, kept.decision, kept.outcome) == ("wev_1", "sync", done["outcome"])


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"Content-Type": "application/json"}, id="missing"),
        pytest.param({"Authorization": "0" * 64}, id="forged"),
        pytest.param(
            {"Authorization": webhooks.signature("not-the-secret", delivery("wev_x"))}, id="other key"
        ),
        pytest.param({"Authorization": webhooks.signature(SECRET, delivery("wev_other"))}, id="tampered"),
    ],
)
async def test_a_bad_signature_is_refused_and_nothing_secret_is_logged(
    project: Path, emulator: RunningEmulator, cloud_run: FakeDbtCloud, headers: dict[str, str]
) -> None:
    body = delivery("wev_x")
    async with running_server(project, emulator, cloud_run) as srv:
        status, answer = await srv.post(body, headers)
        assert status == 401 and answer["status"] == "refused"
        assert srv.server.recent == {} and srv.server.pending == {}
    assert cloud_run.requests == [] and emulator.emulator.snapshot()["request_log"] == []
    logged = json.dumps(srv.logs)
    assert SECRET not in logged and webhooks.signature(SECRET, body) not in logged
    if "Authorization" in headers:
        assert headers["Authorization"] not in logged
    [refused] = [e for e in srv.logs if e["event"] == "delivery refused"]
    assert refused["status"] == 401
    assert refused["reason"] == (
        "no signature" if "Authorization" not in headers else "signature does not match the body"
    )


async def test_bad_json_after_a_valid_signature_is_400(
    project: Path, emulator: RunningEmulator, cloud_run: FakeDbtCloud
) -> None:
    async with running_server(project, emulator, cloud_run) as srv:
        status, answer = await srv.post(b"{not json")
        assert status == 400 and "not JSON" in answer["reason"]
        status, answer = await srv.post(b'{"data": {}}')
        assert status == 400 and "no eventId" in answer["reason"]
    assert cloud_run.requests == []


async def test_an_oversized_body_is_refused_before_it_is_read(
    project: Path, emulator: RunningEmulator, cloud_run: FakeDbtCloud
) -> None:
    # Valid JSON with a valid signature: refused for its size alone, so never parsed.
    body = delivery("wev_big")[:-1] + b', "padding": "' + b"x" * (1024 * 1024) + b'"}'
    async with running_server(project, emulator, cloud_run) as srv:
        status, answer = await srv.post(io.BytesIO(body), signed(body))  # sent with its Content-Length
        assert status == 413 and "over 1 MB" in answer["reason"]

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: aiohttp's read cap refuses it
            for start in range(0, len(body), 64 * 1024):
                yield body[start : start + 64 * 1024]

        async with (
            aiohttp.ClientSession() as http,
            http.post(f"{srv.url}/webhooks/dbt-cloud", data=chunks(), headers=signed(body)) as resp,
        ):
            assert resp.status == 413
        assert srv.server.recent == {}
    assert not [e for e in srv.logs if e["event"] == "delivery"]
    assert cloud_run.requests == []


async def test_a_replayed_event_id_is_answered_duplicate_and_never_syncs_twice(
    project: Path, emulator: RunningEmulator, cloud_run: FakeDbtCloud
) -> None:
    async with running_server(project, emulator, cloud_run) as srv:
        assert (await srv.post(delivery("wev_1")))[0] == 202
        await srv.idle()
        received = len(emulator.emulator.snapshot()["request_log"])
        assert await srv.post(delivery("wev_1")) == (200, {"status": "duplicate"})
        await srv.idle()
    assert srv.syncs == [(str(JOB), str(RUN))]
    assert len(emulator.emulator.snapshot()["request_log"]) == received
    assert [e["decision"] for e in srv.logs if e["event"] == "delivery"] == ["sync", "duplicate"]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        pytest.param(delivery("wev_f", status=20), "run status 20 (Error)", id="failed run"),
        pytest.param(delivery("wev_j", job=99), "job 99 is not configured", id="unknown job"),
        pytest.param(
            delivery("wev_s", event_type="job.run.started"), "event type job.run.started", id="started"
        ),
    ],
)
async def test_deliveries_that_must_not_sync_are_acknowledged_and_ignored(
    project: Path, emulator: RunningEmulator, cloud_run: FakeDbtCloud, body: bytes, reason: str
) -> None:
    async with running_server(project, emulator, cloud_run) as srv:
        status, answer = await srv.post(body)
        assert status == 200 and answer["status"] == "ignored" and reason in answer["reason"]
        await srv.idle()
    assert srv.syncs == [] and cloud_run.requests == []
    assert emulator.emulator.snapshot()["request_log"] == []
    [line] = [e for e in srv.logs if e["event"] == "delivery"]
    assert line["decision"].startswith("ignored: ") and reason in line["decision"]
    with open_state(make_options(project_dir=project, env=clean_env()), writable=False) as st:
        assert st is not None
        [kept] = st.deliveries(limit=5)
    assert reason in kept.decision and kept.outcome is None


async def test_a_burst_collapses_into_one_pending_sync_of_the_newest_run(
    project: Path, emulator: RunningEmulator, cloud_run: FakeDbtCloud
) -> None:
    for run_id in range(RUN + 1, RUN + 20):
        add_build_run(cloud_run, project, run_id)
    emulator.emulator.configure(delay=0.3)  # the first sync is still in flight while the burst arrives
    async with running_server(project, emulator, cloud_run) as srv:
        answers = [await srv.post(delivery("wev_b0", run=RUN))]
        deadline = time.monotonic() + 30
        while srv.server.in_flight is None:  # the first delivery's sync has started
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        for i in range(1, 20):
            started = time.monotonic()
            answers.append(await srv.post(delivery(f"wev_b{i}", run=RUN + i)))
            assert time.monotonic() - started < 1.0  # dbt Cloud's 10 s is never at risk
            assert len(srv.server.pending) <= 1
        assert all(a == (202, {"status": "accepted"}) for a in answers)
        assert srv.server.in_flight is not None and srv.server.in_flight.run_id == str(RUN)
        [pending] = srv.server.pending.values()
        assert pending.run_id == str(RUN + 19) and len(pending.deliveries) == 19
        await srv.idle()

    assert srv.syncs == [(str(JOB), str(RUN)), (str(JOB), str(RUN + 19))]
    assert run_fetches(cloud_run) == [RUN, RUN + 19]
    state = emulator.emulator.snapshot()
    # The second sync found every model as the first left it: Heap got each row once.
    total = sum(model_rows(project).values())
    assert sum(r["records"] for r in state["request_log"] if r["status"] == 200) == total
    finished = {e["event_id"]: e for e in srv.logs if e["event"] == "sync finished"}
    assert sorted(finished) == sorted(f"wev_b{i}" for i in range(20))
    assert finished["wev_b0"]["outcome"].startswith(f"success: sent {total},")
    assert finished["wev_b5"]["outcome"].startswith(f"success: sent 0, unchanged {total},")
    assert finished["wev_b5"]["outcome"].endswith(f"(as run {RUN + 19})")
    with open_state(make_options(project_dir=project, env=clean_env()), writable=False) as st:
        assert st is not None
        kept = {d.event_id: d for d in st.deliveries(limit=50)}
    assert {e: kept[e].outcome for e in finished} == {e: f["outcome"] for e, f in finished.items()}


async def test_a_run_dbt_cloud_does_not_know_is_an_error_outcome(
    project: Path, emulator: RunningEmulator, cloud_run: FakeDbtCloud
) -> None:
    async with running_server(project, emulator, cloud_run) as srv:
        assert (await srv.post(delivery("wev_404", run=999)))[0] == 202
        await srv.idle()
        assert (await srv.post(delivery("wev_ok")))[0] == 202  # the server goes on
        await srv.idle()
    outcomes = {e["event_id"]: e["outcome"] for e in srv.logs if e["event"] == "sync finished"}
    assert outcomes["wev_404"].startswith("error: ") and "999" in outcomes["wev_404"]
    assert outcomes["wev_ok"].startswith("success: ")
    assert cloud_run.token not in json.dumps(srv.logs)


async def test_on_stop_deliveries_are_refused_and_the_sync_in_flight_finishes_within_the_grace(
    project: Path, emulator: RunningEmulator, cloud_run: FakeDbtCloud
) -> None:
    emulator.emulator.configure(delay=0.3)
    async with running_server(project, emulator, cloud_run) as srv:
        assert (await srv.post(delivery("wev_g1")))[0] == 202
        while srv.server.in_flight is None:
            await asyncio.sleep(0.01)
        srv.stop.set()
        while not srv.server.stopping:
            await asyncio.sleep(0.01)
        status, answer = await srv.post(delivery("wev_g2"))
        assert (status, answer) == (503, {"status": "stopping"})
        assert (await srv.get("/healthz"))[0] == 503
        await asyncio.wait_for(srv.task, 30)
    [done] = [e for e in srv.logs if e["event"] == "sync finished"]
    assert done["event_id"] == "wev_g1" and done["outcome"].startswith("success: ")
    assert "wev_g2" not in srv.server._seen  # refused, so dbt Cloud retries it later


# --- the status page in a browser -------------------------------------------------------------


def chromium(tmp_path: Path, *args: str) -> list[str]:
    if CHROMIUM is None:
        pytest.skip("No chromium to load the status page in: apt-get install chromium (make test does)")
    return [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={tmp_path / 'chromium-profile'}", *args,
    ]  # fmt: skip


async def run_browser(command: list[str]) -> str:
    proc = await asyncio.create_subprocess_exec(
        *command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=clean_env()
    )
    out, err = await asyncio.wait_for(proc.communicate(), 90)
    assert proc.returncode == 0, err.decode(errors="replace")[-2000:]
    return out.decode()


@pytest.mark.timeout(180)
async def test_the_status_page_in_a_real_browser(
    project: Path, emulator: RunningEmulator, cloud_run: FakeDbtCloud, tmp_path: Path
) -> None:
    with duckdb.connect(str(project / "heap_demo.duckdb")) as con:  # one user Heap cannot take
        con.execute(
            "UPDATE main.heap_users SET email = NULL WHERE email = (SELECT min(email) FROM main.heap_users)"
        )
    total = sum(model_rows(project).values())
    async with running_server(project, emulator, cloud_run) as srv:
        assert (await srv.post(delivery("wev_page<1>")))[0] == 202
        assert (await srv.post(delivery("wev_ignored", status=20)))[0] == 200
        await srv.idle()
        users_run = next(r for r in srv.server.history if r.model == "heap_users")
        dom = await run_browser(chromium(tmp_path, "--dump-dom", f"{srv.url}/"))
        rows = await run_browser(
            chromium(tmp_path, "--dump-dom", f"{srv.url}/syncs/{users_run.run_id}/rejected")
        )
        shot = tmp_path / "status.png"
        await run_browser(chromium(tmp_path, f"--screenshot={shot}", "--window-size=1200,900", f"{srv.url}/"))

    assert "Idle: no sync in flight." in dom
    assert "wev_page&lt;1&gt;" in dom and "wev_page<1>" not in dom  # escaped
    assert "ignored: run status 20 (Error)" in dom
    assert f"partial: sent {total - 1}, unchanged 0, rejected 1, failed 0" in dom
    for model in ("heap_users", "heap_accounts", "heap_purchases"):
        assert model in dom
    assert f'href="/syncs/{users_run.run_id}/rejected"' in dom
    assert APP_ID not in dom and SECRET not in dom and cloud_run.token not in dom
    assert "<script" not in dom and "http://" not in dom.replace(srv.url, "")
    assert "heap_users" in rows and "<td>rejected</td>" in rows and "NULL" in rows
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    assert (width, height) == (1200, 900) and len(png) > 10_000


# --- a real `heap-dbt serve` process: SIGTERM and restarts ------------------------------------


class ServeProcess:
    """``heap-dbt serve`` as a user starts it, with its stderr log read line by line."""

    def __init__(self, project: Path, env: dict[str, str], *args: str) -> None:
        self.proc = subprocess.Popen(
            [str(BIN / "heap-dbt"), "serve", "--port", "0", "--dbt-cloud-job", str(JOB),
             "--project-dir", str(project), *args],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.lines: list[str] = []
        self.logs: list[dict[str, Any]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        try:
            self.url = self.wait_for(lambda e: e["event"] == "listening")["url"]
            self.wait_for(lambda e: e["event"] == "ready")
        except BaseException:
            self.proc.kill()
            self.proc.wait()
            self._reader.join(timeout=5)
            assert self.proc.stderr is not None
            self.proc.stderr.close()
            raise

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)
            with contextlib.suppress(json.JSONDecodeError):
                self.logs.append(json.loads(line))

    def wait_for(self, match: Callable[[dict[str, Any]], bool], timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [e for e in list(self.logs) if match(e)]
            if found:
                return found[0]
            if self.proc.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.05)
        raise AssertionError(f"heap-dbt serve never logged that; it wrote:\n{''.join(self.lines)[-4000:]}")

    def post(self, body: bytes) -> tuple[int, dict[str, Any]]:
        async def go() -> tuple[int, dict[str, Any]]:
            async with (
                aiohttp.ClientSession() as http,
                http.post(f"{self.url}/webhooks/dbt-cloud", data=body, headers=signed(body)) as resp,
            ):
                return resp.status, await resp.json()

        return asyncio.run(go())

    def terminate(self, timeout: float = 60) -> int:
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=5)
        return code


@contextlib.contextmanager
def serving(project: Path, env: dict[str, str], *args: str) -> Iterator[ServeProcess]:
    server = ServeProcess(project, env, *args)
    try:
        yield server
    finally:
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait()
        server._reader.join(timeout=5)
        assert server.proc.stderr is not None
        server.proc.stderr.close()


def state_rows(project: Path) -> int:
    with duckdb.connect(str(project / "heap_demo.duckdb"), read_only=True) as con:
        return int(con.execute("SELECT count(*) FROM heap_dbt.sync_state").fetchone()[0])  # type: ignore[index]


@pytest.mark.timeout(180)
def test_a_replay_after_a_restart_is_a_duplicate(
    project: Path, emulator: RunningEmulator, cloud_run: FakeDbtCloud
) -> None:
    env = server_env(project, emulator, cloud_run)
    with serving(project, env) as first:
        assert first.post(delivery("wev_r1"))[0] == 202
        first.wait_for(lambda e: e["event"] == "sync finished" and e["event_id"] == "wev_r1")
        assert first.terminate() == 0
    received = len(emulator.emulator.snapshot()["request_log"])
    fetched = len(cloud_run.requests)
    with serving(project, env) as second:
        assert second.post(delivery("wev_r1")) == (200, {"status": "duplicate"})
        assert second.terminate() == 0
    assert len(emulator.emulator.snapshot()["request_log"]) == received
    assert len(cloud_run.requests) == fetched
    assert not [e for e in second.logs if e["event"] == "resumed"]
    text = "".join(first.lines + second.lines) + (project / "target" / "heap_sync_results.json").read_text()
    assert SECRET not in text and cloud_run.token not in text and APP_ID not in text


@pytest.mark.timeout(240)
def test_sigterm_during_a_sync_stops_safely_and_a_restart_delivers_the_rest(
    project: Path, emulator: RunningEmulator, cloud_run: FakeDbtCloud
) -> None:
    env = server_env(project, emulator, cloud_run)
    emulator.emulator.configure(delay=0.25)
    slow = ("--batch-size", "1", "--concurrency", "1", "--grace-seconds", "0.5")
    with serving(project, env, *slow) as first:
        assert first.post(delivery("wev_t1"))[0] == 202
        deadline = time.monotonic() + 60
        while len(emulator.emulator.snapshot()["request_log"]) < 4:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        started = time.monotonic()
        assert first.terminate() == 0
        assert time.monotonic() - started < 20
    log = emulator.emulator.snapshot()
    delivered = sum(r["records"] for r in log["request_log"] if r["status"] == 200)
    rows = model_rows(project)
    assert 0 < delivered < sum(rows.values())
    # Only rows Heap acknowledged are recorded as sent: at most what it answered 2xx for.
    assert state_rows(project) <= delivered
    done = first.wait_for(lambda e: e["event"] == "sync finished")
    assert done["outcome"].startswith("interrupted")
    history = subprocess.run(
        [str(BIN / "heap-dbt"), "history", "--project-dir", str(project), "--json"],
        env=clean_env(), capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    assert "interrupted" in {r["outcome"] for r in json.loads(history.stdout)["runs"]}

    emulator.emulator.configure(delay=0)
    with serving(project, env) as second:  # resumes the interrupted sync on its own
        second.wait_for(lambda e: e["event"] == "resumed" and e["event_id"] == "wev_t1")
        finished = second.wait_for(lambda e: e["event"] == "sync finished" and e["event_id"] == "wev_t1")
        assert second.terminate() == 0
    assert finished["outcome"].startswith("success: ")
    state = emulator.emulator.snapshot()
    keys = [e["idempotency_key"] for e in state["events"]]
    assert len(keys) == len(set(keys)) == rows["heap_purchases"]  # no event stored twice
    assert len(state["users"][APP_ID]) == rows["heap_users"]
    assert len(state["accounts"][APP_ID]) == rows["heap_accounts"]
    assert state_rows(project) == sum(rows.values())


@pytest.mark.timeout(120)
def test_the_delivery_log_and_the_syncs_use_one_state_whatever_a_local_run_results_says(
    project: Path, emulator: RunningEmulator, cloud_run: FakeDbtCloud
) -> None:
    # Someone ran dbt here against another target: its run_results.json names "ci".
    results = project / "target" / "run_results.json"
    doc = json.loads(results.read_text())
    doc["args"]["target"] = "ci"
    results.write_text(json.dumps(doc))
    with serving(project, server_env(project, emulator, cloud_run)) as server:
        assert server.post(delivery("wev_pin"))[0] == 202
        server.wait_for(lambda e: e["event"] == "sync finished" and e["event_id"] == "wev_pin")
        assert server.terminate() == 0
    assert not (project / "heap_demo_ci.duckdb").exists()
    with duckdb.connect(str(project / "heap_demo.duckdb"), read_only=True) as con:
        assert con.execute("SELECT event_id FROM heap_dbt.webhook_deliveries").fetchall() == [("wev_pin",)]
        assert con.execute("SELECT count(*) FROM heap_dbt.sync_runs").fetchone() == (3,)


def test_serve_refuses_to_start_without_the_webhook_secret(project: Path, cloud_run: FakeDbtCloud) -> None:
    env = clean_env(
        DBT_CLOUD_API_TOKEN=cloud_run.token, DBT_CLOUD_ACCOUNT_ID="43", DBT_CLOUD_HOST=cloud_run.url
    )
    proc = subprocess.run(
        [str(BIN / "heap-dbt"), "serve", "--dbt-cloud-job", "7", "--project-dir", str(project)],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "set DBT_CLOUD_WEBHOOK_SECRET" in proc.stderr
    assert cloud_run.token not in proc.stderr + proc.stdout


async def test_on_every_warehouse_a_delivery_syncs_and_its_replay_after_a_restart_is_a_duplicate(
    wh_project: Path, warehouse: Warehouse, emulator: RunningEmulator, dbt_cloud: FakeDbtCloud
) -> None:
    add_build_run(dbt_cloud, wh_project)
    async with running_server(wh_project, emulator, dbt_cloud) as srv:
        assert (await srv.post(delivery("wev_wh")))[0] == 202
        await srv.idle()
    users = warehouse.rows(wh_project, "heap_users")
    assert len(emulator.emulator.snapshot()["users"][APP_ID]) == len(users)
    [done] = [e for e in srv.logs if e["event"] == "sync finished"]
    assert done["outcome"].startswith("success: ")
    received = len(emulator.emulator.snapshot()["request_log"])
    async with running_server(wh_project, emulator, dbt_cloud) as again:  # a new server, same state
        assert await again.post(delivery("wev_wh")) == (200, {"status": "duplicate"})
        assert [d.outcome for d in again.server.recent.values()] == [done["outcome"]]
    assert len(emulator.emulator.snapshot()["request_log"]) == received
    assert again.syncs == []


@pytest.fixture(scope="module")
def artifacts(built_sample: Path, tmp_path_factory: pytest.TempPathFactory) -> Artifacts:
    return build_cloud_artifacts(built_sample, tmp_path_factory.mktemp("cloud") / "heap_demo")


@pytest.mark.timeout(120)
async def test_a_delivery_syncs_by_the_runs_steps_not_the_last_step_or_a_local_target(
    artifacts: Artifacts, tmp_path: Path, emulator: RunningEmulator, dbt_cloud: FakeDbtCloud
) -> None:
    # The local target/ holds `dbt run -s heap_accounts` results; the run's models are in two
    # `dbt run` steps, then come a run-operation and docs generate (dbt Cloud's last step).
    local = tmp_path / "heap_demo"
    shutil.copytree(artifacts.project, local)
    dbt_cloud.add_run(RUN, job_id=JOB, steps=[
        Step("Invoke dbt with `dbt run -s heap_users`", artifacts.run_users),
        Step("Invoke dbt with `dbt run -s heap_accounts heap_purchases`", artifacts.run_others),
        Step("Invoke dbt with `dbt run-operation heap_demo_noop`", artifacts.run_operation),
        Step("Invoke dbt with `dbt docs generate`", artifacts.docs),
    ])  # fmt: skip
    async with running_server(local, emulator, dbt_cloud) as srv:
        assert (await srv.post(delivery("wev_steps")))[0] == 202
        await srv.idle()
    state = emulator.emulator.snapshot()
    assert (len(state["users"][APP_ID]), len(state["accounts"][APP_ID]), len(state["events"])) == (
        USERS, ACCOUNTS, EVENTS,
    )  # fmt: skip
    artifact_paths = [p for p in dbt_cloud.paths() if "/artifacts/" in p]
    assert any(p.endswith("run_results.json?step=4") for p in artifact_paths)
    assert any(p.endswith("run_results.json?step=5") for p in artifact_paths)
    assert not any(p.endswith("run_results.json?step=7") for p in artifact_paths)  # docs generate
    [done] = [e for e in srv.logs if e["event"] == "sync finished"]
    assert done["outcome"] == f"success: sent {USERS + ACCOUNTS + EVENTS}, unchanged 0, rejected 0, failed 0"
