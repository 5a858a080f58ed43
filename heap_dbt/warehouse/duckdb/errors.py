"""DuckDB's exceptions as heap-dbt's: the one place that reads DuckDB's message text."""

from __future__ import annotations

from pathlib import Path

from heap_dbt.errors import LockedError, OutOfMemoryError, StateError, WarehouseError


def is_out_of_memory(exc: BaseException) -> bool:
    return "Out of Memory" in str(exc)


def is_lock_conflict(exc: BaseException) -> bool:
    return "lock" in str(exc).lower()


def query_error(exc: Exception) -> WarehouseError:
    """The error for a failed query: Out of Memory with what to do, else DuckDB's message."""
    text = str(exc)
    if is_out_of_memory(exc):
        # DuckDB's own advice (threads, insertion order) is about settings heap-dbt already picks.
        first = text.strip().splitlines()[0]
        return OutOfMemoryError(
            f"The warehouse query failed: {first} DuckDB ran out of the memory heap-dbt allows it; "
            "raise it with --memory-limit (e.g. 512MB) or HEAP_DBT_MEMORY_LIMIT."
        )
    return WarehouseError(f"The warehouse query failed: {text}")


def open_error(path: Path, exc: Exception, *, state: bool = False) -> Exception:
    """A clear error for a DuckDB file that cannot be opened, locks first."""
    what = "the heap-dbt state file" if state else "DuckDB file"
    if "Unique file handle conflict" in str(exc):
        # DuckDB lets one database instance per process open a file: another sync (or dbt)
        # in this process has it, from another event loop or thread than this sync's.
        return StateError(
            f"Cannot open {what} {path}: another sync in this process has it open (syncs of one "
            "project from one event loop wait for each other; from other threads they cannot). "
            "Run the syncs one after the other."
        )
    if is_lock_conflict(exc):
        message = (
            f"Cannot open {what} {path}: another process holds its lock (another `heap-dbt sync`, "
            "or dbt). Wait for it to finish, then run heap-dbt again."
        )
        # A sync's state is what the lock protects: a state file, or a model file heap-dbt
        # would write its state into, which DuckDB reports as a conflicting lock.
        return StateError(message) if state or "Conflicting lock" in str(exc) else LockedError(message)
    return WarehouseError(f"Cannot open {what} {path}: {exc}.")
