"""The one exception tree of heap-dbt, grouped by what the caller should do.

    HeapDbtError                  root; str(exc) is one sentence a user can act on
    ├── ConfigError               bad meta, flag, profile or environment      -> exit 2
    ├── ManifestError             manifest.json missing, unreadable or too new -> exit 2
    ├── WarehouseError            the warehouse could not be opened or read    -> exit 2
    │   └── OutOfMemoryError      DuckDB needed more memory: a sync that sent nothing is retried
    ├── StateError                sync state corrupt, too new, or locked       -> exit 2
    └── HeapAPIError              Heap answered in a way that stops a request
        ├── RetriableAPIError     429, 5xx, connection error, timeout: retried
        └── FatalAPIError         401, 403, 404 and other 4xx: the run stops sending

A row that Heap or our own checks refuse is not an exception: it is data, and it goes
into the report with its key and reason.
"""

from __future__ import annotations


class HeapDbtError(Exception):
    """Base class of every error heap-dbt reports to its user."""

    exit_code = 2


class ConfigError(HeapDbtError):
    """Raised when the configuration (meta, flags, profile) cannot be used.

    ``problems`` holds every problem found, so the user can fix them all at once.
    """

    def __init__(self, message: str, *, problems: list[str] | None = None) -> None:
        self.problems = problems or []
        super().__init__(message)

    def __str__(self) -> str:
        text = super().__str__()
        if self.problems:
            text += "\n" + "\n".join(f"  - {p}" for p in self.problems)
        return text


class ManifestError(HeapDbtError):
    """Raised when manifest.json or run_results.json cannot be read or used."""


class WarehouseError(HeapDbtError):
    """Raised when the warehouse cannot be opened or a model cannot be read."""


class OutOfMemoryError(WarehouseError):
    """Raised when DuckDB ran out of the memory heap-dbt gave it (it aborts the transaction)."""


class StateError(HeapDbtError):
    """Raised when the sync state is corrupt, from another version, or locked."""


class HeapAPIError(HeapDbtError):
    """Raised for a Heap response that is not a success."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)


class RetriableAPIError(HeapAPIError):
    """Raised for 429, 5xx, connection errors and timeouts; worth another attempt."""

    def __init__(self, message: str, *, status: int | None = None, retry_after: float | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(message, status=status)


class FatalAPIError(HeapAPIError):
    """Raised for a 4xx that retrying or splitting cannot fix (401, 403, 404, ...)."""
