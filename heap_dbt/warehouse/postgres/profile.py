"""A dbt-postgres target's fields as a libpq connection string, the way dbt-postgres connects.

Every field dbt-postgres reads is either used as dbt uses it or named in a configuration
error: a connection that silently differs from dbt's would read another database.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from heap_dbt.errors import ConfigError

CONNECTION_FIELDS = (
    "host", "port", "user", "password", "dbname", "sslmode", "sslcert", "sslkey", "sslrootcert",
    "connect_timeout", "keepalives_idle", "application_name",
)  # fmt: skip
"""Passed to libpq under their own names (``dbname`` may be spelt ``database``, ``password`` ``pass``)."""
IGNORED_FIELDS = ("type", "threads", "schema", "retries")
"""dbt's own: heap-dbt runs no models (threads, schema: relations come fully qualified from the
manifest) and retries nothing at connect (retries)."""
SESSION_FIELDS = ("search_path", "role")
"""Set on the session after connecting, as dbt-postgres does."""
_ALIASES = {"database": "dbname", "pass": "password"}


@dataclass(frozen=True)
class PostgresProfile:
    conninfo: str
    database: str
    search_path: str | None
    role: str | None


def _quote(value: Any) -> str:
    text = str(value)
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def parse_profile(name: str, credentials: dict[str, Any]) -> PostgresProfile:
    """The connection of target ``name``; ConfigError naming any field heap-dbt does not support."""
    fields: dict[str, Any] = {}
    unknown = []
    for key, value in credentials.items():
        canonical = _ALIASES.get(key, key)
        if canonical in CONNECTION_FIELDS or canonical in SESSION_FIELDS:
            if value is not None:
                fields[canonical] = value
        elif key not in IGNORED_FIELDS:
            unknown.append(key)
    if unknown:
        raise ConfigError(
            f"Target {name!r} sets {', '.join(sorted(unknown))}, which heap-dbt's postgres connection "
            "does not support; remove it from the target, or use a target without it "
            f"(supported: {', '.join(CONNECTION_FIELDS + SESSION_FIELDS)})."
        )
    for required in ("host", "user", "dbname"):
        if required not in fields:
            raise ConfigError(
                f"Target {name!r} has no {required!r}; dbt-postgres needs it, and so does heap-dbt."
            )
    if "port" not in fields:
        fields["port"] = 5432
    parts = [f"{k}={_quote(fields[k])}" for k in CONNECTION_FIELDS if k in fields]
    return PostgresProfile(
        conninfo=" ".join(parts),
        database=str(fields["dbname"]),
        search_path=str(fields["search_path"]) if "search_path" in fields else None,
        role=str(fields["role"]) if "role" in fields else None,
    )
