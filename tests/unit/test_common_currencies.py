"""ISO 4217 codes and their minor-unit exponents."""

from __future__ import annotations

import pytest

from services.common import currencies
from services.common.errors import InvalidArgument


@pytest.mark.parametrize(("code", "exponent"), [("USD", 2), ("EUR", 2), ("JPY", 0), ("KRW", 0), ("KWD", 3), ("BHD", 3)])
def test_exponent_is_the_minor_unit_digits(code, exponent):
    assert currencies.exponent(code) == exponent


def test_validate_upper_cases_a_known_code():
    assert currencies.validate("usd") == "USD"
    assert currencies.validate("Jpy") == "JPY"


@pytest.mark.parametrize("code", ["", "US", "XXX", "DOLLAR", "usd "])
def test_validate_refuses_unknown_codes_naming_the_field(code):
    with pytest.raises(InvalidArgument) as caught:
        currencies.validate(code, field="plan.currency")
    assert caught.value.field == "plan.currency"
    assert "ISO 4217" in caught.value.message


def test_validate_names_currency_by_default():
    with pytest.raises(InvalidArgument) as caught:
        currencies.validate("ABC")
    assert caught.value.field == "currency"
