"""Invariants under generated data: batching loses or repeats no record, and no value changes on its way.

Batching: ``bodies.request_bounds``, ``cut_chunks`` and ``Chunk.split`` cover every record
once, in order, and no request exceeds Heap's item limit or ``heap.MAX_BODY_BYTES``.
Conversion: for generated DuckDB values, every value the record SQL sends is a string or a
finite number that Heap, keeping numbers as doubles, reads back as the source value.
"""

from __future__ import annotations

import json
import math
import string
import struct
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from heap_dbt import heap, sql
from heap_dbt.bodies import Chunk, cut_chunks, request_bounds
from tests.unit.records import Records, assert_heap_reads

EXAMPLES = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


# --- batching ---------------------------------------------------------------------------------


def assert_runs_cover(runs: list[tuple[int, int]], n: int) -> None:
    """The runs are non-empty and tile [0, n) in order: no record dropped or repeated."""
    assert [i for start, end in runs for i in range(start, end)] == list(range(n))
    assert all(end > start for start, end in runs)


@EXAMPLES
@given(
    lengths=st.lists(st.integers(0, 300_000), max_size=3000),
    max_items=st.sampled_from([1, 2, 7, heap.MAX_ITEMS_PER_REQUEST]),
)
def test_cut_chunks_keeps_every_record_within_both_limits(lengths: list[int], max_items: int) -> None:
    runs = list(cut_chunks(lengths, max_items=max_items, max_bytes=heap.MAX_BODY_BYTES))

    assert_runs_cover(runs, len(lengths))
    for start, end in runs:
        assert end - start <= max_items
        joined = sum(lengths[start:end]) + (end - start - 1)  # records and the commas between them
        assert joined <= heap.MAX_BODY_BYTES or end - start == 1  # a record too big alone goes alone


def records_array(sizes: list[int]) -> pa.Array:
    """Records as the SQL yields them: JSON-ish text of the given sizes, each ending with SEPARATOR."""
    return pa.array([f'"{"x" * max(0, n - 2)}"'[:n] + sql.SEPARATOR for n in sizes], pa.string())


@EXAMPLES
@given(
    sizes=st.lists(st.integers(1, 60), max_size=200),
    max_items=st.integers(1, 40),
    max_bytes=st.integers(1, 400),
    offset=st.integers(0, 5),
)
def test_request_bounds_keeps_every_record_within_both_limits(
    sizes: list[int], max_items: int, max_bytes: int, offset: int
) -> None:
    # A slice, as the engine passes: the Arrow offsets then start past zero.
    records = records_array([3] * offset + sizes).slice(offset)
    runs = list(request_bounds(records, max_items=max_items, max_bytes=max_bytes))

    assert_runs_cover(runs, len(sizes))
    for start, end in runs:
        chunk = Chunk(records.slice(start, end - start), pa.array(range(end - start)), None)
        body = bytes(chunk.joined())
        assert body == "".join(records.slice(start, end - start).to_pylist())[: -len(sql.SEPARATOR)].encode()
        assert end - start <= max_items
        assert len(body) <= max_bytes or end - start == 1


def test_a_whole_body_stays_within_max_body_bytes() -> None:
    """The engine cuts by ``Frame.room``: the records' share once the app_id and array name are framed."""
    frame = heap.Frame.of("user", "4815162342")
    items = heap.MAX_ITEMS_PER_REQUEST
    # 1,000 records whose bytes, separators included, come to exactly MAX_BODY_BYTES.
    base, extra = divmod(heap.MAX_BODY_BYTES, items)
    records = records_array([base] * extra + [base - 1] * (items - extra))
    bounds = list(request_bounds(records, max_items=items, max_bytes=frame.room))
    assert len(bounds) == 2  # the full 1,000 would not fit with the frame around them
    for start, end in bounds:
        joined = Chunk(records.slice(start, end - start), records, None).joined()
        assert len(frame.body(joined)) <= heap.MAX_BODY_BYTES


def bisect(chunk: Chunk) -> list[Any]:
    """Split ``chunk`` down to single records, as the engine does when Heap refuses a batch."""
    if len(chunk) <= 1:
        keys: list[Any] = chunk.keys.to_pylist()
        return keys
    left, right = chunk.split()
    assert len(left) and len(right) and len(left) + len(right) == len(chunk)
    return bisect(left) + bisect(right)


@EXAMPLES
@given(keys=st.lists(st.text(max_size=5), max_size=80), offset=st.integers(0, 3))
def test_split_down_to_single_records_keeps_each_once_in_order(keys: list[str], offset: int) -> None:
    all_keys = pa.array(["pad"] * offset + keys, pa.string())
    records = records_array([4] * (offset + len(keys)))
    chunk = Chunk(records, all_keys, all_keys).slice(offset)

    assert bisect(chunk) == keys
    if len(chunk) >= 2:
        left, right = chunk.split()
        assert left.identities is not None and right.identities is not None
        assert left.identities.to_pylist() + right.identities.to_pylist() == keys
        assert bytes(left.joined()) + b"," + bytes(right.joined()) == bytes(chunk.joined())


# --- conversion -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def records() -> Iterator[Records]:
    built = Records()
    yield built
    built.close()


INTEGER_TYPES = {
    "TINYINT": (-(2**7), 2**7 - 1),
    "SMALLINT": (-(2**15), 2**15 - 1),
    "INTEGER": (-(2**31), 2**31 - 1),
    "BIGINT": (-(2**63), 2**63 - 1),
    "HUGEINT": (-(2**127), 2**127 - 1),
    "UINTEGER": (0, 2**32 - 1),
    "UBIGINT": (0, 2**64 - 1),
    "UHUGEINT": (0, 2**128 - 1),
}


@st.composite
def typed_integers(draw: st.DrawFn) -> tuple[str, int]:
    sql_type = draw(st.sampled_from(sorted(INTEGER_TYPES)))
    low, high = INTEGER_TYPES[sql_type]
    # Around +-2^53, where a double stops telling integers apart, wherever the type reaches it.
    near_edge = st.builds(lambda sign, d: sign * (2**53 + d), st.sampled_from([-1, 1]), st.integers(-3, 3))
    near_edge = near_edge.filter(lambda v: low <= v <= high)
    values = st.integers(low, high) | st.integers(max(low, -1000), min(high, 1000))
    if high > 2**53:
        values |= near_edge
    return sql_type, draw(values)


@st.composite
def typed_decimals(draw: st.DrawFn) -> tuple[str, Decimal]:
    precision = draw(st.sampled_from([4, 15, 16, 17, 18, 20, 28, 38]))
    # Not DECIMAL(38,38): a value with a 38th decimal goes as its exact digits even where a
    # double would keep it (see heap_dbt.sql._number and tests/unit/test_sql_numbers.py).
    scale = draw(st.integers(0, min(precision, 37)))
    widest = 10**precision - 1
    unscaled = draw(st.integers(-widest, widest) | st.integers(-min(widest, 10**6), min(widest, 10**6)))
    return f"DECIMAL({precision},{scale})", Decimal(f"{unscaled}e-{scale}")  # exact: no context rounding


def sent_value(records: Records, sql_type: str, text: str) -> str | None:
    """The JSON text of property ``v`` for one value cast from ``text``, or None when left out."""
    record = records.one(f"SELECT 'u1' AS id, CAST(? AS {sql_type}) AS v", [text])
    assert record.reason is None and record.text is not None, record.reason
    props = json.loads(record.text)["properties"]
    if not props:
        return None
    start = record.text.index('"v":') + len('"v":')
    return record.text[start : -len("}}")]


@EXAMPLES
@given(value=typed_integers())
def test_integer_reads_back_unchanged(records: Records, value: tuple[str, int]) -> None:
    sql_type, number = value
    text = sent_value(records, sql_type, str(number))
    assert text is not None
    assert_heap_reads(text, number)


@EXAMPLES
@given(value=typed_decimals())
def test_decimal_reads_back_unchanged(records: Records, value: tuple[str, Decimal]) -> None:
    sql_type, number = value
    text = sent_value(records, sql_type, format(number, "f"))
    assert text is not None
    assert_heap_reads(text, number)


@EXAMPLES
@given(number=st.floats(allow_nan=False, allow_infinity=False))
def test_double_reads_back_unchanged(records: Records, number: float) -> None:
    text = sent_value(records, "DOUBLE", repr(number))
    assert text is not None
    assert_heap_reads(text, number)


@EXAMPLES
@given(number=st.floats(allow_nan=False, allow_infinity=False, width=32))
def test_float32_goes_as_the_shortest_decimal_that_reads_back_as_it(records: Records, number: float) -> None:
    """A REAL goes as the shortest decimal that reads back as the same float32 (0.1, not
    0.10000000149011612), as the conversion table says: that decimal, read as a float32, is
    the source exactly, sign of zero included, and no shorter decimal would be."""
    text = sent_value(records, "FLOAT", repr(number))
    assert text is not None
    value = json.loads(text)
    assert isinstance(value, int | float) and not isinstance(value, bool), text
    back = struct.unpack("<f", struct.pack("<f", float(value)))[0]
    assert back == number and math.copysign(1, back) == math.copysign(1, number), text
    digits = len(Decimal(repr(float(value))).normalize().as_tuple().digits)
    shorter = f"{float(value):.{max(digits - 2, 0)}e}"
    assert digits <= 1 or struct.unpack("<f", struct.pack("<f", float(shorter)))[0] != number, text


UNICODE = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=1100)


@EXAMPLES
@given(value=UNICODE)
def test_string_is_sent_exactly_or_rejected_for_its_length(records: Records, value: str) -> None:
    record = records.one("SELECT 'u1' AS id, CAST(? AS VARCHAR) AS v", [value])
    if len(value) > sql.MAX_VALUE:
        assert record.reason == (
            f"property 'v' is {len(value)} characters; Heap takes at most 1023 (set truncate: true to cut it)"
        )
    else:
        assert record.reason is None
        assert record.properties == {"v": value}


@EXAMPLES
@given(value=st.booleans())
def test_boolean_is_the_string_true_or_false(records: Records, value: bool) -> None:
    record = records.one("SELECT 'u1' AS id, CAST(? AS BOOLEAN) AS v", [value])
    assert record.properties == {"v": "true" if value else "false"}


@EXAMPLES
@given(
    element=st.sampled_from(["BIGINT", "HUGEINT", "UBIGINT", "DECIMAL(38,19)", "DOUBLE", "VARCHAR"]),
    data=st.data(),
)
def test_list_elements_keep_their_exact_text(records: Records, element: str, data: st.DataObject) -> None:
    values: st.SearchStrategy[Any] = {
        "BIGINT": st.integers(-(2**63), 2**63 - 1),
        "HUGEINT": st.integers(-(2**127), 2**127 - 1),
        "UBIGINT": st.integers(0, 2**64 - 1),
        "DECIMAL(38,19)": st.integers(-(10**38) + 1, 10**38 - 1).map(lambda u: Decimal(f"{u}e-19")),
        "DOUBLE": st.floats(allow_nan=False, allow_infinity=False),
        "VARCHAR": st.text(string.ascii_letters + "é😀 ", max_size=8),
    }[element]
    items = data.draw(st.lists(st.none() | values, max_size=6))
    texts = [format(v, "f") if isinstance(v, Decimal) else v if v is None else str(v) for v in items]
    record = records.one(f"SELECT 'u1' AS id, CAST(? AS VARCHAR[])::{element}[] AS v", [texts])

    present = [v for v in items if v is not None]
    if items and not present:
        assert record.properties == {}  # array_to_string of only NULLs is NULL: left out
        return
    sent = record.properties["v"]
    assert isinstance(sent, str)
    parts = sent.split("||") if sent else []
    if element == "VARCHAR":
        assert sent == "||".join(present)
        return
    assert len(parts) == len(present)
    for part, source in zip(parts, present, strict=True):
        if isinstance(source, float):
            assert float(part) == source and repr(float(part)) == repr(source)  # sign of zero too
        else:
            assert Decimal(part) == source
