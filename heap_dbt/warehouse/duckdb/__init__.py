"""The DuckDB engine: its reader (``reader``), state store (``state``) and memory sizing (``memory``)."""

from heap_dbt.warehouse.duckdb.memory import Sizing
from heap_dbt.warehouse.duckdb.reader import DuckDBReader

__all__ = ["DuckDBReader", "Sizing"]
