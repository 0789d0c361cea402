"""Exact decimal parsing and the canonical text form of amounts and quantities."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.common.decimals import canonical, parse_decimal
from services.common.errors import InvalidArgument


@pytest.mark.parametrize(
    ("text", "value"),
    [("0.001", Decimal("0.001")), ("2340", Decimal(2340)), ("1e3", Decimal(1000)), ("0", Decimal(0))],
)
def test_parse_decimal_reads_exact_values(text, value):
    parsed = parse_decimal(text, "amount")
    assert parsed == value
    assert isinstance(parsed, Decimal)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("", "must be a decimal number"),
        ("abc", "must be a decimal number"),
        ("1,5", "must be a decimal number"),
        ("NaN", "must be a finite number"),
        ("Infinity", "must be a finite number"),
        ("-Infinity", "must be a finite number"),
        ("-0.01", "must not be negative"),
        ("1e101", "out of range"),
        ("1e-101", "out of range"),
        ("1e999999999", "out of range"),
    ],
)
def test_parse_decimal_refusals_name_the_field(text, words):
    with pytest.raises(InvalidArgument) as caught:
        parse_decimal(text, "charges[0].properties.amount")
    assert caught.value.field == "charges[0].properties.amount"
    assert words in caught.value.message


def test_parse_decimal_refuses_a_non_string_naming_the_field():
    with pytest.raises(InvalidArgument) as caught:
        parse_decimal(None, "value")  # type: ignore[arg-type]
    assert caught.value.field == "value"


def test_parse_decimal_accepts_negative_when_allowed():
    assert parse_decimal("-12.5", "adjustment", allow_negative=True) == Decimal("-12.5")


def test_parse_decimal_accepts_the_magnitude_bounds():
    assert parse_decimal("1e100", "x") == Decimal("1e100")
    assert parse_decimal("9.99e100", "x") == Decimal("9.99e100")
    assert parse_decimal("1e-100", "x") == Decimal("1e-100")
    assert parse_decimal("0e999999999", "x") == 0


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (Decimal("0"), "0"),
        (Decimal("-0.000"), "0"),
        (Decimal("0E+5"), "0"),
        (Decimal("2340"), "2340"),
        (Decimal("2.34E+3"), "2340"),
        (Decimal("1E+3"), "1000"),
        (Decimal("0.0010"), "0.001"),
        (Decimal("12.50"), "12.5"),
        (Decimal("100.000"), "100"),
        (Decimal("-7.10"), "-7.1"),
        (Decimal("1E-7"), "0.0000001"),
    ],
)
def test_canonical_is_plain_notation_without_trailing_zeros(value, text):
    assert canonical(value) == text


def test_canonical_keeps_every_digit_beyond_the_default_28():
    # 31 and 29 significant digits: the default decimal context would round these.
    assert canonical(Decimal("1234567890123456789012345678901")) == "1234567890123456789012345678901"
    assert canonical(Decimal("0.12345678901234567890123456789")) == "0.12345678901234567890123456789"
    assert canonical(Decimal("123456789012.12345678901234567890")) == "123456789012.1234567890123456789"


@given(st.decimals(allow_nan=False, allow_infinity=False, min_value=-(10**30), max_value=10**30, places=12))
def test_canonical_round_trips_exactly(value):
    text = canonical(value)
    assert Decimal(text) == value
    assert "E" not in text and "e" not in text
    assert "." not in text or not text.endswith("0")
