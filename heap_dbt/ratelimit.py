"""Heap's limits on an injected clock: events per minute per app and per identity, and a pause after a 429.

Heap counts a request when it arrives; heap-dbt cannot see that moment, only that it lies
between sending and the response. So a request holds its events in the window from the
moment it is admitted (``acquire``) until its response comes (``Permit.done``), and then for
one window plus a small guard after that. That is never less than what Heap counts, so a
request admitted as the window frees up cannot land in Heap's window, and a sync still goes
within about one response time and the guard of the fastest schedule per window.

One ``AppLimits`` per app_id holds that app's event windows and its pause; ``RateLimits``
hands them out by app_id, so every sync (and every endpoint) that sends to one app shares them.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from heap_dbt.clock import Clock

WINDOW_SECONDS = 60.0
GUARD = 0.01
"""The fraction of a window a completed request is held beyond it: Heap's clock, and where its
window starts, are its own."""


class SlidingWindow:
    """At most ``limit`` units in any ``window`` seconds: exact, unlike a token bucket's burst.

    ``in_flight`` units (admitted, not yet answered) fill the window too, and leave it only
    one window after they are ``record``-ed.
    """

    def __init__(self, limit: int, *, window: float = WINDOW_SECONDS) -> None:
        self.limit = limit
        self.window = window
        self._log: deque[tuple[float, int]] = deque()
        self._used = 0
        self.in_flight = 0

    def prune(self, now: float) -> None:
        """Forget what left the window."""
        while self._log and self._log[0][0] <= now - self.window:
            self._used -= self._log.popleft()[1]

    def wait_time(self, n: int, now: float) -> float:
        """Seconds until ``n`` more units fit (0 if they fit now); ``math.inf`` while only a
        request in flight could make room."""
        self.prune(now)
        excess = self._used + self.in_flight + n - self.limit
        if excess <= 0:
            return 0.0
        freed = 0
        for t, count in self._log:
            freed += count
            if freed >= excess:
                return t + self.window - now
        if self.in_flight:
            return math.inf
        return self.window  # n > limit: callers cap batches so this does not happen

    def record(self, n: int, now: float) -> None:
        self._log.append((now, n))
        self._used += n


class IdentityWindows:
    """Sliding windows of ``limit`` units per identity, sharing one log of requests.

    Each request is logged once with its per-identity counts, and ``used`` keeps the total
    per identity still in the window: recording and forgetting cost O(identities in the
    request), so a minute with a million identities stays linear. Memory is what the
    window holds, which the per-app limit bounds when it is on.
    """

    def __init__(self, limit: int, *, window: float = WINDOW_SECONDS) -> None:
        self.limit = limit
        self.window = window
        self._log: deque[tuple[float, Mapping[str, int]]] = deque()
        self.used: dict[str, int] = {}
        self.in_flight: dict[str, int] = {}

    def prune(self, now: float) -> None:
        while self._log and self._log[0][0] <= now - self.window:
            _, counts = self._log.popleft()
            _subtract(self.used, counts)

    def wait_time(self, counts: Mapping[str, int], now: float) -> float:
        """Seconds until every identity in ``counts`` has room (0 if all fit now); ``math.inf``
        while only a request in flight could make room."""
        self.prune(now)
        wait = 0.0
        for identity, n in counts.items():
            flying = self.in_flight.get(identity, 0)
            excess = self.used.get(identity, 0) + flying + n - self.limit
            if excess <= 0:
                continue
            freed = 0  # rare: walk the log for the requests of this identity that free enough
            for t, logged in self._log:
                freed += logged.get(identity, 0)
                if freed >= excess:
                    wait = max(wait, t + self.window - now)
                    break
            else:
                # n > limit cannot happen (callers cap batches): wait a window, as SlidingWindow does
                wait = max(wait, math.inf if flying else self.window)
        return wait

    def hold(self, counts: Mapping[str, int]) -> None:
        flying = self.in_flight
        for identity, n in counts.items():
            flying[identity] = flying.get(identity, 0) + n

    def release(self, counts: Mapping[str, int]) -> None:
        _subtract(self.in_flight, counts)

    def record(self, counts: Mapping[str, int], now: float) -> None:
        self._log.append((now, counts))
        used = self.used
        for identity, n in counts.items():
            used[identity] = used.get(identity, 0) + n


def _subtract(totals: dict[str, int], counts: Mapping[str, int]) -> None:
    for identity, n in counts.items():
        left = totals[identity] - n
        if left:
            totals[identity] = left
        else:
            del totals[identity]


class Permit:
    """One request's place in the windows, from ``acquire`` until ``done``."""

    def __init__(self, limiter: EventRateLimiter | None, total: int, per_identity: Mapping[str, int]) -> None:
        self._limiter = limiter
        self.total = total
        self.per_identity = per_identity
        self._open = limiter is not None

    def done(self, *, counted: bool = True) -> None:
        """The response (any status) or an error arrived: the events stay in the window for one
        window from now. ``counted=False`` for a 429, which Heap did not take: they leave it now.
        Only the first call counts."""
        if self._open:
            self._open = False
            assert self._limiter is not None
            self._limiter._finish(self, counted=counted)


class EventRateLimiter:
    """Heap's bulk-track limits: events per minute per app_id and per identity.

    A limit of 0 turns that limit off. Callers take one ``acquire`` per request and call
    ``done`` on its permit when the response arrives; requests are admitted one at a time,
    in order, so a large batch is not starved by small ones.
    """

    def __init__(
        self,
        *,
        per_app: int,
        per_identity: int,
        clock: Clock,
        window: float = WINDOW_SECONDS,
        guard: float = GUARD,
    ) -> None:
        self._clock = clock
        held = window * (1 + guard)
        self._app = SlidingWindow(per_app, window=held) if per_app > 0 else None
        self._per_identity = per_identity
        self._identities = IdentityWindows(per_identity, window=held) if per_identity > 0 else None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = asyncio.Lock()
        self._finished = asyncio.Event()
        """Set whenever a permit is done: a request waiting on requests in flight looks again."""

    def _on_this_loop(self) -> None:
        """Asyncio's lock and event belong to one loop; each ``asyncio.run`` has its own, so a
        limiter shared by runs one after the other gets fresh ones (the windows are kept)."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._loop = loop
            self._lock = asyncio.Lock()
            self._finished = asyncio.Event()

    @property
    def active(self) -> bool:
        return self._app is not None or self._per_identity > 0

    def max_batch(self, default: int) -> int:
        """The largest batch that can ever be admitted."""
        caps = [default]
        if self._app is not None:
            caps.append(self._app.limit)
        if self._per_identity > 0:
            caps.append(self._per_identity)
        return max(1, min(caps))

    async def acquire(self, total: int, per_identity: Mapping[str, int]) -> Permit:
        """Wait until a request of ``total`` events, spread as ``per_identity``, may go.

        Raises:
            ValueError: the request could never be admitted (larger than a limit).
        """
        over_app = self._app is not None and total > self._app.limit
        over_identity = self._per_identity > 0 and any(n > self._per_identity for n in per_identity.values())
        if over_app or over_identity:
            raise ValueError(f"a request of {total} events exceeds a rate limit; cut it with max_batch()")
        counts = per_identity if self._identities is not None else {}
        self._on_this_loop()
        async with self._lock:
            while True:
                now = self._clock.monotonic()
                wait = self._app.wait_time(total, now) if self._app is not None else 0.0
                if self._identities is not None:
                    wait = max(wait, self._identities.wait_time(counts, now))
                if wait <= 0:
                    break
                await self._wait(wait)
            if self._app is not None:
                self._app.in_flight += total
            if self._identities is not None:
                self._identities.hold(counts)
        return Permit(self, total, counts)

    async def _wait(self, seconds: float) -> None:
        """Sleep ``seconds``, or until a permit is done, whichever comes first."""
        self._finished.clear()
        if math.isinf(seconds):
            await self._finished.wait()
            return
        sleep = asyncio.ensure_future(self._clock.sleep(seconds))
        finished = asyncio.ensure_future(self._finished.wait())
        try:
            await asyncio.wait((sleep, finished), return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleep.cancel()
            finished.cancel()

    def _finish(self, permit: Permit, *, counted: bool) -> None:
        now = self._clock.monotonic()
        if self._app is not None:
            self._app.in_flight -= permit.total
            if counted:
                self._app.record(permit.total, now)
        if self._identities is not None:
            self._identities.release(permit.per_identity)
            if counted:
                self._identities.record(permit.per_identity, now)
        self._finished.set()


class AppPause:
    """Heap answered 429: every request to that app, on any endpoint, waits out its Retry-After."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self.until = -math.inf

    def pause(self, seconds: float) -> None:
        """Hold every request for ``seconds`` from now (a later end wins over an earlier one)."""
        self.until = max(self.until, self._clock.monotonic() + seconds)

    @property
    def remaining(self) -> float:
        return max(0.0, self.until - self._clock.monotonic())

    async def wait(self) -> None:
        while (left := self.remaining) > 0:
            await self._clock.sleep(left)


class AppLimits:
    """What every request to one app_id waits on: its pause, and for events its windows."""

    def __init__(self, *, clock: Clock, events: EventRateLimiter | None = None) -> None:
        self.events = events if events is not None and events.active else None
        self.pause = AppPause(clock)

    def max_batch(self, default: int) -> int:
        return self.events.max_batch(default) if self.events is not None else default

    async def acquire(self, total: int = 0, per_identity: Mapping[str, int] | None = None) -> Permit:
        """Wait out a pause, then (for ``total`` events, 0 for users and accounts) the windows.

        A pause that began while waiting for the windows is waited out too, without holding
        a place in them.
        """
        while True:
            await self.pause.wait()
            if total and self.events is not None:
                permit = await self.events.acquire(total, per_identity or {})
            else:
                permit = Permit(None, total, {})
            if not self.pause.remaining:
                return permit
            permit.done(counted=False)


class RateLimits:
    """One ``AppLimits`` per app_id, made on first use with these limits.

    ``run_sync`` makes one per run; pass one in to share an app's limits between runs in one
    process (one event loop).
    """

    def __init__(
        self,
        *,
        events_per_minute: int,
        events_per_identity_per_minute: int,
        clock: Clock,
        window: float = WINDOW_SECONDS,
    ) -> None:
        self.events_per_minute = events_per_minute
        self.events_per_identity_per_minute = events_per_identity_per_minute
        self.clock = clock
        self.window = window
        self._apps: dict[str, AppLimits] = {}

    def for_app(self, app_id: str) -> AppLimits:
        limits = self._apps.get(app_id)
        if limits is None:
            events = EventRateLimiter(
                per_app=self.events_per_minute,
                per_identity=self.events_per_identity_per_minute,
                clock=self.clock,
                window=self.window,
            )
            limits = self._apps[app_id] = AppLimits(clock=self.clock, events=events)
        return limits
