"""Snowflake as a warehouse of the parametrised integration tests: a database per project copy on
fakesnow's server (``tests/fakesnow_server.py``), which lives for the session and keeps them in memory.

fakesnow cannot clone or drop a database; a copy clones the built project's tables one by one
into a new database instead, and the server's end drops them all.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import re
import shutil
import uuid
from pathlib import Path
from typing import Any

from tests.fakesnow_server import FakeSnow
from tests.warehouses import Warehouse, sql_literal

SCHEMA = "analytics"
TIMESTAMPS = (4, 6, 7, 8)
"""The connector's type codes of TIMESTAMP, TIMESTAMP_LTZ, TIMESTAMP_TZ, TIMESTAMP_NTZ."""
JSON_TYPES = (5, 9, 10)
"""VARIANT, OBJECT, ARRAY: JSON text."""

SF_TYPES = {
    "DOUBLE": "FLOAT",
    # NUMBER(38, 0): Snowflake's widest integer, 38 digits (a HUGEINT's top value has 39).
    "HUGEINT": "NUMBER(38, 0)",
    "TIMESTAMPTZ": "TIMESTAMP_TZ",
    "TIMESTAMP": "TIMESTAMP_NTZ",
}


class Snowflake(Warehouse):
    """A database per project copy; the copy's profiles.yml defaults to it and to the server's port."""

    name = "snowflake"

    def __init__(self, server: FakeSnow) -> None:
        self.server = server
        self.prefix = f"heapdbt_{uuid.uuid4().hex[:8]}"
        self._n = itertools.count()
        self._con: Any = None

    def _connection(self) -> Any:
        if self._con is None:
            import snowflake.connector

            self._con = snowflake.connector.connect(**self.server.connect_args())
        return self._con

    def _run(self, statement: str) -> list[tuple[Any, ...]]:
        cur = self._connection().cursor()
        try:
            cur.execute(statement)
            return list(cur.fetchall()) if cur.description else []
        finally:
            cur.close()

    def _create(self) -> str:
        name = f"{self.prefix}_{next(self._n)}"
        self._run(f"CREATE DATABASE {name}")
        self._run(f"CREATE SCHEMA {name}.{SCHEMA}")
        return name

    @staticmethod
    def database(project: Path) -> str:
        found = re.search(r"HEAP_DEMO_SNOWFLAKE_DATABASE', '([^']+)'", (project / "profiles.yml").read_text())
        assert found, "the project copy's profiles.yml names no test database"
        return found.group(1)

    def _point(self, project: Path, old: str, new: str) -> None:
        profiles = project / "profiles.yml"
        text = profiles.read_text().replace("target: dev", "target: snowflake", 1)
        text = re.sub(
            r"HEAP_DEMO_SNOWFLAKE_PORT', '\d+'", f"HEAP_DEMO_SNOWFLAKE_PORT', '{self.server.port}'", text
        )
        profiles.write_text(
            text.replace(f"HEAP_DEMO_SNOWFLAKE_DATABASE', '{old}'", f"HEAP_DEMO_SNOWFLAKE_DATABASE', '{new}'")
        )
        # The copy is the same build in another database: so are its artifacts.
        for artifact in (project / "target").glob("*.json") if (project / "target").exists() else ():
            artifact.write_text(
                artifact.read_text()
                .replace(f'"{old}.{SCHEMA}.', f'"{new}.{SCHEMA}.')
                .replace(f'"database": "{old}"', f'"database": "{new}"')
            )

    def setup(self, project: Path) -> None:
        self._point(project, "heap_demo", self._create())

    def copy(self, source: Path, dest: Path) -> Path:
        shutil.copytree(source, dest)
        old, new = self.database(source), self._create()
        tables = self._run(
            f"SELECT table_name FROM {old}.information_schema.tables WHERE table_schema = '{SCHEMA.upper()}'"
        )
        for (table,) in tables:
            self._run(f"CREATE TABLE {new}.{SCHEMA}.{table} CLONE {old}.{SCHEMA}.{table}")
        # heap-dbt's state, when the source project has synced: the copy continues it.
        state = self._run(
            f"SELECT table_name FROM {old}.information_schema.tables WHERE table_schema = 'heap_dbt'"
        )
        if state:
            self._run(f'CREATE SCHEMA {new}."heap_dbt"')
        for (table,) in state:
            self._run(f'CREATE TABLE {new}."heap_dbt"."{table}" CLONE {old}."heap_dbt"."{table}"')
        self._point(dest, old, new)
        return dest

    def rows(self, project: Path, table: str) -> list[dict[str, Any]]:
        """The table's rows as Python values: timestamps as naive UTC datetimes, JSON parsed.

        Timestamps are read as epoch milliseconds: fakesnow returns a NULL timestamp as 1970-01-01.
        """
        relation = f"{self.database(project)}.{SCHEMA}.{table}"
        cur = self._connection().cursor()
        try:
            cur.execute(f"SELECT * FROM {relation} LIMIT 0")
            meta = [(d.name, d.type_code) for d in cur.description]
            select = ", ".join(
                f'DATE_PART(EPOCH_MILLISECOND, "{n}")' if code in TIMESTAMPS else f'"{n}"' for n, code in meta
            )
            cur.execute(f"SELECT {select} FROM {relation}")
            out = []
            for row in cur.fetchall():
                values = {}
                for (n, code), v in zip(meta, row, strict=True):
                    if v is not None and code in TIMESTAMPS:
                        v = dt.datetime(1970, 1, 1) + dt.timedelta(milliseconds=int(v))
                    elif v is not None and code in JSON_TYPES:
                        v = json.loads(v)
                    values[n.lower()] = v
                out.append(values)
            return out
        finally:
            cur.close()

    def execute(self, project: Path, statement: str) -> list[tuple[Any, ...]]:
        self._run(f"USE DATABASE {self.database(project)}")
        self._run(f"USE SCHEMA {SCHEMA}")
        return self._run(statement)

    def schemas(self, project: Path) -> set[str]:
        rows = self._run(f"SELECT schema_name FROM {self.database(project)}.information_schema.schemata")
        return {str(r[0]).lower() for r in rows}

    def sql_type(self, t: str) -> str:
        if t.endswith("[]"):
            return "ARRAY"  # Snowflake's arrays hold VARIANTs: no element type
        if t.startswith("STRUCT("):
            return "OBJECT"
        return SF_TYPES.get(t, t.replace("DECIMAL", "NUMBER"))

    def list_sql(self, items: list[str], t: str) -> str:
        # Cast: fakesnow cannot describe the typed DuckDB list ARRAY_CONSTRUCT alone makes.
        return f"CAST(ARRAY_CONSTRUCT({', '.join(items)}) AS ARRAY)"

    def struct_sql(self, value: dict[str, Any], t: str) -> str:
        return f"CAST(PARSE_JSON({sql_literal(json.dumps(value))}) AS OBJECT)"

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None
