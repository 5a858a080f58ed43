"""How much memory DuckDB gets: sizes as DuckDB writes them, and the budget ``DuckDBReader.fit`` sizes by."""

from __future__ import annotations

import re
from dataclasses import dataclass

from heap_dbt.errors import WarehouseError

MB = 1024 * 1024

_UNITS = {
    "bytes": 1, "b": 1, "kib": 1024, "mib": MB, "gib": 1024 * MB, "tib": 1024**2 * MB,
    "kb": 1000, "mb": 1000**2, "gb": 1000**3, "tb": 1000**4,
}  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class Sizing:
    """The budget DuckDB works in; tests pass a small one to provoke Out of Memory."""

    default_limit: str = "64MB"
    """Keeps a sync's peak RSS bounded whatever the table size (DuckDB spills past it);
    enough for 10M-row models of ordinary width (benchmarks/), and ``fit`` raises it for wide ones."""
    scan_per_column: int = 1 * MB
    """A scan holds a block of every column it reads, per thread, and DuckDB fails with Out of
    Memory below 0.8-1.0 MB per column and thread, whatever the rows."""
    scan_base: int = 32 * MB
    """What a query needs besides its scan (joins and aggregates spill)."""
    pipeline_base: int = 16 * MB
    """The same for a scan-and-project stream, and the state's inserts."""
    wide_scan_budget: int = 256 * MB
    """Beyond this, a wide model gets fewer threads rather than more memory."""
    max_growth: int = 4
    """After Out of Memory, a sync may get up to this many times the limit ``fit`` gave it."""


def size_bytes(text: str) -> int:
    """Bytes in a DuckDB memory size: ``64MB``, ``1.5 GiB``, ``61.0 MiB``, ``512 bytes``."""
    found = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]*)?)\s*([A-Za-z]*)\s*", text)
    unit = found.group(2).lower() if found else ""
    if found is None or (unit and unit not in _UNITS):
        raise WarehouseError(f"Cannot read the memory size {text!r}; write it like 256MB or 1GB.")
    return int(float(found.group(1)) * _UNITS[unit or "b"])


DEFAULT_SIZING = Sizing()
