"""Scripted fakes for unit tests: a clock that never sleeps and a Heap that answers from a script."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from heap_dbt.transport import HeapResponse

Answer = int | HeapResponse | BaseException
"""A scripted answer: a status code, a full response, or an exception to raise."""


class FakeClock:
    """``monotonic()`` is a float that only moves when ``sleep`` or ``advance`` moves it;
    ``time()`` is the wall clock, ``wall`` seconds since the epoch at the start, moving with it."""

    def __init__(self, start: float = 1000.0, *, wall: float = 1_700_000_000.0) -> None:
        self.now = start
        self._wall_offset = wall - start
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return self.now + self._wall_offset

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += max(0.0, seconds)

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass(frozen=True)
class Request:
    """One request the FakeTransport received."""

    path: str
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def items(self) -> list[Any]:
        """The records of a bulk body, whatever the array is called."""
        doc = self.json()
        (array,) = (k for k in doc if k != "app_id")
        items: list[Any] = doc[array]
        return items


def response(status: int, text: str = "", *, retry_after: str | None = None) -> HeapResponse:
    return HeapResponse(status, text, retry_after)


class FakeTransport:
    """A Heap that answers each path from a script, e.g. ``{"/api/track": [500, 503, 200]}``.

    When a path's script runs out, ``respond(path, body)`` decides (if given), else ``default``.
    Every request is recorded, in order, whatever the answer.
    """

    def __init__(
        self,
        script: dict[str, Iterable[Answer]] | None = None,
        *,
        respond: Callable[[str, bytes], Answer] | None = None,
        default: Answer = 200,
    ) -> None:
        self.script = {path: list(answers) for path, answers in (script or {}).items()}
        self.respond = respond
        self.default = default
        self.requests: list[Request] = []
        self.answers: list[Answer] = []

    async def post(self, path: str, body: bytes) -> HeapResponse:
        self.requests.append(Request(path, body))
        queue = self.script.get(path)
        if queue:
            answer = queue.pop(0)
        elif self.respond is not None:
            answer = self.respond(path, body)
        else:
            answer = self.default
        self.answers.append(answer)
        if isinstance(answer, BaseException):
            raise answer
        if isinstance(answer, int):
            return HeapResponse(answer, "", None)
        return answer

    def delivered(self) -> list[Any]:
        """Every record of every request answered with a 2xx, in the order they were sent."""
        out: list[Any] = []
        for request, answer in zip(self.requests, self.answers, strict=True):
            status = answer if isinstance(answer, int) else getattr(answer, "status", None)
            if status is not None and 200 <= status < 300:
                out += request.items()
        return out
