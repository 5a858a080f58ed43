"""Check a URL that heap-dbt will send data or credentials to: https, or plain http to loopback only.

Pure (no I/O), so that every URL a user can give (HEAP_BASE_URL, a base_url option, later a
dbt Cloud host) goes through the same rule before anything is read or sent.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import SplitResult, urlsplit

from heap_dbt.errors import ConfigError

LOOPBACK_NAMES = frozenset({"localhost"})


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``: traffic that never leaves the machine."""
    host = host.rstrip(".").lower()
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _shown(parts: SplitResult) -> str:
    """The URL as messages may show it: scheme and host, never a user name or password."""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = f":{parts.port}" if parts.port is not None else ""
    except ValueError:
        port = ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def check_url(url: str, *, what: str) -> str:
    """Return ``url`` if heap-dbt may send to it; else raise ConfigError naming ``what``.

    https is always allowed (certificates are verified). Plain http is allowed only to a
    loopback host, e.g. the local Heap emulator, since it would carry the app_id and every
    record unencrypted. A user name or password in the URL is refused: heap-dbt would have
    to send it, and could not keep it out of error messages.
    """
    try:
        parts = urlsplit(url.strip())
        host = parts.hostname
    except ValueError:
        parts, host = None, None
    if parts is None or parts.scheme.lower() not in ("http", "https") or not host:
        raise ConfigError(
            f"{what} is not an http(s) URL; set it like https://heapanalytics.com, or "
            "http://127.0.0.1:<port> for a local Heap emulator."
        )
    if parts.username is not None or parts.password is not None:
        raise ConfigError(
            f"{what} ({_shown(parts)}) holds a user name or password; remove them: heap-dbt "
            "authenticates to Heap with the app_id alone."
        )
    if parts.scheme.lower() == "http" and not is_loopback(host):
        raise ConfigError(
            f"{what} is {_shown(parts)}, plain http to {host}, which would send the app_id and "
            "every record unencrypted; use https://, or a loopback host (127.0.0.1, ::1 or "
            "localhost) for a local Heap emulator."
        )
    return url
