"""A local, in-memory stand-in for Heap's bulk server-side APIs, with fault injection, for tests.

It validates requests the way Heap documents them (see ``heap-api.md``, and ``emulator_payloads``),
stores what a real Heap environment keeps (last-write-wins properties, first-write-wins events per
``idempotency_key``), and can be told to fail: scripted statuses, random 500s, delays, rate limits,
oversized bodies, dropped connections and answers (the next N, or a random share), and outages
in which every request fails for a while. Rate limits count a request when it arrives, as Heap
does, on a clock that ``time_scale`` can speed up so that tests need not wait real minutes. It
imports nothing from ``heap_dbt`` but ``emulator_payloads`` and ``serving`` so it can run on its own::

    python -m heap_dbt.emulator --port 8765 --state-file heap_state.json
    python -m heap_dbt.emulator --events-per-minute 15000 --time-scale 20   # a minute in 3 s
    python -m heap_dbt.emulator show --url http://127.0.0.1:8765
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import json
import math
import os
import random
import signal
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from heap_dbt.emulator_payloads import (
    INGEST_PATHS,
    TRACK_PATH,
    AccountUpdate,
    PayloadRejectedError,
    Properties,
    TrackedEvent,
    UserUpdate,
    ValidRequest,
    decode_json,
    parse_request,
)
from heap_dbt.serving import serve_in_thread, start_app

DEFAULT_MAX_BODY_BYTES = 50 * 1024 * 1024
RATE_WINDOW_SECONDS = 60.0
STATE_FILE_INTERVAL_SECONDS = 0.2
DESCRIPTION = "A local, in-memory stand-in for Heap's bulk server-side APIs, with fault injection."

ScriptItem = int | tuple[int, int | str | None]


# --------------------------------------------------------------------------------------------------
# Fault configuration and rate limiting.


@dataclass(frozen=True)
class ScriptedResponse:
    """One queued answer: a status code, and for 429/503 an optional Retry-After header value."""

    status: int
    retry_after: str | None = None


@dataclass
class EmulatorConfig:
    """Fault-injection and limit settings; change them with HeapEmulator.configure()."""

    script: deque[ScriptedResponse] = field(default_factory=deque)
    fail_rate: float = 0.0
    delay: float = 0.0
    events_per_minute: int | None = None
    events_per_identity_per_minute: int | None = None
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    drop_connection_next: int = 0
    drop_response_next: int = 0
    throttle_rate: float = 0.0
    drop_rate: float = 0.0
    drop_response_rate: float = 0.0
    outage_until: float | None = None
    """While the emulator's clock is before this, every ingest request is answered 503."""

    def to_json(self, now: float = 0.0) -> dict[str, Any]:
        return {
            "script": [{"status": s.status, "retry_after": s.retry_after} for s in self.script],
            "fail_rate": self.fail_rate,
            "delay": self.delay,
            "events_per_minute": self.events_per_minute,
            "events_per_identity_per_minute": self.events_per_identity_per_minute,
            "max_body_bytes": self.max_body_bytes,
            "drop_connection_next": self.drop_connection_next,
            "drop_response_next": self.drop_response_next,
            "throttle_rate": self.throttle_rate,
            "drop_rate": self.drop_rate,
            "drop_response_rate": self.drop_response_rate,
            "outage_seconds": max(0.0, self.outage_until - now) if self.outage_until is not None else 0.0,
        }


FAULT_TEXT = {
    503: "outage (outage_seconds)",
    500: "random failure (fail_rate)",
    429: "throttled (throttle_rate)",
}
RATES = ("fail_rate", "throttle_rate", "drop_rate", "drop_response_rate")
CONFIG_KEYS = frozenset(EmulatorConfig().to_json()) | {"seed"}


def _script_item(item: object) -> ScriptedResponse:
    status: object = item
    retry_after: object = None
    if isinstance(item, list | tuple) and len(item) == 2:
        status, retry_after = item
    elif isinstance(item, dict):
        status, retry_after = item.get("status"), item.get("retry_after")
    if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
        raise ValueError(f"script: {item!r} is not a status code, [status, retry_after] or object")
    if retry_after is not None and (isinstance(retry_after, bool) or not isinstance(retry_after, int | str)):
        raise ValueError(f"script: retry_after {retry_after!r} must be an int or a string")
    return ScriptedResponse(status, None if retry_after is None else str(retry_after))


def _non_negative(key: str, value: object, kind: type[int] | type[float]) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError(f"{key}: must be a non-negative number")
    if kind is int and not isinstance(value, int):
        raise ValueError(f"{key}: must be an integer")
    return value


class KeyedRateWindow:
    """Counts events per key over the last ``window`` seconds of an injected clock."""

    def __init__(self, limit: int, *, window: float = RATE_WINDOW_SECONDS) -> None:
        self.limit = limit
        self.window = window
        self._hits: dict[str, deque[tuple[float, int]]] = {}

    def retry_after(self, key: str, count: int, now: float) -> float | None:
        """Seconds until ``count`` more events fit for ``key``, or None if they fit now."""
        hits = self._prune(key, now)
        used = sum(n for _, n in hits)
        if used + count <= self.limit:
            return None
        if count > self.limit:
            return self.window
        for at, n in hits:
            used -= n
            if used + count <= self.limit:
                return at + self.window - now
        return self.window

    def add(self, key: str, count: int, now: float) -> None:
        """Log ``count`` events at ``now``, in time order even if a later arrival was logged first."""
        hits = self._prune(key, now)
        i = len(hits)
        while i and hits[i - 1][0] > now:
            i -= 1
        hits.insert(i, (now, count))

    def _prune(self, key: str, now: float) -> deque[tuple[float, int]]:
        hits = self._hits.setdefault(key, deque())
        while hits and hits[0][0] <= now - self.window:
            hits.popleft()
        return hits


# --------------------------------------------------------------------------------------------------
# The emulator: state, handlers and the aiohttp application.


class HeapEmulator:
    """In-memory Heap environment(s) behind an aiohttp application (``.app``).

    All state sits behind one lock, so a synchronous test may call ``snapshot()`` or ``configure()``
    from another thread while the server runs.
    """

    def __init__(
        self,
        *,
        script: Sequence[ScriptItem] = (),
        fail_rate: float = 0.0,
        seed: int | None = None,
        delay: float = 0.0,
        events_per_minute: int | None = None,
        events_per_identity_per_minute: int | None = None,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        drop_connection_next: int = 0,
        drop_response_next: int = 0,
        throttle_rate: float = 0.0,
        drop_rate: float = 0.0,
        drop_response_rate: float = 0.0,
        time_fn: Callable[[], float] = time.monotonic,
        time_scale: float = 1.0,
        state_file: str | os.PathLike[str] | None = None,
    ) -> None:
        """``time_scale``: Heap seconds per real second of ``time_fn``; at 20 a rate-limit minute
        passes in 3 s, and Retry-After is given in real seconds (with decimals)."""
        if not (time_scale > 0 and math.isfinite(time_scale)):
            raise ValueError("time_scale: must be a positive number")
        self._lock = threading.RLock()
        self._time_fn = time_fn
        self.time_scale = float(time_scale)
        self._rng = random.Random(seed)  # noqa: S311 (fault injection, not crypto)
        self._config = EmulatorConfig()
        self._app_window: KeyedRateWindow | None = None
        self._identity_window: KeyedRateWindow | None = None
        self.state_file = Path(state_file) if state_file is not None else None
        self._dirty = False
        self._in_flight = 0
        self.configure(
            script=list(script),
            fail_rate=fail_rate,
            delay=delay,
            events_per_minute=events_per_minute,
            events_per_identity_per_minute=events_per_identity_per_minute,
            max_body_bytes=max_body_bytes,
            drop_connection_next=drop_connection_next,
            drop_response_next=drop_response_next,
            throttle_rate=throttle_rate,
            drop_rate=drop_rate,
            drop_response_rate=drop_response_rate,
        )
        self._reset_state()
        self.app = self._build_app()

    # ---- state -----------------------------------------------------------------------------------

    def _reset_state(self) -> None:
        with self._lock:
            self._users: dict[str, dict[str, Properties]] = {}
            self._accounts: dict[str, dict[str, Properties]] = {}
            self._events: list[dict[str, Any]] = []
            self._seen_keys: set[tuple[str, str]] = set()
            self._duplicate_events = 0
            self._requests: Counter[str] = Counter()
            self._records: Counter[str] = Counter()
            self._status_counts: Counter[str] = Counter()
            self._request_log: list[dict[str, Any]] = []
            self._peak_in_flight = self._in_flight  # requests being handled survive a reset
            self._outage_refused = 0
            if self._config.events_per_minute is not None:
                self._app_window = KeyedRateWindow(self._config.events_per_minute)
            if self._config.events_per_identity_per_minute is not None:
                self._identity_window = KeyedRateWindow(self._config.events_per_identity_per_minute)
            self._dirty = True

    def reset(self) -> None:
        """Forget everything stored and every counter; the fault configuration is kept."""
        self._reset_state()

    def snapshot(self) -> dict[str, Any]:
        """A deep copy of the state, in the same shape as ``GET /_emulator/state``.

        ``users`` and ``accounts`` map app_id → identity/account_id → properties; ``events``
        lists the stored (non-duplicate) events in arrival order; ``request_log`` has one entry
        per request: ``{"path", "status", "records", "at"}``, status None when the connection was
        dropped, records = items in an accepted (or rate-limited) body, else 0, ``at`` when the
        request arrived, in the emulator's (scaled) seconds, which its rate limits count by;
        ``time_scale`` is the constructor's. ``peak_in_flight`` is the most ingest requests that
        were being handled at once; ``outage_refused`` counts the requests answered 503 because of
        ``outage_seconds``.
        """
        with self._lock:
            return copy.deepcopy(
                {
                    "users": self._users,
                    "accounts": self._accounts,
                    "events": self._events,
                    "duplicate_events": self._duplicate_events,
                    "requests": dict(self._requests),
                    "records": dict(self._records),
                    "status_counts": dict(self._status_counts),
                    "request_log": self._request_log,
                    "peak_in_flight": self._peak_in_flight,
                    "outage_refused": self._outage_refused,
                    "config": self._config.to_json(self._time_fn()),
                    "time_scale": self.time_scale,
                }
            )

    def counts(self) -> dict[str, int]:
        """Cheap progress counters for polling while a sync runs (``snapshot()`` copies everything).

        ``requests`` is every ingest request received, ``stored`` every accepted record.
        """
        with self._lock:
            return {"requests": sum(self._requests.values()), "stored": sum(self._records.values())}

    def configure(self, /, **settings: Any) -> dict[str, Any]:
        """Change fault settings; keys are those of ``EmulatorConfig.to_json()`` plus ``seed``.

        ``script`` replaces the queue; items are a status, ``(status, retry_after)`` or
        ``{"status": ..., "retry_after": ...}``. A rate limit of None turns it off. The ``*_rate``
        keys are probabilities per request: ``fail_rate`` answers 500, ``throttle_rate`` 429 (no
        Retry-After), ``drop_rate`` closes the connection before the body is read (nothing is
        stored) and ``drop_response_rate`` stores the request, then closes the connection without
        answering. ``outage_seconds`` starts an outage now: every ingest request is answered 503
        until that many seconds have passed, then the emulator recovers on its own.
        Raises ValueError on an unknown key or a bad value, changing nothing.
        Returns the new config.
        """
        unknown = set(settings) - CONFIG_KEYS
        if unknown:
            raise ValueError(f"unknown config keys: {', '.join(sorted(unknown))}")
        updates: dict[str, Any] = {}
        for key, value in settings.items():
            if key == "script":
                if not isinstance(value, list | tuple):
                    raise ValueError("script: must be a list")
                updates[key] = deque(_script_item(item) for item in value)
            elif key in RATES:
                if _non_negative(key, value, float) > 1:
                    raise ValueError(f"{key}: must be between 0 and 1")
                updates[key] = float(value)
            elif key == "outage_seconds":
                updates["outage_until"] = self._time_fn() + float(_non_negative(key, value, float))
            elif key == "delay":
                updates[key] = float(_non_negative(key, value, float))
            elif key in ("events_per_minute", "events_per_identity_per_minute"):
                if value is not None and _non_negative(key, value, int) < 1:
                    raise ValueError(f"{key}: must be a positive integer or null")
                updates[key] = value
            elif key == "max_body_bytes" or key in ("drop_connection_next", "drop_response_next"):
                updates[key] = _non_negative(key, value, int)
            elif (
                key == "seed"
                and value is not None
                and (isinstance(value, bool) or not isinstance(value, int))
            ):
                raise ValueError("seed: must be an integer or null")
        with self._lock:
            if "seed" in settings:
                self._rng = random.Random(settings["seed"])  # noqa: S311
            for key, value in updates.items():
                setattr(self._config, key, value)
            if "events_per_minute" in updates:
                limit = updates["events_per_minute"]
                self._app_window = None if limit is None else KeyedRateWindow(limit)
            if "events_per_identity_per_minute" in updates:
                limit = updates["events_per_identity_per_minute"]
                self._identity_window = None if limit is None else KeyedRateWindow(limit)
            return self._config.to_json(self._time_fn())

    # ---- request handling ------------------------------------------------------------------------

    def _build_app(self) -> web.Application:
        app = web.Application(client_max_size=self._config.max_body_bytes)
        for path in INGEST_PATHS:
            app.router.add_post(path, self._handle_ingest)
        app.router.add_get("/_emulator/state", self._handle_state)
        app.router.add_post("/_emulator/reset", self._handle_reset)
        app.router.add_post("/_emulator/config", self._handle_config)
        app.cleanup_ctx.append(self._state_file_writer)
        return app

    def now(self) -> float:
        """The emulator's clock: ``time_fn`` sped up by ``time_scale``."""
        return self._time_fn() * self.time_scale

    def _answer(
        self,
        path: str,
        status: int,
        text: str = "",
        *,
        at: float,
        records: int = 0,
        retry_after: str | None = None,
    ) -> web.Response:
        with self._lock:
            self._status_counts[str(status)] += 1
            self._request_log.append({"path": path, "status": status, "records": records, "at": at})
            self._dirty = True
        headers = {"Retry-After": retry_after} if retry_after is not None else None
        return web.Response(status=status, text=text, headers=headers)

    def _drop(self, request: web.Request, path: str, *, at: float, records: int = 0) -> web.Response:
        """Abort the connection without answering; logged with status None."""
        with self._lock:
            self._request_log.append({"path": path, "status": None, "records": records, "at": at})
            self._dirty = True
        if request.transport is not None:
            request.transport.abort()
        # aiohttp cannot write to an aborted transport; this response is discarded.
        return web.Response(status=499)

    async def _handle_ingest(self, request: web.Request) -> web.StreamResponse:
        with self._lock:
            self._in_flight += 1
            self._peak_in_flight = max(self._peak_in_flight, self._in_flight)
        try:
            return await self._ingest(request)
        finally:
            with self._lock:
                self._in_flight -= 1

    def _faults(self, config: EmulatorConfig) -> tuple[bool, int | None]:
        """Draw the random faults of one request: (drop the connection, status to answer)."""
        drop = config.drop_rate > 0 and self._rng.random() < config.drop_rate
        if drop:
            return True, None
        if config.outage_until is not None and self._time_fn() < config.outage_until:
            self._outage_refused += 1
            return False, 503
        if config.fail_rate > 0 and self._rng.random() < config.fail_rate:
            return False, 500
        if config.throttle_rate > 0 and self._rng.random() < config.throttle_rate:
            return False, 429
        return False, None

    async def _ingest(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        at = self.now()  # Heap counts a request when it arrives, not when its body is read
        with self._lock:
            self._requests[path] += 1
            delay = self._config.delay
        if delay:
            await asyncio.sleep(delay)
        with self._lock:
            config = self._config
            if config.drop_connection_next:
                config.drop_connection_next -= 1
                drop = True
            else:
                drop = False
            # A dropped request does not consume the script: each scripted answer is sent.
            scripted = config.script.popleft() if config.script and not drop else None
            random_status = None
            if not drop and scripted is None:
                drop, random_status = self._faults(config)
            max_body = config.max_body_bytes
        if drop:
            return self._drop(request, path, at=at)
        if scripted is not None:
            retry_after = scripted.retry_after if scripted.status in (429, 503) else None
            text = f"scripted {scripted.status}"
            return self._answer(path, scripted.status, text, at=at, retry_after=retry_after)
        if random_status is not None:
            return self._answer(path, random_status, FAULT_TEXT[random_status], at=at)

        try:
            raw = await _read_limited(request, max_body)
        except ConnectionError:  # the client went away mid-body (killed, or timed out)
            return self._drop(request, path, at=at)
        if raw is None:
            return self._answer(path, 413, f"body: larger than {max_body} bytes", at=at)
        if request.content_type != "application/json":
            return self._answer(path, 400, "Content-Type: must be application/json", at=at)
        try:
            parsed = parse_request(path, decode_json(raw))
        except PayloadRejectedError as exc:
            return self._answer(path, 400, str(exc), at=at)

        records = len(parsed.items)
        with self._lock:
            limited = self._rate_limited(parsed, at)
            if limited is not None:
                return self._answer(
                    path,
                    429,
                    "rate limit exceeded",
                    at=at,
                    records=records,
                    retry_after=self._retry_after(limited),
                )
            self._store(parsed)
            drop_response = self._config.drop_response_next > 0
            if drop_response:
                self._config.drop_response_next -= 1
            elif self._config.drop_response_rate > 0:
                drop_response = self._rng.random() < self._config.drop_response_rate
        if drop_response:
            return self._drop(request, path, at=at, records=records)
        return self._answer(path, 200, at=at, records=records)

    def _retry_after(self, wait: float) -> str:
        """Retry-After for a wait of ``wait`` emulator seconds: whole seconds as Heap gives them,
        or real seconds to the millisecond when the clock is scaled."""
        if self.time_scale == 1.0:
            return str(max(1, math.ceil(wait)))
        return f"{max(1, math.ceil(wait / self.time_scale * 1000)) / 1000:g}"

    def _rate_limited(self, parsed: ValidRequest, now: float) -> float | None:
        """Seconds to wait if this request, arrived at ``now``, breaks a rate limit; else records
        it and returns None. A request that arrived earlier but was read later counts as well."""
        if parsed.path != TRACK_PATH:
            return None
        events = [e for e in parsed.items if isinstance(e, TrackedEvent)]
        per_identity = Counter(e.identity for e in events)
        waits: list[float] = []
        if self._app_window is not None:
            wait = self._app_window.retry_after(parsed.app_id, len(events), now)
            waits += [wait] if wait is not None else []
        if self._identity_window is not None:
            for identity, count in per_identity.items():
                wait = self._identity_window.retry_after(f"{parsed.app_id}\x00{identity}", count, now)
                waits += [wait] if wait is not None else []
        if waits:
            return max(waits)
        if self._app_window is not None:
            self._app_window.add(parsed.app_id, len(events), now)
        if self._identity_window is not None:
            for identity, count in per_identity.items():
                self._identity_window.add(f"{parsed.app_id}\x00{identity}", count, now)
        return None

    def _store(self, parsed: ValidRequest) -> None:
        app_id = parsed.app_id
        self._records[parsed.path] += len(parsed.items)
        self._dirty = True
        for item in parsed.items:
            if isinstance(item, UserUpdate):
                self._users.setdefault(app_id, {}).setdefault(item.identity, {}).update(item.properties)
            elif isinstance(item, AccountUpdate):
                self._accounts.setdefault(app_id, {}).setdefault(item.account_id, {}).update(item.properties)
            else:
                if item.idempotency_key is not None:
                    seen = (app_id, item.idempotency_key)
                    if seen in self._seen_keys:
                        self._duplicate_events += 1
                        continue
                    self._seen_keys.add(seen)
                self._events.append(
                    {
                        "app_id": app_id,
                        "identity": item.identity,
                        "event": item.event,
                        "timestamp": item.timestamp,
                        "idempotency_key": item.idempotency_key,
                        "properties": dict(item.properties),
                    }
                )

    async def _handle_state(self, request: web.Request) -> web.Response:
        return web.json_response(self.snapshot())

    async def _handle_reset(self, request: web.Request) -> web.Response:
        self.reset()
        return web.json_response({"reset": True})

    async def _handle_config(self, request: web.Request) -> web.Response:
        try:
            settings = json.loads(await request.text())
            if not isinstance(settings, dict):
                raise ValueError("body: must be a JSON object")
            return web.json_response(self.configure(**settings))
        except ValueError as exc:
            return web.Response(status=400, text=str(exc))

    # ---- state file ------------------------------------------------------------------------

    async def _state_file_writer(self, app: web.Application) -> AsyncIterator[None]:
        """While the app runs, rewrite the state file (coalesced) whenever state changed."""
        if self.state_file is None:
            yield
            return

        async def loop() -> None:
            while True:
                await asyncio.sleep(STATE_FILE_INTERVAL_SECONDS)
                self.write_state_file()

        task = asyncio.create_task(loop())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        self.write_state_file(force=True)

    def write_state_file(self, *, force: bool = False) -> None:
        """Atomically write ``snapshot()`` as JSON to ``state_file`` if it changed (or forced)."""
        if self.state_file is None:
            return
        with self._lock:
            if not (self._dirty or force):
                return
            self._dirty = False
            text = json.dumps(self.snapshot(), indent=2, sort_keys=True)
        # mkstemp's file is the owner's only (0600): the state holds identities and app_ids.
        fd, tmp = tempfile.mkstemp(dir=self.state_file.parent, prefix=f".{self.state_file.name}.")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text + "\n")
        os.replace(tmp, self.state_file)


async def _read_limited(request: web.Request, max_bytes: int) -> bytes | None:
    """Read the body, or return None once it exceeds ``max_bytes``."""
    declared = request.content_length
    if declared is not None and declared > max_bytes:
        return None
    chunks: list[bytes] = []
    total = 0
    async for chunk in request.content.iter_chunked(64 * 1024):
        total += len(chunk)
        if total > max_bytes:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


# --------------------------------------------------------------------------------------------------
# Running it: async context manager, background thread, CLI.


@dataclass(frozen=True)
class RunningEmulator:
    """A served emulator: ``url`` is the base URL, e.g. ``http://127.0.0.1:54321``."""

    url: str
    emulator: HeapEmulator


@contextlib.asynccontextmanager
async def serve(
    *, host: str = "127.0.0.1", port: int = 0, emulator: HeapEmulator | None = None, **config: Any
) -> AsyncIterator[RunningEmulator]:
    """Serve an emulator on the running loop (async tests); ``config`` goes to HeapEmulator()."""
    emulator = emulator if emulator is not None else HeapEmulator(**config)
    runner, url = await start_app(emulator.app, host, port)
    try:
        yield RunningEmulator(url, emulator)
    finally:
        await runner.cleanup()


@contextlib.contextmanager
def run_in_thread(
    *, host: str = "127.0.0.1", port: int = 0, emulator: HeapEmulator | None = None, **config: Any
) -> Iterator[RunningEmulator]:
    """Serve an emulator from a background thread with its own event loop (sync tests)."""
    emulator = emulator if emulator is not None else HeapEmulator(**config)
    with serve_in_thread(emulator.app, name="heap-emulator", host=host, port=port) as url:
        yield RunningEmulator(url, emulator)


async def _serve_forever(emulator: HeapEmulator, host: str, port: int) -> None:
    runner, url = await start_app(emulator.app, host, port)
    print(f"Heap emulator listening on {url}", file=sys.stderr, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()  # writes the state file one last time
        print("Heap emulator stopped", file=sys.stderr, flush=True)


def _masked(app_id: str) -> str:
    # The summary is printed by `make demo`; app_ids are secrets there too.
    return app_id[:2] + "*" * max(0, len(app_id) - 4) + app_id[-2:] if len(app_id) > 4 else "****"


def summarize(state: Mapping[str, Any], *, limit: int = 3) -> str:
    """A short human summary of a state snapshot: counts, then the first few of each kind."""
    users = [(app, ident, props) for app, byid in state["users"].items() for ident, props in byid.items()]
    accounts = [(app, aid, props) for app, byid in state["accounts"].items() for aid, props in byid.items()]
    events = state["events"]
    lines = [
        f"users: {len(users)}   accounts: {len(accounts)}   events: {len(events)}"
        f" (+{state['duplicate_events']} duplicates ignored)",
        "requests: " + (", ".join(f"{p} {n}" for p, n in sorted(state["requests"].items())) or "none"),
        "statuses: " + (", ".join(f"{s}: {n}" for s, n in sorted(state["status_counts"].items())) or "none"),
    ]
    for title, rows in (("users", users), ("accounts", accounts)):
        if rows:
            lines.append(f"first {title}:")
            lines += [
                f"  [{_masked(app)}] {key}  {json.dumps(props, sort_keys=True)}"
                for app, key, props in rows[:limit]
            ]
    if events:
        lines.append("first events:")
        lines += [
            f"  [{_masked(e['app_id'])}] {e['identity']}  {e['event']} @ {e['timestamp']}  "
            f"{json.dumps(e['properties'], sort_keys=True)}"
            for e in events[:limit]
        ]
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m heap_dbt.emulator", description=DESCRIPTION)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("serve", help="run the emulator until SIGINT/SIGTERM (the default)")
    run.add_argument("--host", default="127.0.0.1")
    run.add_argument("--port", type=int, default=8765)
    run.add_argument("--fail-rate", type=float, default=0.0, help="probability of a random 500")
    run.add_argument("--throttle-rate", type=float, default=0.0, help="probability of a random 429")
    run.add_argument("--drop-rate", type=float, default=0.0, help="probability of closing the connection")
    run.add_argument(
        "--drop-response-rate", type=float, default=0.0, help="probability of storing, then not answering"
    )
    run.add_argument("--seed", type=int, default=None, help="seed for the random faults")
    run.add_argument("--delay", type=float, default=0.0, help="seconds to wait before each answer")
    run.add_argument("--events-per-minute", type=int, default=None, help="per app_id (Heap: 15000)")
    run.add_argument("--events-per-identity-per-minute", type=int, default=None, help="(Heap: 1000)")
    run.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES)
    run.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        help="run the rate limits' clock this many times faster (20: a minute in 3 s)",
    )
    run.add_argument("--state-file", type=Path, default=None, help="keep the state as JSON here")
    show = commands.add_parser("show", help="print a summary of a running emulator's state")
    show.add_argument("--url", default="http://127.0.0.1:8765")
    show.add_argument("--limit", type=int, default=3, help="how many of each kind to list")
    show.add_argument("--json", action="store_true", help="print the full state as JSON")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if not args_list or (args_list[0].startswith("-") and args_list[0] not in ("-h", "--help")):
        args_list.insert(0, "serve")
    args = _parser().parse_args(args_list)
    if args.command == "show":
        url = args.url.rstrip("/") + "/_emulator/state"
        if not url.startswith(("http://", "https://")):
            print(f"Error: --url must be http(s), got {args.url}", file=sys.stderr)
            return 2
        try:
            with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 (scheme checked)
                state = json.load(response)
        except OSError as exc:
            print(f"Error: cannot read {url}: {exc}. Is the emulator running?", file=sys.stderr)
            return 1
        print(
            json.dumps(state, indent=2, sort_keys=True) if args.json else summarize(state, limit=args.limit)
        )
        return 0
    if not (args.time_scale > 0 and math.isfinite(args.time_scale)):
        print(f"Error: --time-scale must be a positive number, got {args.time_scale}", file=sys.stderr)
        return 2
    emulator = HeapEmulator(
        fail_rate=args.fail_rate,
        throttle_rate=args.throttle_rate,
        drop_rate=args.drop_rate,
        drop_response_rate=args.drop_response_rate,
        seed=args.seed,
        delay=args.delay,
        events_per_minute=args.events_per_minute,
        events_per_identity_per_minute=args.events_per_identity_per_minute,
        max_body_bytes=args.max_body_bytes,
        time_scale=args.time_scale,
        state_file=args.state_file,
    )
    asyncio.run(_serve_forever(emulator, args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
