"""The webhook server's queue and startup with fakes: an in-memory delivery log and a scripted sync.

The integration tests (tests/integration/test_server.py) run the real sync and state; these
pin what is hard to reach there: a restart resuming the syncs left unfinished, the state
being unreachable for a while, and the help of ``heap-dbt serve``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from typer.testing import CliRunner

from heap_dbt import webhooks
from heap_dbt.cli import app
from heap_dbt.errors import StateError
from heap_dbt.report import SyncReport
from heap_dbt.server import WebhookServer
from heap_dbt.state import DeliveryRecord, RunRecord

SECRET = "whsec-unit-0a1b2c"
NOW = dt.datetime(2026, 1, 31, 19, 29, 35, tzinfo=dt.UTC)


class MemoryState:
    """The delivery-log part of a StateStore, in memory; ``down`` makes every call fail."""

    def __init__(self, records: Sequence[DeliveryRecord] = ()) -> None:
        self.records: dict[str, DeliveryRecord] = {r.event_id: r for r in records}
        self.down = False
        self.opened = 0

    def record_deliveries(self, records: Sequence[DeliveryRecord]) -> None:
        if self.down:
            raise StateError("The state is unreachable.")
        for r in records:
            self.records[r.event_id] = r

    def deliveries(self, *, limit: int) -> list[DeliveryRecord]:
        return sorted(self.records.values(), key=lambda r: r.received_at, reverse=True)[:limit]

    def seen_event_ids(self) -> set[str]:
        return set(self.records)

    def history(self, *, limit: int) -> list[RunRecord]:
        return []

    @contextlib.contextmanager
    def open(self, *, writable: bool) -> Iterator[Any]:
        self.opened += 1
        yield self


def record(event_id: str, *, minutes: int, job: str = "7", run: str = "1", **kw: Any) -> DeliveryRecord:
    return DeliveryRecord(
        event_id=event_id, received_at=NOW + dt.timedelta(minutes=minutes), job_id=job, run_id=run,
        decision=kw.pop("decision", "sync"), **kw,
    )  # fmt: skip


def body(event_id: str, *, run: str = "5") -> bytes:
    return json.dumps(
        {"eventId": event_id, "eventType": "job.run.completed",
         "data": {"jobId": "7", "runId": run, "runStatusCode": 10}}
    ).encode()  # fmt: skip


def make(state: MemoryState, synced: list[tuple[str, str]]) -> WebhookServer:
    async def sync(job_id: str, run_id: str) -> SyncReport:
        synced.append((job_id, run_id))
        return SyncReport(dry_run=False, started_at=NOW)

    return WebhookServer(secret=SECRET, jobs={"7"}, sync=sync, open_state=state.open, log=lambda e: None)


async def until(check: Any) -> None:
    for _ in range(400):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("timed out")


async def test_a_restart_resumes_the_syncs_that_did_not_end_and_only_those() -> None:
    state = MemoryState(
        [
            record("done", minutes=1, run="1", outcome="success: sent 1, unchanged 0, rejected 0, failed 0"),
            record("cut", minutes=2, run="2", outcome="interrupted: the server stopped during the sync"),
            record("queued", minutes=3, run="3", outcome="not run: the server stopped first"),
            record("lost", minutes=4, run="4"),  # accepted, then the process died
            record("ignored", minutes=5, run="9", decision="ignored: run status 20 (Error)"),
            record("other job", minutes=6, job="8", run="9"),  # no longer configured
        ]
    )
    synced: list[tuple[str, str]] = []
    server = make(state, synced)
    worker = asyncio.create_task(server.work())
    await until(lambda: synced and not server.in_flight and not server._unsaved)
    server.stopping = True
    server._wake.set()
    await asyncio.wait_for(worker, 5)
    assert synced == [("7", "4")]  # one sync, of the newest run the three unfinished ones named
    for event_id in ("cut", "queued", "lost"):
        assert state.records[event_id].outcome is not None
        assert state.records[event_id].outcome.startswith("success: sent 0")  # type: ignore[union-attr]
    assert state.records["ignored"].outcome is None and state.records["other job"].outcome is None


async def test_healthz_waits_for_the_state_and_deliveries_wait_with_it() -> None:
    state = MemoryState()
    synced: list[tuple[str, str]] = []
    server = make(state, synced)
    async with TestClient(TestServer(server.app())) as client:
        assert (await client.get("/healthz")).status == 503
        payload = body("wev_early")
        resp = await client.post(
            "/webhooks/dbt-cloud",
            data=payload,
            headers={"Authorization": webhooks.signature(SECRET, payload)},
        )
        assert resp.status == 503 and resp.headers["Retry-After"] == "30"
        await server.load()
        assert (await client.get("/healthz")).status == 200


async def test_deliveries_the_state_could_not_take_are_written_later() -> None:
    state = MemoryState()
    synced: list[tuple[str, str]] = []
    server = make(state, synced)
    await server.load()
    state.down = True
    server.accept(webhooks.parse(body("wev_1")))
    await server._flush()
    assert state.records == {} and "wev_1" in server._unsaved
    state.down = False
    await server._flush()
    assert state.records["wev_1"].decision == "sync" and server._unsaved == {}


def test_serve_help_shows_no_secret_or_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DBT_CLOUD_API_TOKEN", "dbtc_do-not-show-me")
    monkeypatch.setenv("DBT_CLOUD_WEBHOOK_SECRET", "whsec_do-not-show-me")
    result = CliRunner().invoke(app, ["serve", "--help"])
    assert result.exit_code == 0 and "--dbt-cloud-job" in result.output and "--grace-seconds" in result.output
    assert "do-not-show-me" not in result.output
