"""The dbt Cloud Admin API v2 over HTTP: authenticated GETs, retries on 429 and 5xx, refusals as errors.

The only aiohttp client code besides ``heap_dbt.transport`` (which speaks to Heap); aiohttp
is imported when a client opens, so a sync without dbt Cloud never imports it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import msgspec

from heap_dbt import __version__
from heap_dbt.errors import (
    DbtCloudAuthError,
    DbtCloudError,
    DbtCloudNotFoundError,
    DbtCloudUnreachableError,
)

if TYPE_CHECKING:
    import aiohttp

    from heap_dbt.clock import Clock
    from heap_dbt.dbt_cloud import CloudConfig

REQUEST_TIMEOUT = 120.0
"""Seconds for one request, the body included (a large project's manifest takes a while)."""
MAX_ATTEMPTS = 4
"""Attempts per request on 429, 5xx, a connection error or a timeout (the Admin API rate-limits)."""
BACKOFF_SECONDS = 0.5
"""The wait before the second attempt; it doubles for each one after (Retry-After, if longer, wins)."""


class AdminClient:
    """GET requests to one account of the Admin API v2, retried on 429 and 5xx; one session."""

    def __init__(self, cloud: CloudConfig, *, clock: Clock) -> None:
        self.cloud = cloud
        self.clock = clock
        self.prefix = f"{cloud.base_url}/api/v2/accounts/{cloud.account_id}/"
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> AdminClient:
        import aiohttp

        headers = {
            "Authorization": f"Token {self.cloud.token}",
            "Accept": "application/json",
            "User-Agent": f"heap-dbt/{__version__}",
        }
        self._session = aiohttp.ClientSession(
            headers=headers, timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
        )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def account_missing(self) -> bool:
        """After a 404: True when the account itself is unknown. Asked only then, because a
        token with access to jobs only may be refused the account's details."""
        try:
            await self.raw("", what=f"account {self.cloud.account_id}")
        except DbtCloudNotFoundError:
            return True
        except DbtCloudError:
            return False
        return False

    async def raw(self, path: str, *, what: str, params: Mapping[str, str] | None = None) -> bytes:
        import aiohttp

        assert self._session is not None, "use AdminClient in `async with`"
        problem, delay = "", 0.0
        for attempt in range(MAX_ATTEMPTS):
            if attempt:
                await self.clock.sleep(delay)
            delay = BACKOFF_SECONDS * 2**attempt
            try:
                async with self._session.get(self.prefix + path, params=params or {}) as resp:
                    body = await resp.read()
                    status, retry_after = resp.status, resp.headers.get("Retry-After")
            except aiohttp.ClientConnectorDNSError as exc:
                raise self._unreachable(f"its name does not resolve: {exc.os_error}") from exc
            except aiohttp.ClientConnectorCertificateError as exc:
                raise self._unreachable(
                    f"its TLS certificate could not be verified: {exc.certificate_error}"
                ) from exc
            except (aiohttp.ClientError, TimeoutError) as exc:
                problem = (
                    f"no answer within {REQUEST_TIMEOUT:g} s" if isinstance(exc, TimeoutError) else str(exc)
                )
                continue
            if status < 300:
                return body
            if status == 429 or status >= 500:
                problem = f"HTTP {status}"
                delay = max(delay, _seconds(retry_after))
                continue
            raise self._refused(status, body, what=what)
        raise self._unreachable(f"{problem}, {MAX_ATTEMPTS} times, for {what}")

    async def data(self, path: str, *, what: str, params: Mapping[str, str] | None = None) -> Any:
        body = await self.raw(path, what=what, params=params)
        try:
            doc = msgspec.json.decode(body)
        except msgspec.DecodeError:
            doc = None
        if not isinstance(doc, dict) or "data" not in doc:
            raise DbtCloudError(
                f"dbt Cloud at {self.cloud.base_url} answered for {what} with something that is not "
                "Admin API v2 JSON; check DBT_CLOUD_HOST (or --dbt-cloud-host)."
            )
        return doc["data"]

    def _unreachable(self, why: str) -> DbtCloudUnreachableError:
        return DbtCloudUnreachableError(
            f"Cannot reach dbt Cloud at {self.cloud.base_url} ({why}); check DBT_CLOUD_HOST "
            "(or --dbt-cloud-host) and the network, or try again later."
        )

    def _refused(self, status: int, body: bytes, *, what: str) -> DbtCloudError:
        if status in (401, 403):
            return DbtCloudAuthError(
                f"dbt Cloud refused the API token (HTTP {status}) for {what}; set DBT_CLOUD_API_TOKEN "
                "(or --dbt-cloud-token) to a service token that can read this account's jobs and runs.",
                status=status,
            )
        if status == 404:
            return DbtCloudNotFoundError(
                f"dbt Cloud at {self.cloud.base_url} has no {what} (HTTP 404); check the ID, and "
                "DBT_CLOUD_ACCOUNT_ID and DBT_CLOUD_HOST.",
                status=status,
            )
        return DbtCloudError(
            f"dbt Cloud answered HTTP {status} for {what}{_user_message(body)}.", status=status
        )


def _seconds(value: str | None) -> float:
    try:
        return min(max(float(value or 0), 0.0), 60.0)
    except ValueError:
        return 0.0


def _user_message(body: bytes) -> str:
    """dbt Cloud's own explanation of a refusal, short, if it gave one."""
    try:
        doc = msgspec.json.decode(body)
        message = doc["status"]["user_message"]
    except (msgspec.DecodeError, KeyError, TypeError):
        return ""
    return f": {str(message)[:200]}" if message else ""
