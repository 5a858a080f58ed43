"""Read dbt models from DuckDB: a read-only connection with the profile's ATTACHes, streamed as Arrow."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from heap_dbt.errors import WarehouseError
from heap_dbt.warehouse import Column, ColumnType, MissingRelationError

if TYPE_CHECKING:
    import pyarrow as pa

    from heap_dbt.profiles import Target

# Keeps the sync's peak RSS bounded whatever the table size; DuckDB spills past it.
DEFAULT_MEMORY_LIMIT = "160MB"

_SIMPLE_KINDS: dict[str, Any] = {
    "varchar": "string", "uuid": "string", "enum": "string",
    "tinyint": "integer", "smallint": "integer", "integer": "integer", "bigint": "integer",
    "hugeint": "integer", "utinyint": "integer", "usmallint": "integer", "uinteger": "integer",
    "ubigint": "integer", "uhugeint": "integer",
    "float": "float", "double": "float", "decimal": "decimal", "boolean": "boolean",
    "date": "date", "timestamp": "timestamp", "timestamp_s": "timestamp",
    "timestamp_ms": "timestamp", "timestamp_ns": "timestamp",
    "timestamp with time zone": "timestamptz",
}  # fmt: skip


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def column_type(t: Any) -> ColumnType:
    """Reduce a DuckDB type (a ``DuckDBPyType``, whose module moves between releases) to a ColumnType."""
    type_id = t.id
    if type_id == "struct":
        return ColumnType("struct", str(t), tuple((name, column_type(child)) for name, child in t.children))
    if type_id in ("list", "array"):
        return ColumnType("list", str(t), (("element", column_type(t.children[0][1])),))
    if type_id == "map":
        return ColumnType("map", str(t), tuple((name, column_type(child)) for name, child in t.children))
    return ColumnType(_SIMPLE_KINDS.get(type_id, "other"), str(t))


class DuckDBReader:
    """A WarehouseReader over a DuckDB file opened read-only."""

    dialect = "duckdb"

    def __init__(
        self,
        path: Path,
        *,
        attach: list[dict[str, Any]] | None = None,
        memory_limit: str = DEFAULT_MEMORY_LIMIT,
        threads: int | None = None,
    ) -> None:
        import duckdb

        if not path.exists():
            raise WarehouseError(
                f"The DuckDB file {path} does not exist; run `dbt run` first, or check the "
                "profile's `path` (dbt resolves a relative path against the working directory)."
            )
        self._tmp = tempfile.TemporaryDirectory(prefix="heap-dbt-duckdb-")
        try:
            # An in-memory database with the file attached under its own name keeps
            # relation_name ("dev"."main"."x") valid and lets DuckDB spill to a temp dir.
            self._con = duckdb.connect(
                ":memory:",
                config={
                    "memory_limit": memory_limit,
                    "temp_directory": self._tmp.name,
                    "preserve_insertion_order": False,
                    **({"threads": threads} if threads else {}),
                },
            )
            alias = path.stem
            self._con.execute(f"ATTACH {_literal(str(path))} AS {_quote(alias)} (READ_ONLY)")
            self._con.execute(f"USE {_quote(alias)}")
            for entry in attach or []:
                self._attach(entry)
        except duckdb.Error as exc:
            self._tmp.cleanup()
            hint = (
                " Another process (dbt?) holds a write lock on it; run heap-dbt after it exits."
                if "lock" in str(exc).lower()
                else ""
            )
            raise WarehouseError(f"Cannot open DuckDB file {path}: {exc}.{hint}") from exc

    def _attach(self, entry: dict[str, Any]) -> None:
        apath = str(entry["path"])
        alias = entry.get("alias") or Path(apath).stem
        options = []
        if entry.get("type"):
            options.append(f"TYPE {entry['type']}")
        options.append("READ_ONLY")
        self._con.execute(f"ATTACH {_literal(apath)} AS {_quote(alias)} ({', '.join(options)})")

    @classmethod
    def from_target(cls, target: Target, *, project_dir: Path) -> DuckDBReader:
        """Open the DuckDB database that a dbt-duckdb target points at."""
        raw = str(target.credentials.get("path", ":memory:"))
        if raw == ":memory:" or raw.startswith("md:"):
            raise WarehouseError(
                f"Target {target.name!r} uses DuckDB path {raw!r}, which keeps nothing after "
                "dbt exits; point `path` at a file."
            )
        path = Path(raw).expanduser()
        if not path.is_absolute():
            # dbt resolves a relative path against the working directory; fall back to the
            # project dir, where `make` and most users run dbt from.
            cwd_path = Path.cwd() / path
            path = cwd_path if cwd_path.exists() else project_dir / path
        attach = target.credentials.get("attach") or []
        return cls(path.resolve(), attach=list(attach))

    def columns(self, relation: str) -> list[Column]:
        import duckdb

        try:
            rel = self._con.sql(f"SELECT * FROM {relation} LIMIT 0")  # relation_name from the manifest
        except duckdb.CatalogException as exc:
            raise MissingRelationError(str(exc)) from exc
        except duckdb.Error as exc:
            raise WarehouseError(f"Cannot read {relation}: {exc}") from exc
        return [Column(n, column_type(t)) for n, t in zip(rel.columns, rel.types, strict=True)]

    def stream(self, sql: str, *, batch_rows: int) -> Iterator[pa.RecordBatch]:
        import duckdb

        try:
            reader = self._con.sql(sql).to_arrow_reader(batch_rows)
            yield from reader
        except duckdb.Error as exc:
            raise WarehouseError(f"The warehouse query failed: {exc}") from exc

    def close(self) -> None:
        self._con.close()
        self._tmp.cleanup()
