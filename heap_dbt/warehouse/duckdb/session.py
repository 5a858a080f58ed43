"""The session settings heap-dbt's DuckDB connections depend on, set on each one it opens.

Text that a DuckDB cast or ``to_json`` writes for a TIMESTAMPTZ follows the session's time
zone, which DuckDB takes from the process (``TZ``); a key's text and a value in a list of
structs would then change with the machine a sync runs on. Every connection heap-dbt reads or
formats with is set to UTC and the Gregorian calendar first.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import duckdb

SESSION_SETTINGS = {"TimeZone": "UTC", "Calendar": "gregorian"}


def canonical_session(con: duckdb.DuckDBPyConnection) -> None:
    """Set ``SESSION_SETTINGS`` on ``con`` (they are not accepted in ``connect``'s config)."""
    for name, value in SESSION_SETTINGS.items():
        con.execute(f"SET {name} = '{value}'")
