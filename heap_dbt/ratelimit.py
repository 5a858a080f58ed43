"""Sliding-window rate limits on an injected clock: Heap's events per minute, per app and per identity."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from heap_dbt.clock import Clock


class SlidingWindow:
    """At most ``limit`` units in any ``window`` seconds: exact, unlike a token bucket's burst."""

    def __init__(self, limit: int, *, window: float = 60.0) -> None:
        self.limit = limit
        self.window = window
        self._log: deque[tuple[float, int]] = deque()
        self._used = 0

    def prune(self, now: float) -> None:
        """Forget what left the window."""
        while self._log and self._log[0][0] <= now - self.window:
            self._used -= self._log.popleft()[1]

    def wait_time(self, n: int, now: float) -> float:
        """Seconds until ``n`` more units fit (0 if they fit now)."""
        self.prune(now)
        excess = self._used + n - self.limit
        if excess <= 0:
            return 0.0
        freed = 0
        for t, count in self._log:
            freed += count
            if freed >= excess:
                return t + self.window - now
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

    def __init__(self, limit: int, *, window: float = 60.0) -> None:
        self.limit = limit
        self.window = window
        self._log: deque[tuple[float, Mapping[str, int]]] = deque()
        self.used: dict[str, int] = {}

    def prune(self, now: float) -> None:
        while self._log and self._log[0][0] <= now - self.window:
            _, counts = self._log.popleft()
            for identity, n in counts.items():
                left = self.used[identity] - n
                if left:
                    self.used[identity] = left
                else:
                    del self.used[identity]

    def wait_time(self, counts: Mapping[str, int], now: float) -> float:
        """Seconds until every identity in ``counts`` has room (0 if all fit now)."""
        self.prune(now)
        wait = 0.0
        for identity, n in counts.items():
            excess = self.used.get(identity, 0) + n - self.limit
            if excess <= 0:
                continue
            freed = 0  # rare: walk the log for the requests of this identity that free enough
            for t, logged in self._log:
                freed += logged.get(identity, 0)
                if freed >= excess:
                    wait = max(wait, t + self.window - now)
                    break
            else:
                wait = max(wait, self.window)  # n > limit: callers cap batches so this does not happen
        return wait

    def record(self, counts: Mapping[str, int], now: float) -> None:
        self._log.append((now, counts))
        used = self.used
        for identity, n in counts.items():
            used[identity] = used.get(identity, 0) + n


class EventRateLimiter:
    """Heap's bulk-track limits: events per minute per app_id and per identity.

    A limit of 0 turns that limit off. Callers take one ``admit`` per request; requests are
    admitted one at a time, in order, so a large batch is not starved by small ones.
    """

    def __init__(self, *, per_app: int, per_identity: int, clock: Clock, window: float = 60.0) -> None:
        self._clock = clock
        self._app = SlidingWindow(per_app, window=window) if per_app > 0 else None
        self._per_identity = per_identity
        self._identities = IdentityWindows(per_identity, window=window) if per_identity > 0 else None
        self._lock = asyncio.Lock()

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

    async def admit(self, total: int, per_identity: Mapping[str, int]) -> None:
        """Wait until a request of ``total`` events, spread as ``per_identity``, may go.

        Raises:
            ValueError: the request could never be admitted (larger than a limit).
        """
        over_app = self._app is not None and total > self._app.limit
        over_identity = self._per_identity > 0 and any(n > self._per_identity for n in per_identity.values())
        if over_app or over_identity:
            raise ValueError(f"a request of {total} events exceeds a rate limit; cut it with max_batch()")
        async with self._lock:
            while True:
                now = self._clock.monotonic()
                wait = self._app.wait_time(total, now) if self._app is not None else 0.0
                if self._identities is not None:
                    wait = max(wait, self._identities.wait_time(per_identity, now))
                if wait <= 0:
                    break
                await self._clock.sleep(wait)
            if self._app is not None:
                self._app.record(total, now)
            if self._identities is not None:
                self._identities.record(per_identity, now)
