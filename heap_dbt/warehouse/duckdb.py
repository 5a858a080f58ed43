"""Read dbt models from DuckDB: a read-only connection with the profile's ATTACHes, streamed as Arrow."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from heap_dbt.errors import ConfigError, OutOfMemoryError, StateError, WarehouseError
from heap_dbt.warehouse import Column, ColumnType, MissingRelationError

if TYPE_CHECKING:
    import pyarrow as pa

    from heap_dbt.profiles import Target
    from heap_dbt.state import DuckDBState

# Keeps the sync's peak RSS bounded whatever the table size; DuckDB spills past it. Measured
# enough for 10M-row models (benchmarks/); ``fit`` raises it for wide ones.
DEFAULT_MEMORY_LIMIT = "64MB"
MB = 1024 * 1024
# A scan holds a block of every column it reads, per thread: needing 0.8-1.0 MB per column and
# thread in measurements of 50 to 250 columns (2 threads needed 96 MB at 50 columns, 256 MB at
# 150; 1 thread 128 MB at 150). DuckDB fails with Out of Memory below that, whatever the rows.
SCAN_MEMORY_PER_COLUMN = 1 * MB
SCAN_MEMORY_BASE = 32 * MB  # what a query needs besides its scan (joins and aggregates spill)
PIPELINE_MEMORY_BASE = 16 * MB  # the same for a scan-and-project stream, and the state's inserts
WIDE_SCAN_BUDGET = 256 * MB  # beyond this, a wide model gets fewer threads rather than more memory
MAX_GROWTH = 4  # after Out of Memory, a sync may get up to this many times the limit fit() gave it

_UNITS = {
    "bytes": 1, "b": 1, "kib": 1024, "mib": MB, "gib": 1024 * MB, "tib": 1024**2 * MB,
    "kb": 1000, "mb": 1000**2, "gb": 1000**3, "tb": 1000**4,
}  # fmt: skip

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


def _query_error(exc: Exception) -> WarehouseError:
    text = str(exc)
    if "Out of Memory" in text:
        # DuckDB's own advice (threads, insertion order) is about settings heap-dbt already picks.
        first = text.strip().splitlines()[0]
        return OutOfMemoryError(
            f"The warehouse query failed: {first} DuckDB ran out of the memory heap-dbt allows it; "
            "raise it with --memory-limit (e.g. 512MB) or HEAP_DBT_MEMORY_LIMIT."
        )
    return WarehouseError(f"The warehouse query failed: {text}")


def _open_error(path: Path, exc: Exception, *, state: bool = False) -> Exception:
    """A clear error for a DuckDB file that cannot be opened, locks first."""
    what = "the heap-dbt state file" if state else "DuckDB file"
    if "lock" in str(exc).lower():
        message = (
            f"Cannot open {what} {path}: another process holds its lock (another `heap-dbt sync`, "
            "or dbt). Wait for it to finish, then run heap-dbt again."
        )
        return StateError(message) if state or "Conflicting lock" in str(exc) else WarehouseError(message)
    return WarehouseError(f"Cannot open {what} {path}: {exc}.")


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def size_bytes(text: str) -> int:
    """Bytes in a DuckDB memory size: ``64MB``, ``1.5 GiB``, ``61.0 MiB``, ``512 bytes``."""
    import re

    found = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]*)?)\s*([A-Za-z]*)\s*", text)
    unit = found.group(2).lower() if found else ""
    if found is None or (unit and unit not in _UNITS):
        raise WarehouseError(f"Cannot read the memory size {text!r}; write it like 256MB or 1GB.")
    return int(float(found.group(1)) * _UNITS[unit or "b"])


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
    """A WarehouseReader over a DuckDB file, plus the place where heap-dbt keeps its state.

    The model file is attached read-only unless the state lives in it (``writable``). A
    local state file (``state_path``) is attached read-write beside it. DuckDB's own file
    lock then keeps a second ``heap-dbt sync`` (or a ``dbt run``) off the same state.
    """

    dialect = "duckdb"
    STATE_ALIAS = "heap_dbt_state"

    def __init__(
        self,
        path: Path,
        *,
        attach: list[dict[str, Any]] | None = None,
        writable: bool = False,
        state_path: Path | None = None,
        memory_limit: str | None = None,
        threads: int | None = None,
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
        self._tmp = tempfile.TemporaryDirectory(prefix="heap-dbt-duckdb-")
        try:
            # An in-memory database with the file attached under its own name keeps
            # relation_name ("dev"."main"."x") valid and lets DuckDB spill to a temp dir.
            self._con = duckdb.connect(
                ":memory:",
                config={
                    "memory_limit": memory_limit or DEFAULT_MEMORY_LIMIT,
                    "temp_directory": self._tmp.name,
                    "preserve_insertion_order": False,
                    **({"threads": threads} if threads else {}),
                },
            )
        except duckdb.Error as exc:
            self._tmp.cleanup()
            if memory_limit is None:
                raise _open_error(path, exc) from exc
            raise ConfigError(  # the setting, not the file: without this the message names the file
                f"--memory-limit (or HEAP_DBT_MEMORY_LIMIT) {memory_limit!r} is not a memory size "
                f"DuckDB reads ({exc}); write it like 256MB or 1GB."
            ) from exc
        try:
            mode = "" if writable and state_path is None else " (READ_ONLY)"
            self._con.execute(f"ATTACH {_literal(str(path))} AS {_quote(self.alias)}{mode}")
            self._con.execute(f"USE {_quote(self.alias)}")
            self.cores = int(self._setting("threads"))
            self._base_limit = self._fitted = size_bytes(self._setting("memory_limit"))
            for entry in attach or []:
                self._attach(entry)
        except duckdb.Error as exc:
            self._tmp.cleanup()
            raise _open_error(path, exc) from exc
        if state_path is not None and (writable or state_path.exists()):
            try:
                created = writable and not state_path.exists()
                if writable:
                    state_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                mode = "" if writable else " (READ_ONLY)"
                self._con.execute(f"ATTACH {_literal(str(state_path))} AS {self.STATE_ALIAS}{mode}")
                if created:  # it will hold the hashed keys and the run log: the owner's only
                    state_path.chmod(0o600)
                self.state_attached = True
            except (duckdb.Error, OSError) as exc:
                self.close()
                raise _open_error(state_path, exc, state=True) from exc

    def _attach(self, entry: dict[str, Any]) -> None:
        apath = str(entry["path"])
        alias = entry.get("alias") or Path(apath).stem
        options = []
        if entry.get("type"):
            options.append(f"TYPE {entry['type']}")
        options.append("READ_ONLY")
        self._con.execute(f"ATTACH {_literal(apath)} AS {_quote(alias)} ({', '.join(options)})")

    @classmethod
    def from_target(
        cls,
        target: Target,
        *,
        project_dir: Path,
        writable: bool = False,
        state_path: Path | None = None,
        memory_limit: str | None = None,
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

        need = SCAN_MEMORY_PER_COLUMN * max(width, 1)
        if self.memory_fixed:
            limit = self._base_limit
            base = PIPELINE_MEMORY_BASE if pipeline else SCAN_MEMORY_BASE
            threads = max(1, min(self.cores, (limit - base) // need))
        else:
            threads = max(1, min(self.cores, WIDE_SCAN_BUDGET // need))
            limit = max(self._base_limit, SCAN_MEMORY_BASE + need * threads)
            if pipeline:
                limit = min(limit, PIPELINE_MEMORY_BASE + need * threads + self._cached_table_bytes())
        if not pipeline:
            self._fitted = limit
        try:
            self._con.execute(f"SET threads = {threads}")
            self._con.execute(f"SET memory_limit = '{limit}B'")
        except duckdb.Error as exc:
            if not pipeline:  # a pipeline runs as well under the larger limit it keeps
                raise _query_error(exc) from exc

    def grow(self) -> str | None:
        """After Out of Memory, double the limit for the next queries of this sync, up to
        MAX_GROWTH times what fit() gave; the new limit, or None if the user fixed the limit
        or it cannot grow further.

        DuckDB's need is not smooth: the same 10M-row diff passes at 64 MB nine times in ten
        and fails the tenth, and a count of distinct keys that passes at 61 MB fails at 68 MB.
        """
        import duckdb

        current = size_bytes(self._setting("memory_limit"))
        grown = 2 * current
        if self.memory_fixed or grown > MAX_GROWTH * self._fitted:
            return None
        try:
            self._con.execute(f"SET memory_limit = '{grown}B'")
        except duckdb.Error as exc:
            raise _query_error(exc) from exc
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
        from heap_dbt.state import DuckDBState

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
            raise _query_error(exc) from exc
        return tuple(rows[0])

    def columns(self, relation: str) -> list[Column]:
        import duckdb

        try:
            rel = self._con.sql(f"SELECT * FROM {relation} LIMIT 0")  # relation_name from the manifest
        except duckdb.CatalogException as exc:
            raise MissingRelationError(str(exc)) from exc
        except duckdb.Error as exc:
            raise WarehouseError(f"Cannot read {relation}: {exc}") from exc
        return [Column(n, column_type(t)) for n, t in zip(rel.columns, rel.types, strict=True)]

    def register(self, name: str, sql: str) -> str:
        import duckdb

        try:
            table = self._con.sql(sql).to_arrow_table()
        except duckdb.Error as exc:
            raise _query_error(exc) from exc
        self._con.register(name, table)
        return name

    def stream(self, sql: str, *, batch_rows: int) -> Iterator[pa.RecordBatch]:
        import duckdb
        import pyarrow as pa

        try:
            reader = self._con.sql(sql).to_arrow_reader(batch_rows)
            yield from reader
        except (duckdb.Error, OSError, pa.ArrowException) as exc:
            # An error while the rows stream (Out of Memory, a failed cast) comes through
            # Arrow's C stream as an OSError, not a duckdb.Error.
            raise _query_error(exc) from exc

    def close(self) -> None:
        self._con.close()
        self._tmp.cleanup()
