"""Delivering one batch to Heap: retry what may pass later, bisect what Heap refuses, stop on what never will.

The sender takes a transport, a clock, a retry policy and the app's limits (``AppLimits``:
Heap's event windows, and the pause a 429 starts for every request to that app); it frames
nothing and counts nothing of the sync's. What became of each row comes back as a
``Delivery``, so a test drives it with a scripted transport and a fake clock::

    sender = Sender(FakeTransport({"/api/track": [500, 200]}), clock=FakeClock(), policy=RetryPolicy())
    delivery = await sender.send(frame, chunk)
    assert (delivery.sent, delivery.retries) == (len(chunk), 1)
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from heap_dbt.errors import FatalAPIError, RefusedBatchError, RetriableAPIError
from heap_dbt.heap import RetryPolicy, check
from heap_dbt.ratelimit import AppLimits
from heap_dbt.report import RowIssue

if TYPE_CHECKING:
    from heap_dbt.bodies import Chunk
    from heap_dbt.clock import Clock
    from heap_dbt.heap import Frame, HeapResponse
    from heap_dbt.ratelimit import Permit
    from heap_dbt.transport import Transport


class Cancellation:
    """Shared by every sender of a run: once Heap answers with a fatal status, nothing more is sent."""

    def __init__(self) -> None:
        self.reason: str | None = None

    def cancel(self, reason: str) -> None:
        """Stop sending; the first reason given is the one kept."""
        if self.reason is None:
            self.reason = reason

    @property
    def cancelled(self) -> bool:
        return self.reason is not None


@dataclass
class Delivery:
    """What became of the rows of one chunk: every row ends in exactly one of the three lists."""

    delivered: list[Chunk] = field(default_factory=list)
    """The parts Heap acknowledged with a 2xx."""
    rejected: list[RowIssue] = field(default_factory=list)
    """Rows Heap refused on their own (a 400, 413 or 422 for a single record)."""
    failed: list[RowIssue] = field(default_factory=list)
    """Rows not delivered: retries ran out, a fatal status, or the run was cancelled."""
    requests: int = 0
    """Requests Heap answered."""
    retries: int = 0

    @property
    def sent(self) -> int:
        return sum(len(c) for c in self.delivered)


class Sender:
    """Sends chunks to Heap through ``transport``, as ``policy`` and ``limits`` allow.

    ``events``: the chunks are events, which Heap's event limits count (``limits.events``).
    Without ``limits``, the sender still pauses all of its own requests after a 429.
    """

    def __init__(
        self,
        transport: Transport,
        *,
        clock: Clock,
        policy: RetryPolicy,
        limits: AppLimits | None = None,
        events: bool = False,
        cancellation: Cancellation | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.transport = transport
        self.clock = clock
        self.policy = policy
        self.limits = limits if limits is not None else AppLimits(clock=clock)
        self.events = events
        self.cancellation = cancellation or Cancellation()
        self.rng = rng or random.Random()  # noqa: S311  # jitter, not crypto

    async def send(self, frame: Frame, chunk: Chunk) -> Delivery:
        """Deliver ``chunk`` to ``frame.path``; never raises for what Heap answers."""
        delivery = Delivery()
        await self._send(frame, chunk, delivery)
        return delivery

    async def _send(self, frame: Frame, chunk: Chunk, delivery: Delivery) -> None:
        body = frame.body(chunk.joined())
        counted = self.events and self.limits.events is not None
        total, per_identity = (len(chunk), chunk.identity_counts()) if counted else (0, {})
        attempt = 0
        while True:
            if self.cancellation.reason is not None:
                _fail(delivery, chunk, f"not sent: {self.cancellation.reason}")
                return
            attempt += 1
            permit = await self.limits.acquire(total, per_identity)
            if self.cancellation.cancelled:  # it may have come while this one waited
                permit.done(counted=False)
                _fail(delivery, chunk, f"not sent: {self.cancellation.reason}")
                return
            try:
                response = await self._post(frame, body, permit)
                delivery.requests += 1
                check(response, now=self.clock.time(), secret=frame.app_id)  # may echo the body
            except RetriableAPIError as exc:
                if exc.status == 429:
                    # Heap counts more than this app's windows did (another sender, another clock):
                    # every request to the app waits, this one's retry too (in acquire).
                    self.limits.pause.pause(
                        self.policy.delay(attempt, retry_after=exc.retry_after, rng=self.rng)
                    )
                if attempt >= self.policy.max_attempts:
                    _fail(delivery, chunk, f"{exc} (gave up after {attempt} attempts)")
                    return
                delivery.retries += 1
                if exc.status != 429:
                    await self.clock.sleep(
                        self.policy.delay(attempt, retry_after=exc.retry_after, rng=self.rng)
                    )
            except RefusedBatchError as exc:
                if len(chunk) == 1:
                    key = chunk.keys[0].as_py()
                    delivery.rejected.append(RowIssue(key, f"Heap refused the record: {exc}"))
                    return
                left, right = chunk.split()
                await asyncio.gather(self._send(frame, left, delivery), self._send(frame, right, delivery))
                return
            except FatalAPIError as exc:
                self.cancellation.cancel(f"Heap refused a request with {exc}")
                _fail(delivery, chunk, str(exc))
                return
            else:
                delivery.delivered.append(chunk)
                return

    async def _post(self, frame: Frame, body: bytes, permit: Permit) -> HeapResponse:
        """Send; whatever happens, the permit is done when it is over (a 429's is not counted)."""
        try:
            response = await self.transport.post(frame.path, body)
        except BaseException:
            permit.done()
            raise
        permit.done(counted=response.status != 429)
        return response


def _fail(delivery: Delivery, chunk: Chunk, reason: str) -> None:
    delivery.failed += [RowIssue(key, reason) for key in chunk.keys.to_pylist()]
