"""Cutting records into request bodies: ``cut_chunks`` on lengths, ``request_bounds`` on Arrow buffers."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from heap_dbt import sql
from heap_dbt.bodies import Chunk, cut_chunks, request_bounds
from heap_dbt.heap import body_frame

# --- cut_chunks --------------------------------------------------------------------------------


def chunk_bytes(lengths: list[int], start: int, end: int) -> int:
    """The bytes of records [start, end) joined by commas."""
    return sum(lengths[start:end]) + (end - start - 1)


@given(
    lengths=st.lists(st.integers(min_value=1, max_value=300), max_size=200),
    max_items=st.integers(min_value=1, max_value=50),
    max_bytes=st.integers(min_value=1, max_value=2000),
)
def test_chunks_cover_every_record_once_in_order_within_limits(
    lengths: list[int], max_items: int, max_bytes: int
) -> None:
    chunks = list(cut_chunks(lengths, max_items=max_items, max_bytes=max_bytes))
    covered = [i for start, end in chunks for i in range(start, end)]
    assert covered == list(range(len(lengths)))
    for start, end in chunks:
        assert end > start
        assert end - start <= max_items
        if end - start > 1:
            assert chunk_bytes(lengths, start, end) <= max_bytes


@given(
    lengths=st.lists(st.integers(min_value=1, max_value=100), min_size=1, max_size=200),
    max_items=st.integers(min_value=1, max_value=50),
)
def test_chunks_are_full_when_bytes_do_not_bind(lengths: list[int], max_items: int) -> None:
    chunks = list(cut_chunks(lengths, max_items=max_items, max_bytes=10**9))
    assert all(end - start == max_items for start, end in chunks[:-1])


@pytest.mark.parametrize(
    ("lengths", "max_items", "max_bytes", "expected"),
    [
        pytest.param([], 10, 100, [], id="nothing"),
        pytest.param([5, 5, 5], 2, 100, [(0, 2), (2, 3)], id="by-items"),
        pytest.param([10, 10, 10], 10, 22, [(0, 2), (2, 3)], id="by-bytes"),
        pytest.param([500, 1, 1], 10, 100, [(0, 1), (1, 3)], id="oversized-record-alone"),
        pytest.param([1, 500, 1], 10, 100, [(0, 1), (1, 2), (2, 3)], id="oversized-in-the-middle"),
    ],
)
def test_cut_chunks_examples(
    lengths: list[int], max_items: int, max_bytes: int, expected: list[tuple[int, int]]
) -> None:
    assert list(cut_chunks(lengths, max_items=max_items, max_bytes=max_bytes)) == expected


# --- request bodies straight from the Arrow buffer ----------------------------------------------


@given(
    texts=st.lists(st.text(max_size=40), min_size=1, max_size=60),
    skip=st.integers(min_value=0, max_value=10),
    max_items=st.integers(min_value=1, max_value=20),
    max_bytes=st.integers(min_value=1, max_value=600),
    kind=st.sampled_from([pa.string(), pa.large_string(), pa.string_view()]),
)
def test_bodies_from_buffer_slices_are_the_records_in_order_within_limits(
    texts: list[str], skip: int, max_items: int, max_bytes: int, kind: pa.DataType
) -> None:
    """Arrays as DuckDB hands them over (string, large_string, or string_view), sliced as batches are."""
    records = [json.dumps({"identity": t}) for t in texts]
    padding = [json.dumps({"identity": "x"})] * skip
    array = pa.array([r + sql.SEPARATOR for r in padding + records], kind)
    array = array.slice(skip)
    keys = pa.array(texts)
    bounds = list(request_bounds(array, max_items=max_items, max_bytes=max_bytes))
    assert [i for start, end in bounds for i in range(start, end)] == list(range(len(records)))
    prefix, suffix = body_frame("user", "1")
    for start, end in bounds:
        assert 0 < end - start <= max_items
        body = b"".join((prefix, Chunk(array, keys, None).slice(start, end - start).joined(), suffix))
        assert json.loads(body)["users"] == [json.loads(r) for r in records[start:end]]
        if end - start > 1:
            assert len(body) - len(prefix) - len(suffix) <= max_bytes


def test_bodies_are_cut_by_count_when_the_bytes_fit() -> None:
    array = pa.array([json.dumps({"n": i}) + sql.SEPARATOR for i in range(2500)])
    assert list(request_bounds(array, max_items=1000, max_bytes=10**6)) == [
        (0, 1000),
        (1000, 2000),
        (2000, 2500),
    ]
