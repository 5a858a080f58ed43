"""Read dbt models from Snowflake: one connector session, columns from result metadata, Arrow out."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

# The package's __init__, which runs before this module, has set SNOWFLAKE_DISABLE_PLATFORM_DETECTION:
# the connector is imported only inside the methods below.
from heap_dbt.errors import MissingRelationError, WarehouseError
from heap_dbt.warehouse.snowflake.connection import connect_args
from heap_dbt.warehouse.snowflake.types import SnowflakeColumn, column

if TYPE_CHECKING:
    import pyarrow as pa

    from heap_dbt.profiles import Target

MISSING_OBJECT = 2003
"""Snowflake's error number for "does not exist or not authorized"."""


class SnowflakeSession:
    """A connector session: what the Snowflake reader and its state store run their SQL on."""

    def __init__(self, args: dict[str, Any], *, where: str) -> None:
        import snowflake.connector

        self.where = where
        try:
            self.con = snowflake.connector.connect(**args)
        except snowflake.connector.Error as exc:
            raise WarehouseError(f"Cannot connect to {where}: {exc.msg or exc}") from None
        # In-band telemetry goes to the same host; heap-dbt has no use for it.
        self.con.telemetry_enabled = False

    @classmethod
    def from_target(cls, target: Target) -> SnowflakeSession:
        return cls(connect_args(target), where=f"Snowflake target {target.name!r}")

    def execute(self, sql: str, params: list[Any] | None = None) -> Any:
        import snowflake.connector

        cur = self.con.cursor()
        try:
            cur.execute(sql, params)
        except snowflake.connector.Error as exc:
            cur.close()
            raise WarehouseError(f"The Snowflake query failed: {exc.msg or exc}") from None
        return cur

    def describe(self, relation: str) -> list[SnowflakeColumn]:
        """The columns of ``relation`` from the metadata of a query that reads no row."""
        import snowflake.connector
        from snowflake.connector.constants import FIELD_ID_TO_NAME

        cur = self.con.cursor()
        try:
            cur.execute(f"SELECT * FROM {relation} LIMIT 0")
        except snowflake.connector.ProgrammingError as exc:
            if exc.errno == MISSING_OBJECT:
                raise MissingRelationError(
                    f"{relation} does not exist in {self.where}.", relation=relation
                ) from None
            raise WarehouseError(f"Cannot read the columns of {relation}: {exc.msg or exc}") from None
        finally:
            cur.close()
        return [column(d.name, FIELD_ID_TO_NAME[d.type_code], d.precision, d.scale) for d in cur.description]

    def fetch_one(self, sql: str, params: list[Any] | None = None) -> tuple[Any, ...]:
        cur = self.execute(sql, params)
        try:
            row = cur.fetchone()
        finally:
            cur.close()
        return tuple(row) if row is not None else ()

    def arrow(self, sql: str, *, batch_rows: int) -> Iterator[pa.RecordBatch]:
        """Run ``sql`` and yield its rows as Arrow batches of at most ``batch_rows``.

        Snowflake returns a result in chunks the connector downloads one at a time; fakesnow
        returns all of it in one. Nothing here holds more than one chunk.
        """
        import snowflake.connector

        cur = self.execute(sql)
        try:
            for table in cur.fetch_arrow_batches():
                yield from table.to_batches(max_chunksize=batch_rows)
        except snowflake.connector.Error as exc:
            raise WarehouseError(f"The Snowflake query failed: {exc.msg or exc}") from None
        finally:
            cur.close()

    def close(self) -> None:
        self.con.close()
