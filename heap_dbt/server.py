"""``heap-dbt serve``: the aiohttp server dbt Cloud calls when a job finishes, and its status page.

The request handlers only check, decide and queue (``heap_dbt.webhooks``), so that dbt
Cloud gets its 2xx at once; one worker task does everything that touches the warehouse:
it loads the seen event IDs when the server starts, persists every delivery with the sync
state (``StateStore.record_deliveries``), and runs the syncs one at a time. A burst of
deliveries for one job collapses into one pending sync of its newest run, so a job has at
most one sync pending besides the one in flight. On SIGTERM the server refuses new
deliveries (503, which dbt Cloud retries), lets the sync in flight finish within the grace
period, else cancels it (the engine records only rows Heap acknowledged, and the run log
shows the run interrupted), and exits 0; the syncs it did not finish run again when it
starts next.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import signal
import sys
from collections import OrderedDict
from collections.abc import Callable, Collection, Coroutine, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol

import msgspec
from aiohttp import web

from heap_dbt import status_page, webhooks
from heap_dbt.errors import HeapDbtError
from heap_dbt.state import DeliveryRecord

if TYPE_CHECKING:
    from heap_dbt.dbt_cloud import CloudConfig
    from heap_dbt.plan import SyncOptions
    from heap_dbt.report import SyncReport
    from heap_dbt.state import RunRecord, StateStore

SyncFn = Callable[[str, str], Coroutine[Any, Any, "SyncReport"]]
"""sync(job_id, run_id): sync the models of that dbt Cloud run (``api.sync_cloud_async``)."""
LogFn = Callable[[dict[str, Any]], None]

RECENT_DELIVERIES = 50
"""Deliveries the status page shows (and reads back from the state at startup)."""
KEPT_REPORTS = 20
"""Syncs whose rejected rows stay in memory for the status page's links."""
HISTORY_RUNS = 20
RESUMABLE = ("interrupted", "not run")
"""Outcomes of accepted deliveries whose sync did not end: run again at the next start."""
CANCEL_WAIT_SECONDS = 15.0
"""After the grace period, how long a cancelled sync may take to record what Heap acknowledged."""


class StateOpener(Protocol):
    """``engine.open_state`` bound to the server's options."""

    def __call__(self, *, writable: bool) -> AbstractContextManager[StateStore | None]: ...


def json_log(entry: dict[str, Any]) -> None:
    """One JSON line on stderr: the server's structured log."""
    sys.stderr.buffer.write(msgspec.json.encode(entry) + b"\n")
    sys.stderr.flush()


@dataclass
class PendingSync:
    """A sync to run (or running) for one job: its newest run, and every delivery it answers."""

    job_id: str
    run_id: str
    deliveries: list[DeliveryRecord] = field(default_factory=list)


class WebhookServer:
    """The routes, the queue of syncs, and the one worker that touches the state."""

    def __init__(
        self,
        *,
        secret: str,
        jobs: Collection[str],
        sync: SyncFn,
        open_state: StateOpener,
        log: LogFn = json_log,
    ) -> None:
        self._secret = secret
        self.jobs = frozenset(jobs)
        self._sync = sync
        self._open_state = open_state
        self.log = log
        """Writes one structured line (the delivery log on stderr)."""
        self.ready = False
        self.stopping = False
        self.started_at = dt.datetime.now(dt.UTC)
        self._seen: set[str] = set()
        self.recent: OrderedDict[str, DeliveryRecord] = OrderedDict()
        """The last deliveries by event id, oldest first (what the status page shows)."""
        self._unsaved: dict[str, DeliveryRecord] = {}
        self.pending: dict[str, PendingSync] = {}
        """job id -> its one pending sync, in the order they were queued."""
        self.in_flight: PendingSync | None = None
        self.history: list[RunRecord] = []
        self.kept: OrderedDict[int, status_page.KeptRows] = OrderedDict()
        """Run-log run id -> the rows that sync did not deliver, for the last syncs."""
        self._wake = asyncio.Event()
        self._task: asyncio.Task[SyncReport] | None = None

    # --- routes -------------------------------------------------------------------------------

    def app(self) -> web.Application:
        # client_max_size caps what request.read() accepts, also for chunked bodies.
        app = web.Application(client_max_size=webhooks.MAX_BODY_BYTES)
        app.router.add_post("/webhooks/dbt-cloud", self._webhook)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/", self._status)
        app.router.add_get("/syncs/{run_id:[0-9]+}/rejected", self._rejected)
        return app

    async def _healthz(self, request: web.Request) -> web.Response:
        if self.stopping:
            return web.json_response({"status": "stopping"}, status=503)
        if not self.ready:
            return web.json_response({"status": "starting"}, status=503)
        return web.json_response({"status": "ok"})

    def _refuse(self, status: int, reason: str) -> web.Response:
        self.log({"event": "delivery refused", "status": status, "reason": reason})
        return web.json_response({"status": "refused", "reason": reason}, status=status)

    async def _webhook(self, request: web.Request) -> web.Response:
        if request.content_length is not None and request.content_length > webhooks.MAX_BODY_BYTES:
            return self._refuse(413, f"body of {request.content_length:,} bytes is over 1 MB")
        if self.stopping or not self.ready:
            state = "stopping" if self.stopping else "starting"
            self.log({"event": "delivery refused", "status": 503, "reason": f"server {state}"})
            return web.json_response({"status": state}, status=503, headers={"Retry-After": "30"})
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return self._refuse(413, "body is over 1 MB")
        if not webhooks.verify(self._secret, body, request.headers.get("Authorization")):
            missing = "Authorization" not in request.headers
            return self._refuse(401, "no signature" if missing else "signature does not match the body")
        try:
            event = webhooks.parse(body)
        except webhooks.BadDeliveryError as exc:
            return self._refuse(400, str(exc))
        return self.accept(event)

    def accept(self, event: webhooks.Event) -> web.Response:
        """Decide on a verified delivery and queue what follows; never waits for I/O."""
        entry = {"event": "delivery", "event_id": event.event_id, "job": event.job_id, "run": event.run_id}
        if event.event_id in self._seen:
            self.log({**entry, "decision": "duplicate"})
            return web.json_response({"status": "duplicate"})
        self._seen.add(event.event_id)
        decision = webhooks.decide(event, jobs=self.jobs)
        record = DeliveryRecord(
            event_id=event.event_id,
            received_at=dt.datetime.now(dt.UTC),
            job_id=event.job_id,
            run_id=event.run_id,
            decision=decision,
        )
        self._keep(record)
        self.log({**entry, "decision": decision})
        if decision != webhooks.SYNC:
            return web.json_response({"status": "ignored", "reason": decision.removeprefix("ignored: ")})
        self._queue(record)
        return web.json_response({"status": "accepted"}, status=202)

    def _queue(self, record: DeliveryRecord) -> None:
        """Add a delivery to its job's pending sync, which syncs the newest run it was told of."""
        pending = self.pending.get(record.job_id)
        if pending is None:
            self.pending[record.job_id] = PendingSync(record.job_id, record.run_id, [record])
        else:
            pending.deliveries.append(record)
            if int(record.run_id) > int(pending.run_id):
                pending.run_id = record.run_id
        self._wake.set()

    def _keep(self, record: DeliveryRecord) -> None:
        """Remember a delivery (or its new outcome) for the page, and for the worker to persist."""
        self.recent[record.event_id] = record
        self.recent.move_to_end(record.event_id)
        while len(self.recent) > RECENT_DELIVERIES:
            self.recent.popitem(last=False)
        self._unsaved[record.event_id] = record
        self._wake.set()

    async def _status(self, request: web.Request) -> web.Response:
        return web.Response(text=status_page.render(self.view()), content_type="text/html", charset="utf-8")

    async def _rejected(self, request: web.Request) -> web.Response:
        run_id = int(request.match_info["run_id"])
        kept = self.kept.get(run_id)
        html = status_page.render_rows(run_id, kept, kept_runs=len(self.kept))
        return web.Response(
            text=html, content_type="text/html", charset="utf-8", status=200 if kept is not None else 404
        )

    def view(self) -> status_page.View:
        return status_page.View(
            started_at=self.started_at,
            jobs=sorted(self.jobs),
            ready=self.ready,
            stopping=self.stopping,
            deliveries=list(reversed(self.recent.values())),
            history=self.history,
            kept=set(self.kept),
            in_flight=(self.in_flight.job_id, self.in_flight.run_id) if self.in_flight else None,
            pending=[(p.job_id, p.run_id, len(p.deliveries)) for p in self.pending.values()],
        )

    # --- the worker: the only code that touches the state ---------------------------------------

    async def _state(self, use: Callable[[StateStore], Any]) -> Any:
        def work() -> Any:
            with self._open_state(writable=True) as state:
                assert state is not None  # a writable state always opens
                return use(state)

        return await asyncio.to_thread(work)

    async def load(self) -> None:
        """Read the seen event IDs, the last deliveries and runs; queue the syncs left unfinished."""

        def read(state: StateStore) -> tuple[set[str], list[DeliveryRecord], list[RunRecord]]:
            return (
                state.seen_event_ids(),
                state.deliveries(limit=RECENT_DELIVERIES),
                state.history(limit=HISTORY_RUNS),
            )

        seen, last, self.history = await self._state(read)
        self._seen |= seen
        for record in reversed(last):  # oldest first
            self.recent[record.event_id] = record
        for record in reversed(last):
            unfinished = record.outcome is None or record.outcome.startswith(RESUMABLE)
            if record.decision == webhooks.SYNC and unfinished and record.job_id in self.jobs:
                self._queue(record)
                self.log({"event": "resumed", "event_id": record.event_id, "job": record.job_id,
                           "run": record.run_id, "decision": webhooks.SYNC,
                           "reason": f"its sync did not end ({record.outcome or 'no outcome'})"})  # fmt: skip
        self.ready = True
        self.log({"event": "ready", "seen_event_ids": len(self._seen), "jobs": sorted(self.jobs)})

    async def _flush(self) -> None:
        if not self._unsaved:
            return
        records, self._unsaved = list(self._unsaved.values()), {}
        try:
            await self._state(lambda state: state.record_deliveries(records))
        except Exception as exc:  # the server goes on: a state that is down for a while
            for r in records:  # try again after the next sync; the page still shows them
                self._unsaved.setdefault(r.event_id, r)
            self.log({"event": "state error", "error": _error_text(exc)})

    async def work(self) -> None:
        """Persist deliveries and run the pending syncs, one at a time, until the server stops."""
        if not self.ready:
            await self.load()
        while True:
            await self._flush()
            if self.stopping:
                break
            if not self.pending:
                self._wake.clear()
                await self._wake.wait()
                continue
            job_id = next(iter(self.pending))
            await self._run(self.pending.pop(job_id))
        for p in self.pending.values():
            self._finish(p, "not run: the server stopped first; it runs when the server starts again")
        self.pending.clear()
        await self._flush()

    async def _run(self, pending: PendingSync) -> None:
        self.in_flight = pending
        self.log({"event": "sync started", "job": pending.job_id, "run": pending.run_id,
                   "event_ids": [d.event_id for d in pending.deliveries]})  # fmt: skip
        counts: dict[str, int] = {}
        self._task = task = asyncio.create_task(self._sync(pending.job_id, pending.run_id))
        await asyncio.wait([task])
        self._task = None
        if task.cancelled():
            outcome = "interrupted: the server stopped during the sync; it runs again when the server starts"
        elif (exc := task.exception()) is not None:
            outcome = f"error: {_error_text(exc)}"
        else:
            report = task.result()
            outcome = webhooks.outcome_of(report)
            counts = report.as_dict()["totals"]
            self._keep_rows(report)
        self._finish(pending, outcome, counts=counts)
        await self._flush()
        try:
            self.history = await self._state(lambda state: state.history(limit=HISTORY_RUNS))
        except Exception as exc:  # the page shows the run log it read last
            self.log({"event": "state error", "error": _error_text(exc)})
        self.in_flight = None  # only now: the page's run log includes this sync

    def _keep_rows(self, report: SyncReport) -> None:
        for s in report.syncs:
            if s.run_id:
                self.kept[s.run_id] = status_page.KeptRows(s.model, s.meta_path, s.rejections, s.failures)
        while len(self.kept) > KEPT_REPORTS:
            self.kept.popitem(last=False)

    def _finish(self, pending: PendingSync, outcome: str, *, counts: dict[str, int] | None = None) -> None:
        """Record the outcome of every delivery the sync answered, and log a line for each."""
        for record in pending.deliveries:
            text = outcome if record.run_id == pending.run_id else f"{outcome} (as run {pending.run_id})"
            self._keep(replace(record, outcome=text))
            self.log({"event": "sync finished", "event_id": record.event_id, "job": pending.job_id,
                       "run": record.run_id, "synced_run": pending.run_id, "decision": record.decision,
                       "outcome": text, "counts": counts or {}})  # fmt: skip

    async def shutdown(self, *, grace_seconds: float) -> None:
        """Refuse deliveries; give the sync in flight ``grace_seconds``, then cancel it."""
        self.stopping = True
        self._wake.set()
        task = self._task
        if task is None:
            return
        self.log({"event": "stopping", "grace_seconds": grace_seconds,
                   "in_flight": {"job": self.in_flight.job_id, "run": self.in_flight.run_id}
                   if self.in_flight else None})  # fmt: skip
        done, _ = await asyncio.wait([task], timeout=grace_seconds)
        if not done:
            task.cancel()


async def serve(
    server: WebhookServer,
    *,
    host: str,
    port: int,
    grace_seconds: float,
    stop: asyncio.Event | None = None,
) -> None:
    """Serve until SIGTERM or SIGINT (or until ``stop`` is set, which replaces the signals),
    then shut down as the module says.

    Raises:
        HeapDbtError: the state could not be read at startup (nothing was accepted).
    """
    loop = asyncio.get_running_loop()
    signals = (signal.SIGTERM, signal.SIGINT) if stop is None else ()
    stop = stop or asyncio.Event()
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    runner = web.AppRunner(server.app(), access_log=None, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound = runner.addresses[0]
        server.log({"event": "listening", "url": f"http://{_host(bound[0])}:{bound[1]}"})
        worker = asyncio.create_task(server.work())
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait([worker, stopped], return_when=asyncio.FIRST_COMPLETED)
        if worker.done():
            stopped.cancel()
            worker.result()  # the startup failed: raise its error
            return
        server.log({"event": "signal", "action": "stopping"})
        await server.shutdown(grace_seconds=grace_seconds)
        done, _ = await asyncio.wait([worker], timeout=grace_seconds + CANCEL_WAIT_SECONDS)
        if not done:
            worker.cancel()
            await asyncio.wait([worker], timeout=CANCEL_WAIT_SECONDS)
        else:
            worker.result()  # raise what ended the worker, if anything did
        server.log({"event": "stopped"})
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
        await runner.cleanup()


def _error_text(exc: BaseException) -> str:
    """heap-dbt's own errors are one sentence without secrets; others name their type too."""
    return str(exc) if isinstance(exc, HeapDbtError) else f"unexpected {type(exc).__name__}: {exc}"


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def run_server(
    options: SyncOptions,
    *,
    cloud: CloudConfig,
    jobs: Sequence[str],
    host: str,
    port: int,
    grace_seconds: float,
) -> None:
    """``heap-dbt serve``: serve until SIGTERM, syncing each configured job's successful runs."""
    from heap_dbt.api import sync_cloud_async
    from heap_dbt.engine import open_state

    secret = webhooks.secret_from_env(options.env)
    configured = webhooks.job_ids(jobs)

    async def sync(job_id: str, run_id: str) -> SyncReport:
        return await sync_cloud_async(options, cloud=cloud, run_id=int(run_id))

    def state(*, writable: bool) -> AbstractContextManager[StateStore | None]:
        # The syncs read dbt Cloud's artifacts, never a local run_results.json: nor does the log.
        return open_state(options, writable=writable, local_run=False)

    async def main() -> None:
        server = WebhookServer(secret=secret, jobs=configured, sync=sync, open_state=state)
        await serve(server, host=host, port=port, grace_seconds=grace_seconds)

    asyncio.run(main())
