"""The only aiohttp client code: POST a body to Heap, return the status and headers."""

from __future__ import annotations

from dataclasses import dataclass
from types import TracebackType
from typing import Protocol

import aiohttp

from heap_dbt.errors import RetriableAPIError


@dataclass(frozen=True)
class HeapResponse:
    status: int
    text: str
    retry_after: str | None


class Transport(Protocol):
    """Sends one request; raises RetriableAPIError on a connection error or timeout."""

    async def post(self, path: str, body: bytes) -> HeapResponse: ...


class AiohttpTransport:
    """One aiohttp ClientSession per run, with at most ``concurrency`` connections."""

    def __init__(self, base_url: str, *, concurrency: int, timeout: float) -> None:
        self._base_url = base_url.rstrip("/")
        self._concurrency = concurrency
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> AiohttpTransport:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self._concurrency),
            timeout=self._timeout,
            headers={"Content-Type": "application/json", "User-Agent": "heap-dbt"},
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def post(self, path: str, body: bytes) -> HeapResponse:
        if self._session is None:
            raise RuntimeError("AiohttpTransport is not open; use it as `async with`.")
        try:
            async with self._session.post(self._base_url + path, data=body) as resp:
                text = await resp.text(errors="replace")
                return HeapResponse(resp.status, text, resp.headers.get("Retry-After"))
        except TimeoutError as exc:
            raise RetriableAPIError(f"no answer from Heap within {self._timeout.total:g} s") from exc
        except aiohttp.ClientError as exc:
            raise RetriableAPIError(f"connection error: {type(exc).__name__}: {exc}") from exc
