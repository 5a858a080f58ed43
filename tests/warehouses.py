"""The warehouses the integration tests run against: DuckDB (a file per project copy) and
PostgreSQL (a database per project copy, cloned from the built one).

Every test run creates its own PostgreSQL databases, named after one random prefix, and
drops them at the end of the session. Without a server the Postgres tests skip, saying how
to run them; with HEAP_DBT_REQUIRE_POSTGRES=1 (``make test``) that skip is a failure.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import shutil
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pytest

PG_HOST = os.environ.get("HEAP_DEMO_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("HEAP_DEMO_PG_PORT", "5432"))
PG_USER = os.environ.get("HEAP_DEMO_PG_USER", "postgres")
HOW_TO_RUN = (
    f"no PostgreSQL server answers at {PG_HOST}:{PG_PORT} (user {PG_USER}); start one with trust auth "
    "(or set HEAP_DEMO_PG_HOST/PORT/USER) to run the PostgreSQL tests"
)


def _pg(dbname: str = "postgres") -> Any:
    import psycopg2

    con = psycopg2.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname=dbname, connect_timeout=3)
    con.autocommit = True
    return con


def sql_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def scalar_text(value: Any) -> str:
    """A scalar's text, which every warehouse's CAST reads back as the same value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, int | Decimal):
        return str(value)
    assert isinstance(value, str), value
    return value


class Warehouse:
    """How a test reaches the warehouse a project copy was built in."""

    name = "duckdb"

    def setup(self, project: Path) -> None:
        """Point a fresh copy of the sample project at this warehouse (before its first dbt run)."""

    def copy(self, source: Path, dest: Path) -> Path:
        """A private copy of a built project, its data included."""
        shutil.copytree(source, dest)
        return dest

    def rows(self, project: Path, table: str) -> list[dict[str, Any]]:
        with duckdb.connect(str(project / "heap_demo.duckdb"), read_only=True) as con:
            cur = con.execute(f'SELECT * FROM "main"."{table}"')
            names = [d[0] for d in cur.description]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def execute(self, project: Path, statement: str) -> list[tuple[Any, ...]]:
        with duckdb.connect(str(project / "heap_demo.duckdb")) as con:
            cur = con.execute(statement)
            return cur.fetchall() if cur.description else []

    def schemas(self, project: Path) -> set[str]:
        return {r[0] for r in self.execute(project, "select schema_name from information_schema.schemata")}

    def close(self) -> None: ...

    # --- a test's input table, in this warehouse's SQL -------------------------------------
    # Tests write types in DuckDB's spelling and values as Python values; each warehouse
    # renders them as the nearest type it has (``sql_type``) and a typed expression.

    def sql_type(self, t: str) -> str:
        """This warehouse's type for DuckDB's type ``t``."""
        return t

    def value_sql(self, value: Any, t: str) -> str:
        """An expression of type ``t`` (DuckDB's spelling) holding ``value`` (None: NULL)."""
        if value is None:
            return f"CAST(NULL AS {self.sql_type(t)})"
        if isinstance(value, list):
            return self.list_sql([self.value_sql(v, t[:-2]) for v in value], t)
        if isinstance(value, dict):
            return self.struct_sql(value, t)
        return f"CAST({sql_literal(scalar_text(value))} AS {self.sql_type(t)})"

    def list_sql(self, items: list[str], t: str) -> str:
        return f"CAST([{', '.join(items)}] AS {t})"

    def struct_sql(self, value: dict[str, Any], t: str) -> str:
        def literal(v: Any) -> str:
            if isinstance(v, dict):
                return "{" + ", ".join(f"{sql_literal(k)}: {literal(x)}" for k, x in v.items()) + "}"
            if isinstance(v, float):
                return f"CAST({sql_literal(scalar_text(v))} AS DOUBLE)"
            return scalar_text(v) if isinstance(v, bool | int) else sql_literal(v)

        return f"CAST({literal(value)} AS {t})"


PG_TYPES = {
    "VARCHAR": "text",
    "DOUBLE": "double precision",
    # Postgres has no 128-bit integer: numeric(39, 0) holds every HUGEINT.
    "HUGEINT": "numeric(39, 0)",
}


class Postgres(Warehouse):
    """A database per project copy; the copy's profiles.yml defaults to it."""

    name = "postgres"

    def __init__(self) -> None:
        self.prefix = f"heapdbt_{uuid.uuid4().hex[:8]}"
        self._n = itertools.count()
        self.created: list[str] = []

    def _create(self, template: str | None = None) -> str:
        name = f"{self.prefix}_{next(self._n)}"
        self._admin(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
        self.created.append(name)
        return name

    @staticmethod
    def database(project: Path) -> str:
        found = re.search(r"HEAP_DEMO_PG_DBNAME', '([^']+)'", (project / "profiles.yml").read_text())
        assert found, "the project copy's profiles.yml names no test database"
        return found.group(1)

    def _point(self, project: Path, old: str, new: str) -> None:
        profiles = project / "profiles.yml"
        text = profiles.read_text().replace("target: dev", "target: postgres", 1)
        profiles.write_text(text.replace(f"HEAP_DEMO_PG_DBNAME', '{old}'", f"HEAP_DEMO_PG_DBNAME', '{new}'"))
        # A cloned database is the same build under another name: so are its artifacts.
        for artifact in (project / "target").glob("*.json") if (project / "target").exists() else ():
            artifact.write_text(
                artifact.read_text()
                .replace(f'\\"{old}\\"', f'\\"{new}\\"')
                .replace(f'"database": "{old}"', f'"database": "{new}"')
            )

    def setup(self, project: Path) -> None:
        self._point(project, "heap_demo", self._create())

    def copy(self, source: Path, dest: Path) -> Path:
        shutil.copytree(source, dest)
        old = self.database(source)
        self._point(dest, old, self._create(template=old))
        return dest

    def _connect(self, project: Path) -> Any:
        return _pg(self.database(project))

    def rows(self, project: Path, table: str) -> list[dict[str, Any]]:
        con = self._connect(project)
        try:
            with con.cursor() as cur:
                cur.execute(f'SELECT * FROM "public"."{table}"')
                names = [d[0] for d in cur.description]
                return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
        finally:
            con.close()

    def execute(self, project: Path, statement: str) -> list[tuple[Any, ...]]:
        con = self._connect(project)
        try:
            with con.cursor() as cur:
                cur.execute(statement)
                return list(cur.fetchall()) if cur.description else []
        finally:
            con.close()

    @staticmethod
    def _admin(*statements: str) -> None:
        con = _pg()  # not `with con`: psycopg2 would open a transaction, which CREATE DATABASE refuses
        try:
            with con.cursor() as cur:
                for statement in statements:
                    cur.execute(statement)
        finally:
            con.close()

    def sql_type(self, t: str) -> str:
        if t.endswith("[]"):
            return self.sql_type(t[:-2]) + "[]"
        if t.startswith("STRUCT("):
            # Postgres' structs are named composite types: nested data is JSON. json, not jsonb,
            # whose numbers are numeric, which has no -0.0.
            return "json"
        return PG_TYPES.get(t, t.replace("DECIMAL", "numeric"))

    def list_sql(self, items: list[str], t: str) -> str:
        return f"CAST(ARRAY[{', '.join(items)}] AS {self.sql_type(t)})"

    def struct_sql(self, value: dict[str, Any], t: str) -> str:
        return f"CAST({sql_literal(json.dumps(value))} AS json)"

    def close(self) -> None:
        self._admin(*(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)' for name in reversed(self.created)))


def postgres_or_skip() -> Postgres:
    """A Postgres warehouse, or a skip that says how to run the tests (a failure when required)."""
    try:
        _pg().close()
    except Exception as exc:
        if os.environ.get("HEAP_DBT_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"HEAP_DBT_REQUIRE_POSTGRES=1, but {HOW_TO_RUN} ({exc})")
        pytest.skip(HOW_TO_RUN)
    return Postgres()
