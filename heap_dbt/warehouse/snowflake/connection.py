"""A dbt-snowflake target's fields as the Snowflake connector's connect() arguments, checked first.

heap-dbt reads the same profile dbt does, so it takes dbt-snowflake's field names. A field
it does not use to connect is refused by name rather than ignored: a profile that relies
on it (an OAuth token, a proxy) would otherwise connect some other way than the user meant.
"""

from __future__ import annotations

import base64
import ipaddress
from pathlib import Path
from typing import TYPE_CHECKING, Any

from heap_dbt.errors import ConfigError

if TYPE_CHECKING:
    from heap_dbt.profiles import Target

CONNECT_FIELDS = (
    "account", "user", "password", "authenticator", "private_key_path", "private_key",
    "private_key_passphrase", "role", "database", "warehouse", "schema", "host", "port", "protocol",
)  # fmt: skip
"""The fields heap-dbt connects with."""

DBT_ONLY_FIELDS = (
    "type", "threads", "query_tag", "client_session_keep_alive", "connect_retries", "connect_timeout",
    "retry_on_database_errors", "retry_all", "reuse_connections",
)  # fmt: skip
"""Fields that tune how dbt runs models, not where or as whom heap-dbt connects."""

SESSION_PARAMETERS = {
    "TIMEZONE": "UTC",
    "DATE_OUTPUT_FORMAT": "YYYY-MM-DD",
    "TIMESTAMP_OUTPUT_FORMAT": "YYYY-MM-DD HH24:MI:SS.FF3 TZHTZM",
    "TIMESTAMP_NTZ_OUTPUT_FORMAT": "YYYY-MM-DD HH24:MI:SS.FF3",
    "TIMESTAMP_LTZ_OUTPUT_FORMAT": "",
    "TIMESTAMP_TZ_OUTPUT_FORMAT": "",
    "TIME_OUTPUT_FORMAT": "HH24:MI:SS",
}
"""The session parameters a key's text depends on (``TO_VARCHAR`` of a date or timestamp key),
set at login to Snowflake's documented defaults with the time zone UTC, so that an account's,
user's or a dbt profile's settings cannot change key text, event idempotency keys or the state."""
AUTHENTICATORS = ("snowflake", "snowflake_jwt", "externalbrowser", "username_password_mfa")
"""Besides these, an Okta URL (``https://<org>.okta.com``) is passed on as dbt-snowflake does."""


def _text(creds: dict[str, Any], name: str, where: str) -> str | None:
    value = creds.get(name)
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ConfigError(f"{where}: `{name}` must be text; fix it in profiles.yml.")
    return str(value)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _private_key(text: str, passphrase: str | None, where: str) -> Any:
    """The key object from ``private_key``: PEM text, or base64 of its DER bytes (as dbt-snowflake)."""
    from cryptography.hazmat.primitives import serialization

    secret = passphrase.encode() if passphrase else None
    try:
        if text.lstrip().startswith("-----BEGIN"):
            return serialization.load_pem_private_key(text.encode(), password=secret)
        return serialization.load_der_private_key(base64.b64decode(text), password=secret)
    except (ValueError, TypeError) as exc:
        # The message names the field, never the key.
        raise ConfigError(
            f"{where}: `private_key` is not a readable private key ({type(exc).__name__}); give it as "
            "PEM text or base64 DER, and `private_key_passphrase` if the key is encrypted."
        ) from None


def connect_args(target: Target) -> dict[str, Any]:
    """The ``snowflake.connector.connect`` keyword arguments for ``target``.

    Raises ConfigError naming the first field it cannot use. Secrets never appear in messages.
    """
    creds = target.credentials
    where = f"Snowflake target {target.name!r} of profile {target.profile!r}"
    unknown = [k for k in creds if k not in CONNECT_FIELDS and k not in DBT_ONLY_FIELDS]
    if unknown:
        raise ConfigError(
            f"{where}: heap-dbt does not support the field `{unknown[0]}`; it connects with "
            f"{', '.join(CONNECT_FIELDS)}. Remove the field, or use a target without it."
        )
    args: dict[str, Any] = {}
    for name in ("account", "user"):
        value = _text(creds, name, where)
        if value is None:
            raise ConfigError(f"{where} has no `{name}`; set it in profiles.yml.")
        args[name] = value
    for name in ("role", "database", "warehouse", "schema"):
        if (value := _text(creds, name, where)) is not None:
            args[name] = value
    authenticator = (_text(creds, "authenticator", where) or "").lower() or None
    if (
        authenticator is not None
        and authenticator not in AUTHENTICATORS
        and not (authenticator.startswith("https://") and ".okta.com" in authenticator)
    ):
        raise ConfigError(
            f"{where}: heap-dbt does not support authenticator {authenticator!r}; use one of "
            f"{', '.join(AUTHENTICATORS)} or an Okta URL."
        )
    key_text = _text(creds, "private_key", where)
    key_path = _text(creds, "private_key_path", where)
    passphrase = _text(creds, "private_key_passphrase", where)
    if key_text is not None and key_path is not None:
        raise ConfigError(f"{where} sets both `private_key` and `private_key_path`; keep one.")
    if key_text is not None or key_path is not None:
        if authenticator not in (None, "snowflake_jwt"):
            raise ConfigError(
                f"{where}: a private key signs in with authenticator snowflake_jwt, not "
                f"{authenticator!r}; drop one of them."
            )
        authenticator = "snowflake_jwt"
        if key_path is not None:
            path = Path(key_path).expanduser()
            if not path.is_file():
                raise ConfigError(f"{where}: `private_key_path` {path} is not a file.")
            key_text = path.read_text()
        assert key_text is not None
        args["private_key"] = _private_key(key_text, passphrase, where)
    elif passphrase is not None:
        raise ConfigError(
            f"{where} sets `private_key_passphrase` but no private key; drop it or add the key."
        )
    elif authenticator == "snowflake_jwt":
        raise ConfigError(f"{where}: authenticator snowflake_jwt needs `private_key_path` or `private_key`.")
    password = _text(creds, "password", where)
    if password is not None:
        args["password"] = password
    elif authenticator in (None, "snowflake", "username_password_mfa"):
        raise ConfigError(f"{where} has no `password` (nor a private key); set one in profiles.yml.")
    if authenticator is not None:
        args["authenticator"] = authenticator.upper() if "://" not in authenticator else authenticator
    host = _text(creds, "host", where)
    if host is not None:
        args["host"] = host
    port = creds.get("port")
    if port is not None:
        if isinstance(port, bool) or not str(port).isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"{where}: `port` {port!r} is not a port number; fix it in profiles.yml.")
        args["port"] = int(port)
    protocol = (_text(creds, "protocol", where) or "https").lower()
    if protocol not in ("http", "https"):
        raise ConfigError(
            f"{where}: `protocol` must be https (or http to a local emulator), not {protocol!r}."
        )
    if protocol == "http" and not (host is not None and _is_loopback(host)):
        # Plain http would send the password in clear; only an emulator on this machine may have it.
        raise ConfigError(
            f"{where}: `protocol: http` is only allowed with a loopback `host` (a local emulator); "
            "use https for Snowflake."
        )
    args["protocol"] = protocol
    # Exact decimals: without it the connector turns NUMBER(p, s > 0) into doubles.
    args["arrow_number_to_decimal"] = True
    # The list of installed packages is no business of the warehouse.
    args["log_imported_packages_in_telemetry"] = False
    args["application"] = "heap_dbt"  # the connector takes [A-Za-z0-9_] names
    connect_timeout = creds.get("connect_timeout")
    if isinstance(connect_timeout, int) and not isinstance(connect_timeout, bool):
        args["login_timeout"] = connect_timeout
    args["session_parameters"] = dict(SESSION_PARAMETERS)
    query_tag = _text(creds, "query_tag", where)
    if query_tag is not None:
        args["session_parameters"]["QUERY_TAG"] = query_tag
    return args
