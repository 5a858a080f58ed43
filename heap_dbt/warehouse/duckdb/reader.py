"""Read dbt models from DuckDB: a read-only connection with the profile's ATTACHes, streamed as Arrow."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from heap_dbt.errors import ConfigError, MissingRelationError, WarehouseError
from heap_dbt.sql import ident, lit
from heap_dbt.warehouse import Column, ColumnType
from heap_dbt.warehouse.duckdb.dialect import DuckDBDialect
from heap_dbt.warehouse.duckdb.errors import open_error, query_error
from heap_dbt.warehouse.duckdb.memory import DEFAULT_SIZING, MB, Sizing, size_bytes
from heap_dbt.warehouse.duckdb.session import canonical_session
from heap_dbt.warehouse.duckdb.state import DuckDBState

if TYPE_CHECKING:
    import pyarrow as pa

    from heap_dbt.profiles import Target
    from heap_dbt.sql import RecordQuery

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


def column_type(t: Any) -> ColumnType:
    """Reduce a DuckDB type (a ``DuckDBPyType``, whose module moves between releases) to a ColumnType."""
    type_id = t.id
    if type_id == "struct":
        return ColumnType("struct", str(t), tuple((name, column_type(child)) for name, child in t.children))
    if type_id in ("list", "array"):
        return ColumnType("list", str(t), (("element", column_type(t.children[0][1])),))
    if type_id == "map":
        return ColumnType("map", str(t), tuple((name, column_type(child)) for name, child in t.children))
    if str(t) == "JSON":  # an alias of VARCHAR; its objects flatten as Postgres' and Snowflake's JSON do
        return ColumnType("json", "JSON")
    return ColumnType(_SIMPLE_KINDS.get(type_id, "other"), str(t))


class DuckDBReader:
    """A WarehouseReader over a DuckDB file, plus the place where heap-dbt keeps its state.

    The model file is attached read-only unless the state lives in it (``writable``). A
    local state file (``state_path``) is attached read-write beside it. DuckDB's own file
    lock then keeps a second ``heap-dbt sync`` (or a ``dbt run``) off the same state.
    """

    STATE_ALIAS = "heap_dbt_state"
    dialect = DuckDBDialect()

    def __init__(
        self,
        path: Path,
        *,
        attach: list[dict[str, Any]] | None = None,
        writable: bool = False,
        state_path: Path | None = None,
        memory_limit: str | None = None,
        threads: int | None = None,
        sizing: Sizing = DEFAULT_SIZING,
    ) -> None:
        import duckdb

        if not path.exists():
            raise WarehouseError(
                f"The DuckDB file {path} does not exist; run `dbt run` first, or check the "
                "profile's `path` (dbt resolves a relative path against the working directory)."
            )
        self.path = path
        self.alias = path.stem
        self.state_path = state_path
        self.state_attached = False
        # A limit the user chose is kept; heap-dbt's own default grows with the model's width.
        self.memory_fixed = memory_limit is not None
        self.sizing = sizing
        self._tmp = tempfile.TemporaryDirectory(prefix="heap-dbt-duckdb-")
        try:
            # An in-memory database with the file attached under its own name keeps
            # relation_name ("dev"."main"."x") valid and lets DuckDB spill to a temp dir.
            self._con = duckdb.connect(
                ":memory:",
                config={
                    "memory_limit": memory_limit or sizing.default_limit,
                    "temp_directory": self._tmp.name,
                    "preserve_insertion_order": False,
                    **({"threads": threads} if threads else {}),
                },
            )
        except duckdb.Error as exc:
            self._tmp.cleanup()
            if memory_limit is None:
                raise open_error(path, exc) from exc
            raise ConfigError(  # the setting, not the file: without this the message names the file
                f"--memory-limit (or HEAP_DBT_MEMORY_LIMIT) {memory_limit!r} is not a memory size "
                f"DuckDB reads ({exc}); write it like 256MB or 1GB."
            ) from exc
        try:
            canonical_session(self._con)
            mode = "" if writable and state_path is None else " (READ_ONLY)"
            self._con.execute(f"ATTACH {lit(str(path))} AS {ident(self.alias)}{mode}")
            self._con.execute(f"USE {ident(self.alias)}")
            self.cores = int(self._setting("threads"))
            self._base_limit = self._fitted = size_bytes(self._setting("memory_limit"))
            for entry in attach or []:
                self._attach(entry)
        except duckdb.Error as exc:
            self._tmp.cleanup()
            raise open_error(path, exc) from exc
        if state_path is not None and (writable or state_path.exists()):
            try:
                created = writable and not state_path.exists()
                if writable:
                    state_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                mode = "" if writable else " (READ_ONLY)"
                self._con.execute(f"ATTACH {lit(str(state_path))} AS {self.STATE_ALIAS}{mode}")
                if created:  # it will hold the hashed keys and the run log: the owner's only
                    state_path.chmod(0o600)
                self.state_attached = True
            except (duckdb.Error, OSError) as exc:
                self.close()
                raise open_error(state_path, exc, state=True) from exc

    def _attach(self, entry: dict[str, Any]) -> None:
        apath = str(entry["path"])
        alias = entry.get("alias") or Path(apath).stem
        options = []
        if entry.get("type"):
            options.append(f"TYPE {entry['type']}")
        options.append("READ_ONLY")
        self._con.execute(f"ATTACH {lit(apath)} AS {ident(alias)} ({', '.join(options)})")

    @classmethod
    def from_target(
        cls,
        target: Target,
        *,
        project_dir: Path,
        writable: bool = False,
        state_path: Path | None = None,
        memory_limit: str | None = None,
        sizing: Sizing = DEFAULT_SIZING,
    ) -> DuckDBReader:
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
        return cls(
            path.resolve(),
            attach=list(attach),
            writable=writable,
            state_path=state_path,
            memory_limit=memory_limit,
            sizing=sizing,
        )

    def _setting(self, name: str) -> str:
        return str(self._con.execute("SELECT current_setting(?)", [name]).fetchall()[0][0])

    def fit(self, width: int, *, pipeline: bool = False) -> None:
        """Size DuckDB for queries that read ``width`` columns: enough memory for the scan,
        and fewer threads for a model too wide to scan on every core within the budget.

        ``pipeline``: the next query only scans and computes row by row (no join, no
        aggregate), so it gets its scan's memory plus the table blocks already cached, which
        it reads again. Beyond that DuckDB would keep every block it reads, up to the limit,
        and a stream never reads one twice: 30 MB of peak RSS on a 10M-row first sync.
        """
        import duckdb

        sizing = self.sizing
        need = sizing.scan_per_column * max(width, 1)
        if self.memory_fixed:
            limit = self._base_limit
            base = sizing.pipeline_base if pipeline else sizing.scan_base
            threads = max(1, min(self.cores, (limit - base) // need))
        else:
            threads = max(1, min(self.cores, sizing.wide_scan_budget // need))
            limit = max(self._base_limit, sizing.scan_base + need * threads)
            if pipeline:
                limit = min(limit, sizing.pipeline_base + need * threads + self._cached_table_bytes())
        if not pipeline:
            self._fitted = limit
        try:
            self._con.execute(f"SET threads = {threads}")
            self._con.execute(f"SET memory_limit = '{limit}B'")
        except duckdb.Error as exc:
            if not pipeline:  # a pipeline runs as well under the larger limit it keeps
                raise query_error(exc) from exc

    def grow(self) -> str | None:
        """After Out of Memory, double the limit for the next queries of this sync, up to
        ``sizing.max_growth`` times what fit() gave; the new limit, or None if the user fixed
        the limit or it cannot grow further.

        DuckDB's need is not smooth in the limit: the same query can pass at one limit and
        fail at a larger one, and fail now and then at a limit where it usually passes.
        """
        import duckdb

        current = size_bytes(self._setting("memory_limit"))
        grown = 2 * current
        if self.memory_fixed or grown > self.sizing.max_growth * self._fitted:
            return None
        try:
            self._con.execute(f"SET memory_limit = '{grown}B'")
        except duckdb.Error as exc:
            raise query_error(exc) from exc
        return f"{grown // MB}MiB"

    def _cached_table_bytes(self) -> int:
        return int(
            self._con.execute(
                "SELECT coalesce(sum(memory_usage_bytes), 0) FROM duckdb_memory() WHERE tag = 'BASE_TABLE'"
            ).fetchall()[0][0]
        )

    def state(self, *, schema: str, writable: bool) -> DuckDBState | None:
        """The state store: in the model file, or in the attached local state file.

        None when a dry run finds no local state file yet (every row is then new).
        """
        if self.state_path is not None and not self.state_attached:
            return None
        catalog = self.STATE_ALIAS if self.state_path is not None else self.alias
        store = DuckDBState(self._con, catalog=catalog, schema=schema, writable=writable)
        store.open()
        return store

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[None]:
        """Read everything inside the block from one consistent snapshot of the warehouse."""
        self._con.execute("BEGIN TRANSACTION")
        try:
            yield
        finally:
            self._con.execute("COMMIT")

    def fetch_one(self, sql: str) -> tuple[Any, ...]:
        import duckdb

        try:
            rows = self._con.execute(sql).fetchall()  # drained: DuckDB 2 blocks on open results
        except duckdb.Error as exc:
            raise query_error(exc) from exc
        return tuple(rows[0])

    def columns(self, relation: str) -> list[Column]:
        import duckdb

        try:
            rel = self._con.sql(f"SELECT * FROM {relation} LIMIT 0")  # relation_name from the manifest
        except duckdb.CatalogException as exc:
            raise MissingRelationError(str(exc), relation=relation) from exc
        except duckdb.Error as exc:
            raise WarehouseError(f"Cannot read {relation}: {exc}") from exc
        return [Column(n, column_type(t)) for n, t in zip(rel.columns, rel.types, strict=True)]

    def register(self, name: str, sql: str) -> str:
        import duckdb

        try:
            table = self._con.sql(sql).to_arrow_table()
        except duckdb.Error as exc:
            raise query_error(exc) from exc
        self._con.register(name, table)
        return name

    def records(self, query: RecordQuery, *, batch_rows: int) -> Iterator[pa.RecordBatch]:
        """Both stages in one DuckDB query: the warehouse is DuckDB itself."""
        return self.stream(query.sql, batch_rows=batch_rows)

    def stream(self, sql: str, *, batch_rows: int) -> Iterator[pa.RecordBatch]:
        import duckdb
        import pyarrow as pa

        try:
            reader = self._con.sql(sql).to_arrow_reader(batch_rows)
            yield from reader
        except (duckdb.Error, OSError, pa.ArrowException) as exc:
            # An error while the rows stream (Out of Memory, a failed cast) comes through
            # Arrow's C stream as an OSError, not a duckdb.Error.
            raise query_error(exc) from exc

    def close(self) -> None:
        self._con.close()
        self._tmp.cleanup()
