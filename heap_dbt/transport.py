"""The only aiohttp client code: POST a body to Heap, return the status and headers.

aiohttp is imported, and the session opened, at the first request: a run with nothing to
send (an unchanged model) never pays the 0.2 s that takes.
"""

from __future__ import annotations

import asyncio
import os
import re
from types import TracebackType
from typing import TYPE_CHECKING, Protocol

from heap_dbt.errors import FatalAPIError, RetriableAPIError
from heap_dbt.heap import HeapResponse

if TYPE_CHECKING:
    import aiohttp

__all__ = ["AiohttpTransport", "HeapResponse", "Transport"]


class Transport(Protocol):
    """Sends one request; raises RetriableAPIError on a connection error or timeout, and
    FatalAPIError when the server's TLS certificate cannot be verified (no retry fixes that)."""

    async def post(self, path: str, body: bytes) -> HeapResponse: ...


class AiohttpTransport:
    """One aiohttp ClientSession per run, with at most ``concurrency`` connections."""

    def __init__(self, base_url: str, *, concurrency: int, timeout: float) -> None:
        self._base_url = base_url.rstrip("/")
        self._concurrency = concurrency
        self._timeout = timeout
        self._session: aiohttp.ClientSession | None = None
        self._opening = asyncio.Lock()
        self._closed = False

    async def __aenter__(self) -> AiohttpTransport:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._closed = True
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _open(self) -> aiohttp.ClientSession:
        import aiohttp

        async with self._opening:
            if self._closed:
                raise RuntimeError("AiohttpTransport is closed; use a new one.")
            if self._session is None:
                self._session = aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(limit=self._concurrency),
                    timeout=aiohttp.ClientTimeout(total=self._timeout),
                    headers={"Content-Type": "application/json", "User-Agent": "heap-dbt"},
                )
            return self._session

    async def post(self, path: str, body: bytes) -> HeapResponse:
        import aiohttp

        session = self._session or await self._open()
        try:
            async with session.post(self._base_url + path, data=body) as resp:
                text = await resp.text(errors="replace")
                return HeapResponse(resp.status, text, resp.headers.get("Retry-After"))
        except TimeoutError as exc:
            raise RetriableAPIError(f"no answer from {self._base_url} within {self._timeout:g} s") from exc
        except aiohttp.ClientConnectorCertificateError as exc:
            raise FatalAPIError(
                f"the TLS certificate of {self._base_url} could not be verified ({exc.certificate_error}); "
                "check HEAP_BASE_URL, or install the CA that signed the server's certificate"
            ) from exc
        except aiohttp.ClientConnectorError as exc:
            # aiohttp's own text names its connection key (``host:port ssl:default``), not the URL.
            raise RetriableAPIError(f"cannot connect to {self._base_url}: {_why(exc.os_error)}") from exc
        except aiohttp.ClientError as exc:
            raise RetriableAPIError(
                f"connection to {self._base_url} failed: {type(exc).__name__}: {exc}".removesuffix(": ")
            ) from exc


def _why(error: OSError) -> str:
    """An OS error as its system message ("Connection refused"), without the addresses tried."""
    if error.errno is not None and error.errno > 0:
        return os.strerror(error.errno)
    # asyncio's "Multiple exceptions: [Errno 111] ..., [Errno 111] ..." (IPv6 and IPv4 both refused)
    numbers = set(re.findall(r"\[Errno (\d+)\]", str(error)))
    if len(numbers) == 1:
        return os.strerror(int(numbers.pop()))
    return error.strerror or str(error) or type(error).__name__
