"""What concurrent syncs in one process share: one rate limiter per Heap app, one lock per state.

Syncs started from one event loop (``heap_dbt.sync_async`` called twice, a server handling
two webhooks) run side by side. Heap counts an app's events whoever sends them, so the
syncs of one app take their events from one ``RateLimits``; two syncs of one project
would write one sync state, so the second waits for the first. Both registries are keyed by
the running event loop and forget a loop once it is gone.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import TYPE_CHECKING

from heap_dbt.ratelimit import RateLimits

if TYPE_CHECKING:
    from heap_dbt.clock import Clock


_limits: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, RateLimits] = weakref.WeakKeyDictionary()
_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, asyncio.Lock]] = (
    weakref.WeakKeyDictionary()
)


def shared_limits(
    *, events_per_minute: int, events_per_identity_per_minute: int, clock: Clock, window: float
) -> RateLimits:
    """The rate limits every sync in the running event loop shares, one set per app_id.

    The first sync creates them with its limits and clock; later syncs, concurrent or not,
    take those, so their events together stay within one app's limit (a limit of events per
    minute still counts what a sync sent a moment ago), and a 429 pauses all of them. A
    caller that asked for other limits sees the ones in force on the returned object.
    """
    loop = asyncio.get_running_loop()
    limits = _limits.get(loop)
    if limits is None:
        limits = _limits[loop] = RateLimits(
            events_per_minute=events_per_minute,
            events_per_identity_per_minute=events_per_identity_per_minute,
            clock=clock,
            window=window,
        )
    return limits


def state_lock(key: str) -> asyncio.Lock:
    """The lock of one sync state (``key`` names the project and target) in the running loop."""
    per_loop = _locks.setdefault(asyncio.get_running_loop(), {})
    lock = per_loop.get(key)
    if lock is None:
        lock = per_loop[key] = asyncio.Lock()
    return lock
