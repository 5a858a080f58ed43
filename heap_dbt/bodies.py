"""Arrow batches of finished records to Heap bulk request bodies, without a Python loop over rows.

Every record comes out of SQL followed by ``sql.SEPARATOR``, so a body is one slice of the
Arrow string buffer between its frame (``heap.body_frame``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from heap_dbt import sql

if TYPE_CHECKING:
    import pyarrow as pa


@dataclass
class Chunk:
    """Up to one request's worth of valid records, with their keys."""

    records: pa.Array
    keys: pa.Array
    identities: pa.Array | None
    acks: pa.RecordBatch | None = None
    """What the state records once Heap acknowledges these rows (k1, k2, hash)."""

    def __len__(self) -> int:
        return len(self.records)

    def slice(self, start: int, length: int | None = None) -> Chunk:
        def cut(a: pa.Array | None) -> pa.Array | None:
            return None if a is None else a.slice(start, length)

        acks = None if self.acks is None else self.acks.slice(start, length)
        return Chunk(
            self.records.slice(start, length), self.keys.slice(start, length), cut(self.identities), acks
        )

    def filter(self, mask: pa.Array) -> Chunk:
        def keep(a: pa.Array | None) -> pa.Array | None:
            return None if a is None else a.filter(mask)

        acks = None if self.acks is None else self.acks.filter(mask)
        return Chunk(self.records.filter(mask), self.keys.filter(mask), keep(self.identities), acks)

    def split(self) -> tuple[Chunk, Chunk]:
        mid = len(self) // 2
        return self.slice(0, mid), self.slice(mid)

    def joined(self) -> memoryview:
        """The records joined by commas: a view of the Arrow buffer, nothing copied.

        Every record already ends with ``sql.SEPARATOR``; only the last one is cut off.
        """
        offsets, base, data = _string_buffers(self.records)
        end = offsets[base + len(self.records)] - len(sql.SEPARATOR)
        return data[offsets[base] : end]

    def identity_counts(self) -> dict[str, int]:
        import pyarrow.compute as pc

        if self.identities is None:
            return {}
        counts = pc.value_counts(self.identities).to_pylist()
        return {c["values"]: c["counts"] for c in counts}


def _string_buffers(records: pa.Array) -> tuple[memoryview, int, memoryview]:
    """A string array's value offsets, the index of its first value in them, and its bytes."""
    if str(records.type) not in ("string", "large_string"):
        import pyarrow as pa

        records = records.cast(pa.large_string())
    _, offsets, data = records.buffers()
    view = memoryview(offsets)
    values = memoryview(data) if data is not None else memoryview(b"")
    return view.cast("i") if str(records.type) == "string" else view.cast("q"), records.offset, values


def request_bounds(records: pa.Array, *, max_items: int, max_bytes: int) -> Iterator[tuple[int, int]]:
    """Cut ``records`` (each ending with SEPARATOR) into [start, end) runs within both limits.

    Full runs of ``max_items`` when they fit in ``max_bytes``, which they do unless the
    records are large; else by each record's size (``cut_chunks``).
    """
    n = len(records)
    offsets, base, _ = _string_buffers(records)
    by_count = [(i, min(i + max_items, n)) for i in range(0, n, max_items)]
    if all(offsets[base + end] - offsets[base + start] <= max_bytes for start, end in by_count):
        return iter(by_count)
    sep = len(sql.SEPARATOR)
    lengths = [offsets[base + i + 1] - offsets[base + i] - sep for i in range(n)]
    return cut_chunks(lengths, max_items=max_items, max_bytes=max_bytes)


def cut_chunks(lengths: list[int], *, max_items: int, max_bytes: int) -> Iterator[tuple[int, int]]:
    """Cut records of the given byte ``lengths`` into [start, end) runs within both limits.

    A record larger than ``max_bytes`` goes alone; Heap then decides (413 splits it out).
    """
    start = 0
    size = 0
    for i, n in enumerate(lengths):
        if i > start and (i - start >= max_items or size + n + 1 > max_bytes):
            yield start, i
            start, size = i, 0
        size += n + 1
    if start < len(lengths):
        yield start, len(lengths)
