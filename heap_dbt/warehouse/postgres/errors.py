"""PostgreSQL's (ADBC's) exceptions as heap-dbt's: the one place that reads their message text."""

from __future__ import annotations

from heap_dbt.errors import MissingRelationError, WarehouseError


def first_line(exc: BaseException) -> str:
    """The server's message without the statement ADBC appends (``Query was: ...``)."""
    text = str(exc).split("\n\nQuery was:", 1)[0].strip()
    for prefix in ("INVALID_ARGUMENT: ", "NOT_FOUND: ", "IO: ", "INTERNAL: ", "UNKNOWN: "):
        text = text.removeprefix(prefix)
    return text.removeprefix("Failed to prepare query: ").removeprefix("Failed to execute query: ")


def query_error(exc: BaseException) -> WarehouseError:
    return WarehouseError(f"The warehouse query failed: {first_line(exc)}")


def missing(relation: str) -> MissingRelationError:
    return MissingRelationError(f"relation {relation} does not exist", relation=relation)
