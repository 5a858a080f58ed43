"""Numbers in records: a JSON number wherever a double keeps the value, else its exact digits as a string.

Heap keeps every number as a double. Each case builds one record in DuckDB and checks the
exact JSON text of its property, so a value that would change on the way (2^53 + 1, a
34-digit decimal) shows up as a failure here rather than as a silent change in Heap.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.unit.records import MAX_SAFE_INTEGER as SAFE
from tests.unit.records import Records, assert_heap_reads


@pytest.fixture(scope="module")
def records() -> Iterator[Records]:
    built = Records()
    yield built
    built.close()


def sent(records: Records, column: str) -> str:
    """The JSON text of property ``v`` in the record of ``SELECT 'u1' AS id, <column> AS v``."""
    record = records.one(f"SELECT 'u1' AS id, {column} AS v")
    assert record.reason is None, record.reason
    prefix, suffix = '{"identity":"u1","properties":{"v":', "}}"
    assert record.text is not None and record.text.startswith(prefix) and record.text.endswith(suffix)
    return record.text[len(prefix) : -len(suffix)]


NUMBERS = [
    # integers: numbers within +-(2^53 - 1), exact strings beyond
    pytest.param("42", "42", id="integer"),
    pytest.param("2147483647::INTEGER", "2147483647", id="integer-max"),
    pytest.param("4294967295::UINTEGER", "4294967295", id="uinteger-max"),
    pytest.param(f"{SAFE}::BIGINT", "9007199254740991", id="bigint-2^53-1"),
    pytest.param(f"-{SAFE}::BIGINT", "-9007199254740991", id="bigint-minus-2^53-1"),
    pytest.param(f"{SAFE + 1}::BIGINT", '"9007199254740992"', id="bigint-2^53"),
    pytest.param(f"{SAFE + 2}::BIGINT", '"9007199254740993"', id="bigint-2^53+1"),
    pytest.param(f"(-{SAFE} - 1)::BIGINT", '"-9007199254740992"', id="bigint-minus-2^53"),
    pytest.param("9223372036854775807::BIGINT", '"9223372036854775807"', id="bigint-max"),
    pytest.param("(-9223372036854775807 - 1)::BIGINT", '"-9223372036854775808"', id="bigint-min"),
    pytest.param("7::HUGEINT", "7", id="hugeint-small"),
    pytest.param(
        "170141183460469231731687303715884105727::HUGEINT",
        '"170141183460469231731687303715884105727"',
        id="hugeint-max",
    ),
    pytest.param(
        "CAST('-170141183460469231731687303715884105728' AS HUGEINT)",
        '"-170141183460469231731687303715884105728"',
        id="hugeint-min",
    ),
    pytest.param("7::UBIGINT", "7", id="ubigint-small"),
    pytest.param("18446744073709551615::UBIGINT", '"18446744073709551615"', id="ubigint-max"),
    pytest.param(
        "340282366920938463463374607431768211455::UHUGEINT",
        '"340282366920938463463374607431768211455"',
        id="uhugeint-max",
    ),
    # decimals: up to 15 digits always numbers; wider ones per value
    pytest.param("9999999999999.99::DECIMAL(15,2)", "9999999999999.99", id="decimal-15-digits"),
    pytest.param("123.450::DECIMAL(18,3)", "123.450", id="decimal-18-3-everyday"),
    pytest.param("-0.001::DECIMAL(18,3)", "-0.001", id="decimal-18-3-negative"),
    pytest.param(
        "1234567890123.456::DECIMAL(18,3)", "1234567890123.456", id="decimal-16-digits-a-double-keeps"
    ),
    pytest.param(
        "12345678901234.567::DECIMAL(18,3)", '"12345678901234.567"', id="decimal-17-digits-a-double-alters"
    ),
    pytest.param("999999999999999.999::DECIMAL(18,3)", '"999999999999999.999"', id="decimal-18-3-max"),
    pytest.param("0.1::DECIMAL(38,10)", "0.1000000000", id="decimal-38-10-tenth"),
    pytest.param("0.0000000001::DECIMAL(38,10)", "0.0000000001", id="decimal-38-10-tiny"),
    pytest.param(
        "0.1000000000000000055::DECIMAL(38,19)", '"0.1000000000000000055"', id="decimal-beyond-a-double"
    ),
    pytest.param("12345::DECIMAL(38,0)", "12345", id="decimal-38-0-small"),
    pytest.param(f"{SAFE + 2}::DECIMAL(38,0)", '"9007199254740993"', id="decimal-38-0-2^53+1"),
    pytest.param("100000000000000000000::DECIMAL(38,0)", '"100000000000000000000"', id="decimal-beyond-2^53"),
    pytest.param(
        "-12345678901234567.89::DECIMAL(20,2)", '"-12345678901234567.89"', id="decimal-negative-wide"
    ),
    pytest.param(
        "CAST('99999999999999999999999999999999999999' AS DECIMAL(38,0))",
        '"99999999999999999999999999999999999999"',
        id="decimal-38-max",
    ),
    # a decimal of scale = precision, which DuckDB prints without its leading 0 (".5000")
    pytest.param("0.5::DECIMAL(4,4)", "0.5000", id="decimal-4-4"),
    pytest.param("-0.5::DECIMAL(4,4)", "-0.5000", id="decimal-4-4-negative"),
    pytest.param("0::DECIMAL(4,4)", "0.0000", id="decimal-4-4-zero"),
    pytest.param(
        "-0.0001::DECIMAL(38,38)", "-0.00010000000000000000000000000000000000", id="decimal-38-38-negative"
    ),
    pytest.param(
        "CAST('0.12345678901234567890' AS DECIMAL(20,20))",
        '"0.12345678901234567890"',
        id="decimal-20-20-wide",
    ),
    pytest.param(
        "CAST('0.0000000000000001' AS DECIMAL(16,16))", "0.0000000000000001", id="decimal-16-16-1e-16"
    ),
    pytest.param(
        "CAST('0.00000000000000000001' AS DECIMAL(38,38))",
        "0.00000000000000000001000000000000000000",
        id="decimal-38-38-1e-20",
    ),
    # doubles: the shortest text that reads back as the same double
    pytest.param("(0.1::DOUBLE + 0.2::DOUBLE)", "0.30000000000000004", id="double-shortest-round-trip"),
    pytest.param("-0.0::DOUBLE", "-0.0", id="double-negative-zero"),
    pytest.param("5e-324::DOUBLE", "5e-324", id="double-smallest-subnormal"),
    pytest.param("2.2250738585072014e-308::DOUBLE", "2.2250738585072014e-308", id="double-smallest-normal"),
    pytest.param("1.7976931348623157e308::DOUBLE", "1.7976931348623157e308", id="double-max"),
    pytest.param("-1.5e-7::DOUBLE", "-1.5e-7", id="double-negative-tiny"),
    pytest.param("9007199254740993::DOUBLE", "9007199254740992.0", id="double-is-already-a-double"),
]


@pytest.mark.parametrize(("column", "expected"), NUMBERS)
def test_number_is_sent_as_a_number_only_where_a_double_keeps_it(
    records: Records, column: str, expected: str
) -> None:
    assert sent(records, column) == expected


@pytest.mark.parametrize(("column", "expected"), NUMBERS)
def test_every_number_sent_reads_back_as_its_source_value(
    records: Records, column: str, expected: str
) -> None:
    """What Heap reads (a double for a number, the digits for a string) is the warehouse's value."""
    (source,) = records.con.execute(f"SELECT {column}").fetchone() or ()
    assert_heap_reads(sent(records, column), source)


def test_decimal_38_38_with_a_38th_decimal_goes_as_its_exact_digits(records: Records) -> None:
    """DuckDB reads a double's text back at 37 decimals at most: digits go where a number would do."""
    column = "CAST('0.00000000000000000000000000000000000015' AS DECIMAL(38,38))"
    assert sent(records, column) == '"0.00000000000000000000000000000000000015"'


LISTS = [
    pytest.param(f"[1, {SAFE + 2}, NULL, -5]::BIGINT[]", "1||9007199254740993||-5", id="bigint-list"),
    pytest.param(
        "[170141183460469231731687303715884105727]::HUGEINT[]",
        "170141183460469231731687303715884105727",
        id="hugeint-list",
    ),
    pytest.param("[18446744073709551615]::UBIGINT[]", "18446744073709551615", id="ubigint-list"),
    pytest.param(
        "[0.1000000000000000055, 1.5]::DECIMAL(38,19)[]",
        "0.1000000000000000055||1.5000000000000000000",
        id="decimal-list",
    ),
    pytest.param("[0.5, -0.25]::DECIMAL(4,4)[]", "0.5000||-0.2500", id="decimal-4-4-list"),
    pytest.param(
        "[-0.0::DOUBLE, 0.1::DOUBLE + 0.2::DOUBLE, 5e-324::DOUBLE]",
        "-0.0||0.30000000000000004||5e-324",
        id="double-list",
    ),
]


@pytest.mark.parametrize(("column", "expected"), LISTS)
def test_list_elements_keep_every_digit(records: Records, column: str, expected: str) -> None:
    assert json.loads(sent(records, column)) == expected


@pytest.mark.parametrize(
    ("column", "expected"),
    [
        pytest.param(
            f"{{'a': {{'b': {SAFE + 2}::BIGINT, 'c': 3::BIGINT}}}}",
            {"v.a.b": "9007199254740993", "v.a.c": 3},
            id="struct-fields",
        ),
        pytest.param(
            f"MAP {{'big': {SAFE + 2}::BIGINT, 'small': 3::BIGINT}}",
            {"v.big": "9007199254740993", "v.small": 3},
            id="map-values",
        ),
        pytest.param(
            "MAP {'wide': 0.1000000000000000055::DECIMAL(38,19), 'ok': 0.5::DECIMAL(38,19)}",
            {"v.wide": "0.1000000000000000055", "v.ok": 0.5},
            id="map-decimal-values",
        ),
    ],
)
def test_struct_fields_and_map_values_follow_the_same_rule(
    records: Records, column: str, expected: dict[str, object]
) -> None:
    assert records.one(f"SELECT 'u1' AS id, {column} AS v").properties == expected


@pytest.mark.parametrize(
    "column",
    ["NULL::BIGINT", "NULL::HUGEINT", "NULL::UBIGINT", "NULL::DECIMAL(38,10)", "NULL::DECIMAL(18,3)"],
)
def test_null_wide_number_is_left_out(records: Records, column: str) -> None:
    assert records.one(f"SELECT 'u1' AS id, {column} AS v").properties == {}


def test_rule_is_per_value_within_one_column(records: Records) -> None:
    """One DECIMAL(18,3) column: the amounts a double keeps stay numbers, the one it would alter does not."""
    rows = records.build(
        "SELECT id, CAST(amount AS DECIMAL(18,3)) AS amount FROM (VALUES "
        "('a', '19.990'), ('b', '12345678901234.567'), ('c', NULL)) v(id, amount) ORDER BY id"
    )
    assert [r.text for r in rows] == [
        '{"identity":"a","properties":{"amount":19.990}}',
        '{"identity":"b","properties":{"amount":"12345678901234.567"}}',
        '{"identity":"c","properties":{}}',
    ]
