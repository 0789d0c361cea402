"""Body checks for objects keyed by the client (a charge filter's values) and
for integers filling a 32-bit proto field."""

from __future__ import annotations

import pytest

from gateway.errors import ApiError
from gateway.schema import Spec, array, check, mapping, string

VALUES = mapping(array(string(required=True), required=True), required=True, max_items=2)


def refused(value, spec: Spec, path: str = "values") -> ApiError:
    with pytest.raises(ApiError) as caught:
        check(value, spec, path)
    assert caught.value.status == 400
    return caught.value


def test_a_map_keeps_the_clients_keys_in_order():
    assert check({"tier": ["pro"], "region": ["us", "eu"]}, VALUES, "values") == {
        "tier": ["pro"],
        "region": ["us", "eu"],
    }


def test_each_value_is_checked_under_its_key():
    error = refused({"region": ["us", 7]}, VALUES)
    assert (error.field, error.reason) == ("values.region[1]", "INVALID_TYPE")
    error = refused({"region": None}, VALUES)
    assert (error.field, error.reason) == ("values.region", "MISSING_FIELD")


def test_a_map_must_be_an_object():
    error = refused(["region"], VALUES)
    assert (error.field, error.reason, error.message) == ("values", "INVALID_TYPE", "values must be an object")


def test_a_map_has_at_most_its_number_of_keys():
    error = refused({"a": ["1"], "b": ["1"], "c": ["1"]}, VALUES)
    assert (error.field, error.reason) == ("values", "TOO_MANY_ITEMS")


def test_an_unbounded_map_takes_any_number_of_keys():
    spec = mapping(string())
    assert check({str(n): "x" for n in range(300)}, spec, "m") == {str(n): "x" for n in range(300)}


@pytest.mark.parametrize("value", [2**31, -(2**31)])
def test_a_32_bit_integer_is_refused_beyond_its_range(value):
    error = refused(value, Spec("integer", bits=32), "trial_period_days")
    assert (error.field, error.reason) == ("trial_period_days", "INVALID_VALUE")


def test_a_32_bit_integer_takes_its_extremes():
    spec = Spec("integer", bits=32)
    assert (check(2**31 - 1, spec), check(-(2**31) + 1, spec)) == (2**31 - 1, -(2**31) + 1)
