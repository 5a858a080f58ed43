"""The PostgreSQL engine: its reader (``reader``), dialect (``dialect``), state store (``state``)
and the profile fields it reads (``profile``)."""

from heap_dbt.warehouse.postgres.reader import PostgresReader

__all__ = ["PostgresReader"]
