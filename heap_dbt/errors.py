"""The one exception tree of heap-dbt, grouped by what the caller should do.

    HeapDbtError                  root; str(exc) is one sentence a user can act on    exit 2
    ├── ConfigError               bad meta, flag, profile or environment              exit 2
    ├── ManifestError             manifest.json or run_results.json unusable          exit 2
    ├── WarehouseError            the warehouse could not be opened or read           exit 2
    │   ├── MissingRelationError  a model's table does not exist (.relation)
    │   ├── LockedError           another process holds the DuckDB file's lock
    │   └── OutOfMemoryError      DuckDB needed more memory than it was given
    ├── StateError                sync state corrupt, too new, or locked              exit 2
    ├── DbtError                  `heap-dbt run`: dbt could not start the command     exit 2
    ├── DbtCloudError             the dbt Cloud Admin API gave no usable run (.status) exit 2
    │   ├── DbtCloudAuthError     the token was refused (401, 403)
    │   ├── DbtCloudNotFoundError no such account, job or run (404)
    │   ├── RunNotFinishedError   the run is still in progress (or --wait ran out)
    │   ├── NoArtifactsError      the run saved no artifacts, or ran no `dbt run`/`build`
    │   └── DbtCloudUnreachableError  connection refused, DNS, timeout, repeated 5xx
    └── HeapAPIError              Heap did not accept a request (.status)             exit 1
        ├── RetriableAPIError     429, 5xx, 408, connection error, timeout (.retry_after)
        ├── RefusedBatchError     400, 413, 422: some record is bad; the batch is bisected
        └── FatalAPIError         401, 403, 404 and other 4xx: the run stops sending

``exit_code`` is the code of the process when the error ends it. Raised before anything is
sent, every error ends the run. Raised while a sync runs, a WarehouseError or StateError
ends only that sync: it is recorded in the report with the rows it read, and the report's
exit code (1) stands. HeapAPIErrors never leave the sender (``heap_dbt.sender``): they
decide what happens to a batch, whose rows the report then counts.

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


class MissingRelationError(WarehouseError):
    """Raised when a model's table does not exist in the warehouse (the model was never built)."""

    def __init__(self, message: str, *, relation: str) -> None:
        self.relation = relation
        super().__init__(message)


class LockedError(WarehouseError):
    """Raised when another process (a sync, or dbt) holds the lock of a DuckDB file heap-dbt needs."""


class OutOfMemoryError(WarehouseError):
    """Raised when DuckDB ran out of the memory heap-dbt gave it (it aborts the transaction)."""


class StateError(HeapDbtError):
    """Raised when the sync state is corrupt, from another version, or locked."""


class DbtError(HeapDbtError):
    """Raised when dbt, run by ``heap-dbt run``, could not start (bad project, profile or flag).

    A model that fails to build is not this error: dbt ran, and the sync reports it.
    """


class DbtCloudError(HeapDbtError):
    """Raised when the dbt Cloud Admin API cannot give the artifacts of the run asked for.

    ``status`` is the HTTP status, or None when no response (or no HTTP problem) caused it.
    Messages never hold the token.
    """

    def __init__(self, message: str, *, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)


class DbtCloudAuthError(DbtCloudError):
    """Raised when dbt Cloud refuses the API token (401, 403)."""


class DbtCloudNotFoundError(DbtCloudError):
    """Raised when the account, job or run does not exist (404), or the job has no successful run."""


class RunNotFinishedError(DbtCloudError):
    """Raised when the run is still queued or running (and --wait was not given, or ran out)."""


class NoArtifactsError(DbtCloudError):
    """Raised when the run saved no artifacts, or has no `dbt run`/`dbt build` step to gate on."""


class DbtCloudUnreachableError(DbtCloudError):
    """Raised when the dbt Cloud host cannot be reached (connection, DNS, timeout, repeated 5xx)."""


class HeapAPIError(HeapDbtError):
    """Raised for a Heap response (or its absence) that is not a success.

    ``status`` is the HTTP status, or None when no response arrived.
    """

    exit_code = 1

    def __init__(self, message: str, *, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)


class RetriableAPIError(HeapAPIError):
    """Raised for 429, 5xx, 408, connection errors and timeouts; worth another attempt.

    ``retry_after`` is the wait in seconds that Heap asked for, if it did.
    """

    def __init__(self, message: str, *, status: int | None = None, retry_after: float | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(message, status=status)


class RefusedBatchError(HeapAPIError):
    """Raised for 400, 413 and 422: a record in the batch is bad, or the body is too large."""


class FatalAPIError(HeapAPIError):
    """Raised for a 4xx that retrying or splitting cannot fix (401, 403, 404, ...)."""
