"""Time as heap-dbt sees it, injected: the rate limiter, the retry loop and the engine take a Clock."""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    """Monotonic time for waits and durations, wall time for HTTP dates; tests pass a fake that
    never sleeps."""

    def monotonic(self) -> float: ...

    def time(self) -> float:
        """Seconds since the epoch."""
        ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
