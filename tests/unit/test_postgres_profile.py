"""A dbt-postgres target as heap-dbt's connection, and Postgres types as the record SQL sees them."""

from __future__ import annotations

import pytest

from heap_dbt.errors import ConfigError
from heap_dbt.warehouse.postgres.profile import parse_profile
from heap_dbt.warehouse.postgres.reader import column_of

BASE = {"type": "postgres", "host": "db.internal", "user": "analyst", "dbname": "analytics", "threads": 4}


def test_the_fields_dbt_postgres_reads_become_the_connection_string() -> None:
    profile = parse_profile(
        "prod",
        {
            **BASE, "port": 6543, "pass": "s'cret", "sslmode": "verify-full", "sslrootcert": "/ca.pem",
            "sslcert": "/c.pem", "sslkey": "/k.pem", "connect_timeout": 5, "keepalives_idle": 30,
            "search_path": "marts,public", "role": "reporter", "schema": "marts", "retries": 2,
        },
    )  # fmt: skip

    assert profile.conninfo == (
        "host='db.internal' port='6543' user='analyst' password='s\\'cret' dbname='analytics' "
        "sslmode='verify-full' sslcert='/c.pem' sslkey='/k.pem' sslrootcert='/ca.pem' "
        "connect_timeout='5' keepalives_idle='30'"
    )
    assert (profile.database, profile.search_path, profile.role) == ("analytics", "marts,public", "reporter")


def test_database_is_dbnames_other_name_and_the_port_defaults_to_5432() -> None:
    profile = parse_profile("dev", {"type": "postgres", "host": "h", "user": "u", "database": "d"})

    assert profile.conninfo == "host='h' port='5432' user='u' dbname='d'"


@pytest.mark.parametrize("field", ["sslcrl", "sslpassword", "target_session_attrs"])
def test_a_field_heap_dbt_does_not_support_is_a_config_error_naming_it(field: str) -> None:
    with pytest.raises(ConfigError, match=f"Target 'prod' sets {field}, which heap-dbt"):
        parse_profile("prod", {**BASE, field: "x"})


def test_a_missing_host_is_named() -> None:
    with pytest.raises(ConfigError, match="has no 'host'"):
        parse_profile("prod", {"type": "postgres", "user": "u", "dbname": "d"})


@pytest.mark.parametrize(
    ("typname", "typmod", "element", "kind", "sql", "export", "restore"),
    [
        ("int8", -1, None, "integer", "BIGINT", "{}", "{}"),
        (
            "numeric", (12 << 16 | 2) + 4, None, "decimal", "DECIMAL(12,2)", "{}",
            "CASE WHEN lower({0}) = 'nan' THEN NULL ELSE CAST({0} AS DECIMAL(12,2)) END",
        ),
        ("numeric", -1, None, "decimal", "NUMERIC", "{}", "{}"),
        ("numeric", (60 << 16 | 2) + 4, None, "decimal", "NUMERIC", "{}", "{}"),
        ("uuid", -1, None, "string", "VARCHAR", "CAST({} AS text)", "{}"),
        ("bpchar", 8, None, "string", "VARCHAR", "CAST({} AS text)", "{}"),
        ("jsonb", -1, None, "json", "JSON", "{}", "{}"),
        (
            "timestamptz", -1, None, "timestamptz", "TIMESTAMP WITH TIME ZONE", "{}",
            "CASE WHEN epoch_us({0}) < -211000000000000000 THEN CAST('infinity' AS TIMESTAMPTZ) ELSE {0} END",
        ),
        ("_text", -1, "text", "list", "VARCHAR[]", "{}", "{}"),
        ("_numeric", -1, "numeric", "list", "VARCHAR[]", "CAST({} AS text[])", "{}"),
        ("bytea", -1, None, "unsupported", "bytea", "{}", "{}"),
        ("interval", -1, None, "unsupported", "interval", "{}", "{}"),
    ],
    ids=[
        "bigint", "numeric(12,2)", "numeric", "numeric(60,2)", "uuid", "char", "jsonb", "timestamptz",
        "text[]", "numeric[]", "bytea", "interval",
    ],
)  # fmt: skip
def test_postgres_types_map_onto_the_conversion_rules(
    typname: str, typmod: int, element: str | None, kind: str, sql: str, export: str, restore: str
) -> None:
    column = column_of("c", typname, typname, typmod, element)

    assert (column.type.kind, column.type.sql, column.export, column.restore) == (kind, sql, export, restore)
    # A NaN the DECIMAL cannot hold, or a numeric[]'s NaN element, is rejected, not restored away.
    assert (column.rejects is not None) == (typname == "_numeric" or sql.startswith("DECIMAL"))
