"""The warehouse seam: one small protocol, one package per engine.

Each engine package (``heap_dbt.warehouse.duckdb``) turns a dbt target into a
``WarehouseReader`` that describes relations, streams the rows of a query as bounded Arrow
record batches, and opens the engine's ``StateStore`` (``heap_dbt.state``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from heap_dbt.errors import ConfigError

if TYPE_CHECKING:
    import pyarrow as pa

    from heap_dbt.profiles import Target
    from heap_dbt.state import StateStore

Kind = Literal[
    "string", "integer", "float", "decimal", "boolean", "date", "timestamp",
    "timestamptz", "list", "struct", "map", "json", "other", "unsupported",
]  # fmt: skip
"""How a value converts (``heap_dbt.sql``). ``json``: JSON text, whose objects flatten to dotted
names; ``unsupported``: a type heap-dbt cannot convert, a configuration error if a sync uses it."""


@dataclass(frozen=True)
class ColumnType:
    """A warehouse type reduced to what value conversion needs."""

    kind: Kind
    sql: str = ""
    children: tuple[tuple[str, ColumnType], ...] = field(default_factory=tuple)
    """Struct fields (name, type); a list's element as ("element", type); a map's key and value."""


@dataclass(frozen=True)
class Column:
    name: str
    type: ColumnType


class WarehouseReader(Protocol):
    """What the engine needs from a warehouse; errors are WarehouseErrors (``heap_dbt.errors``)."""

    def columns(self, relation: str) -> list[Column]:
        """The columns of ``relation``; raises MissingRelationError if it does not exist."""
        ...

    def stream(self, sql: str, *, batch_rows: int) -> Iterator[pa.RecordBatch]:
        """Run ``sql`` and yield its rows in batches of at most ``batch_rows``."""
        ...

    def fetch_one(self, sql: str) -> tuple[Any, ...]:
        """The first row of ``sql``."""
        ...

    def fit(self, width: int, *, pipeline: bool = False) -> None:
        """Size the working memory and parallelism for the queries of one sync, which read
        ``width`` columns (struct fields counted one by one); ``pipeline`` when the next
        query has no join or aggregate."""
        ...

    def grow(self) -> str | None:
        """After Out of Memory: more memory for the next queries; the new limit, or None."""
        ...

    def register(self, name: str, sql: str) -> str:
        """Keep the (small) result of ``sql`` as a table the next queries can join; its name."""
        ...

    def snapshot(self) -> AbstractContextManager[None]:
        """Run the queries inside the block on one consistent snapshot."""
        ...

    def state(self, *, schema: str, writable: bool) -> StateStore | None:
        """Where heap-dbt keeps its sync state for this warehouse."""
        ...

    def close(self) -> None: ...


class ReaderFactory(Protocol):
    """``open_reader``'s signature, for callers that open readers their own way (tests, embedding)."""

    def __call__(
        self,
        target: Target,
        *,
        project_dir: Path,
        writable: bool = False,
        state_path: Path | None = None,
        memory_limit: str | None = None,
    ) -> WarehouseReader: ...


def open_reader(
    target: Target,
    *,
    project_dir: Path,
    writable: bool = False,
    state_path: Path | None = None,
    memory_limit: str | None = None,
) -> WarehouseReader:
    """Open a reader for the dbt ``target``.

    ``writable`` lets heap-dbt write its state: into the warehouse itself, or, with
    ``state_path``, into that local DuckDB file while the warehouse stays read-only.
    """
    if target.type == "duckdb":
        from heap_dbt.warehouse.duckdb import DuckDBReader

        return DuckDBReader.from_target(
            target,
            project_dir=project_dir,
            writable=writable,
            state_path=state_path,
            memory_limit=memory_limit,
        )
    raise ConfigError(f"Target {target.name!r} is a {target.type} warehouse; heap-dbt reads DuckDB so far.")
