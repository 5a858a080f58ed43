"""What concurrent syncs in one process share: one rate limiter per Heap app, one lock per state.

Syncs started from one event loop (``heap_dbt.sync_async`` called twice, a server handling
two webhooks) run side by side. Heap counts an app's events whoever sends them, so the
syncs of one app take their events from one ``EventRateLimiter``; two syncs of one project
would write one sync state, so the second waits for the first. Both registries are keyed by
the running event loop and forget a loop once it is gone.
"""

from __future__ import annotations

import asyncio
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING

from heap_dbt.ratelimit import EventRateLimiter

if TYPE_CHECKING:
    from heap_dbt.clock import Clock


@dataclass(frozen=True)
class SharedLimiter:
    """The limiter of one app in one event loop, with the limits it was created with."""

    limiter: EventRateLimiter
    per_app: int
    per_identity: int


_limiters: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, SharedLimiter]] = (
    weakref.WeakKeyDictionary()
)
_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, asyncio.Lock]] = (
    weakref.WeakKeyDictionary()
)


def shared_limiter(app_id: str, *, per_app: int, per_identity: int, clock: Clock) -> SharedLimiter:
    """The event limiter every sync of ``app_id`` in the running event loop shares.

    The first sync of an app creates it with its limits and clock; later syncs, concurrent
    or not, take that one, so their events together stay within one app's limit (a limit
    of events per minute still counts what a sync sent a moment ago). A caller that asked
    for other limits sees them in ``SharedLimiter.per_app``/``per_identity``.
    """
    per_loop = _limiters.setdefault(asyncio.get_running_loop(), {})
    shared = per_loop.get(app_id)
    if shared is None:
        limiter = EventRateLimiter(per_app=per_app, per_identity=per_identity, clock=clock)
        shared = per_loop[app_id] = SharedLimiter(limiter, per_app, per_identity)
    return shared


def state_lock(key: str) -> asyncio.Lock:
    """The lock of one sync state (``key`` names the project and target) in the running loop."""
    per_loop = _locks.setdefault(asyncio.get_running_loop(), {})
    lock = per_loop.get(key)
    if lock is None:
        lock = per_loop[key] = asyncio.Lock()
    return lock
