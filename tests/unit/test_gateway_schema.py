"""JSON body checks: every kind, normalization, and the field path named on refusal."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from gateway import schema
from gateway.errors import ApiError
from gateway.schema import Spec, array, check, obj, parse_json, string


def refused(value, spec: Spec, path: str = "body") -> ApiError:
    with pytest.raises(ApiError) as caught:
        check(value, spec, path)
    error = caught.value
    assert (error.status, error.code) == (400, "INVALID_ARGUMENT")
    return error


def assert_refused(value, spec: Spec, reason: str, path: str = "body", field: str | None = None) -> ApiError:
    error = refused(value, spec, path)
    assert error.reason == reason
    assert error.field == (path if field is None else field)
    return error


# --- null and required ----------------------------------------------------


def test_absent_optional_value_is_none():
    assert check(None, Spec("integer")) is None


def test_absent_required_value_is_missing():
    error = assert_refused(None, Spec("integer", required=True), "MISSING_FIELD", path="plan.amount_cents")
    assert error.message == "plan.amount_cents is required"


def test_null_is_accepted_for_a_required_nullable_value():
    assert check(None, Spec("decimal", required=True, nullable=True), "to") is None


# --- string ---------------------------------------------------------------


def test_string_is_returned():
    assert check("gold", string()) == "gold"


@pytest.mark.parametrize("value", [5, True, ["a"], {"a": 1}, Decimal("1.5")])
def test_string_refuses_other_types(value):
    error = assert_refused(value, string(), "INVALID_TYPE", path="name")
    assert error.message == "name must be a string"


def test_string_choices():
    spec = string(choices=("standard", "graduated"))
    assert check("graduated", spec) == "graduated"
    error = assert_refused("volume", spec, "INVALID_VALUE", path="charge_model")
    assert "standard, graduated" in error.message


def test_string_max_length():
    spec = string(max_length=3)
    assert check("abc", spec) == "abc"
    error = assert_refused("abcd", spec, "INVALID_VALUE", path="code")
    assert "at most 3 characters" in error.message


# --- integer --------------------------------------------------------------


@pytest.mark.parametrize("value", [0, -5, 2**63 - 1, -(2**63 - 1)])
def test_integer_accepts_int64_values(value):
    assert check(value, Spec("integer")) == value


@pytest.mark.parametrize("value", [2**63, -(2**63) - 1, 10**30])
def test_integer_beyond_int64_is_out_of_range(value):
    error = assert_refused(value, Spec("integer"), "INVALID_VALUE", path="amount_cents")
    assert "out of range" in error.message


@pytest.mark.parametrize("value", [True, False, "5", Decimal("5.0"), 5.0, [5]])
def test_integer_refuses_booleans_and_non_integers(value):
    assert_refused(value, Spec("integer"), "INVALID_TYPE")


# --- boolean --------------------------------------------------------------


@pytest.mark.parametrize("value", [True, False])
def test_boolean_accepts_booleans(value):
    assert check(value, Spec("boolean")) is value


@pytest.mark.parametrize("value", [1, 0, "true", "false"])
def test_boolean_refuses_look_alikes(value):
    error = assert_refused(value, Spec("boolean"), "INVALID_TYPE")
    assert "a boolean" in error.message


# --- decimal --------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("0.10", "0.10"),  # strings pass through exactly
        ("1e3", "1e3"),
        (5, "5"),
        (Decimal("1.50"), "1.50"),
        (Decimal("1E+2"), "100"),  # JSON 1e2 -> plain notation
        (Decimal("1E-7"), "0.0000001"),
        (Decimal("-2.5"), "-2.5"),
        ("0e999999999", "0e999999999"),  # zero, whatever the exponent
    ],
)
def test_decimal_becomes_exact_text(value, text):
    assert check(value, Spec("decimal")) == text


@pytest.mark.parametrize("value", [True, False, 0.5, ["1"], {"v": 1}])
def test_decimal_refuses_other_types(value):
    error = assert_refused(value, Spec("decimal"), "INVALID_TYPE", path="amount")
    assert error.message == "amount must be a decimal number or a string holding one"


@pytest.mark.parametrize("value", ["abc", "", "1,5", "0x10"])
def test_decimal_refuses_malformed_strings(value):
    error = assert_refused(value, Spec("decimal"), "INVALID_VALUE")
    assert "must be a decimal number" in error.message


@pytest.mark.parametrize("value", ["NaN", "nan", "sNaN", "Infinity", "-Infinity", "inf"])
def test_decimal_refuses_non_finite_strings(value):
    error = assert_refused(value, Spec("decimal"), "INVALID_VALUE")
    assert "finite" in error.message


@pytest.mark.parametrize("value", ["1e101", "-1e101", "1e-101", Decimal("1E+999999999"), 10**101])
def test_decimal_refuses_huge_exponents_without_expanding_them(value):
    error = assert_refused(value, Spec("decimal"), "INVALID_VALUE")
    assert "out of range" in error.message


# --- timestamp ------------------------------------------------------------

NEW_YEAR = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "instant"),
    [
        ("2026-01-01T00:00:00Z", NEW_YEAR),
        ("2026-01-01T01:00:00+01:00", NEW_YEAR),
        ("2026-01-01T00:00:00.5Z", NEW_YEAR + timedelta(milliseconds=500)),
        ("2026-01-01", NEW_YEAR),  # a bare date is midnight UTC
        (1767225600, NEW_YEAR),  # Unix seconds
        (Decimal("1767225600.25"), NEW_YEAR + timedelta(milliseconds=250)),
        (0, datetime(1970, 1, 1, tzinfo=UTC)),
        (-1, datetime(1969, 12, 31, 23, 59, 59, tzinfo=UTC)),
    ],
)
def test_timestamp_becomes_an_aware_utc_datetime(value, instant):
    parsed = check(value, Spec("timestamp"))
    assert parsed == instant
    assert parsed.utcoffset() == timedelta(0)


@pytest.mark.parametrize("value", ["2026-01-01T00:00:00", "2026-01-01 10:00"])
def test_timestamp_refuses_a_time_without_offset(value):
    error = assert_refused(value, Spec("timestamp"), "INVALID_VALUE", path="timestamp")
    assert "RFC 3339" in error.message


@pytest.mark.parametrize("value", ["", "now", "2026-13-01T00:00:00Z", "1767225600"])
def test_timestamp_refuses_malformed_text(value):
    assert_refused(value, Spec("timestamp"), "INVALID_VALUE")


@pytest.mark.parametrize(
    "value",
    [
        10**12,  # year ~33658
        -(10**12),
        Decimal("1E+30"),
        Decimal("1E+999999"),  # Decimal overflow, not OverflowError
        "0001-01-01T00:00:00+01:00",  # valid text, but before year 1 in UTC
        "9999-12-31T23:59:59-01:00",
        "9999-01-01T00:00:00Z",  # a valid instant, but its billing period could end past year 9999
        253370764800,  # the same in Unix seconds
    ],
)
def test_timestamp_out_of_range(value):
    error = assert_refused(value, Spec("timestamp"), "INVALID_VALUE", path="timestamp")
    assert error.message == "timestamp is out of range: times must be before 9999-01-01T00:00:00Z"


def test_the_last_time_in_range_is_taken():
    assert check("9998-12-31T23:59:59.999999Z", Spec("timestamp")) == datetime(9998, 12, 31, 23, 59, 59, 999999, UTC)


@pytest.mark.parametrize("value", [True, False, 1.5, [2026], {"seconds": 1}])
def test_timestamp_refuses_other_types(value):
    error = assert_refused(value, Spec("timestamp"), "INVALID_TYPE", path="timestamp")
    assert error.message == "timestamp must be an RFC 3339 timestamp or Unix seconds"


# --- object and array -----------------------------------------------------

CHARGE = obj({"billable_metric_code": string(required=True), "amount": Spec("decimal")})
PLAN = obj({"code": string(required=True), "charges": array(CHARGE, max_items=2), "meta": obj({"note": string()})})


def test_object_returns_every_declared_field():
    assert check({"code": "gold"}, PLAN) == {"code": "gold", "charges": None, "meta": None}


def test_object_checks_nested_values():
    body = {"code": "gold", "charges": [{"billable_metric_code": "calls", "amount": Decimal("0.50")}], "meta": {}}
    assert check(body, PLAN) == {
        "code": "gold",
        "charges": [{"billable_metric_code": "calls", "amount": "0.50"}],
        "meta": {"note": None},
    }


def test_object_refuses_an_unknown_field_naming_its_path():
    error = assert_refused({"code": "gold", "colour": "red"}, PLAN, "UNKNOWN_FIELD", path="", field="colour")
    assert error.message == "unknown field 'colour'"
    body = {"code": "gold", "charges": [{"billable_metric_code": "a"}, {"billable_metric_code": "b", "x": 1}]}
    assert_refused(body, PLAN, "UNKNOWN_FIELD", path="", field="charges[1].x")
    assert_refused(body, PLAN, "UNKNOWN_FIELD", path="plan", field="plan.charges[1].x")


def test_object_refuses_a_missing_required_nested_field():
    error = assert_refused(
        {"code": "gold", "charges": [{}]}, PLAN, "MISSING_FIELD", path="", field="charges[0].billable_metric_code"
    )
    assert error.message == "charges[0].billable_metric_code is required"


@pytest.mark.parametrize("value", [[], "gold", 5])
def test_object_refuses_non_objects(value):
    assert_refused(value, PLAN, "INVALID_TYPE", path="plan")


def test_object_nullable():
    assert check(None, obj({}, required=True, nullable=True)) is None
    assert_refused(None, obj({}, required=True), "MISSING_FIELD")


def test_array_max_items():
    two = [{"billable_metric_code": "a"}, {"billable_metric_code": "b"}]
    assert len(check({"code": "gold", "charges": two}, PLAN)["charges"]) == 2
    error = assert_refused(
        {"code": "gold", "charges": [*two, {"billable_metric_code": "c"}]},
        PLAN,
        "TOO_MANY_ITEMS",
        path="",
        field="charges",
    )
    assert "more than 2 items" in error.message


def test_array_without_a_limit_takes_any_length():
    assert check(list(range(1000)), array(Spec("integer"))) == list(range(1000))


def test_array_items_name_their_index():
    assert_refused([1, "two"], array(Spec("integer")), "INVALID_TYPE", path="values", field="values[1]")


@pytest.mark.parametrize("value", [{"a": 1}, "a", 1])
def test_array_refuses_non_arrays(value):
    assert_refused(value, array(Spec("integer")), "INVALID_TYPE")


# --- properties -----------------------------------------------------------


def test_properties_become_exact_strings():
    value = {
        "region": "eu-west-1",
        "gpu": True,
        "spot": False,
        "count": 12,
        "gb": Decimal("1.50"),
        "big": 10**30,
        "nested": {"a": [1, "b", None, True]},
        "list": [1, 2],
        "skipped": None,
        "empty": "",
    }
    assert check(value, Spec("properties")) == {
        "region": "eu-west-1",
        "gpu": "true",
        "spot": "false",
        "count": "12",
        "gb": "1.50",
        "big": "1000000000000000000000000000000",
        "nested": '{"a":[1,"b",null,true]}',
        "list": "[1,2]",
        "empty": "",
    }


def test_properties_keep_json_number_text_after_parsing():
    parsed = parse_json(b'{"gb": 0.10, "n": 7}')
    assert check(parsed, Spec("properties")) == {"gb": "0.10", "n": "7"}


@pytest.mark.parametrize("value", [[], "a", 1])
def test_properties_refuse_non_objects(value):
    error = assert_refused(value, Spec("properties"), "INVALID_TYPE", path="properties")
    assert error.message == "properties must be an object"


# --- parse_json -----------------------------------------------------------


def test_parse_json_reads_numbers_as_exact_decimals():
    assert parse_json(b'{"a": 0.1, "b": 2, "c": [true, null, "x"]}') == {
        "a": Decimal("0.1"),
        "b": 2,
        "c": [True, None, "x"],
    }
    assert isinstance(parse_json(b"0.1"), Decimal)


def malformed(raw: bytes) -> ApiError:
    with pytest.raises(ApiError) as caught:
        parse_json(raw)
    error = caught.value
    assert (error.status, error.reason, error.field) == (400, "MALFORMED_JSON", "")
    return error


def test_parse_json_malformed_says_where():
    assert malformed(b'{"a": }').message == "malformed JSON: Expecting value at line 1 column 7"
    assert "line 2" in malformed(b'{"a": 1,\n}').message
    assert "malformed JSON" in malformed(b"").message


def test_parse_json_refuses_non_utf8():
    assert malformed(b'{"a": "\xff"}').message == "the body is not UTF-8"


@pytest.mark.parametrize(
    ("raw", "name"), [(b'{"a": NaN}', "NaN"), (b"[Infinity]", "Infinity"), (b"-Infinity", "-Infinity")]
)
def test_parse_json_refuses_non_finite_constants(raw, name):
    assert malformed(raw).message == f"malformed JSON: {name} is not a number"


def test_parse_json_refuses_an_integer_with_too_many_digits():
    assert "too many digits" in malformed(b'{"n": ' + b"9" * 5000 + b"}").message


def test_parse_json_refuses_deep_nesting():
    assert "nested too deeply" in malformed(b"[" * 50_000).message


def test_type_names_cover_every_checker():
    assert set(schema._TYPE_NAMES) == set(schema._CHECKERS)


def test_parse_json_refuses_an_unpaired_surrogate_escape():
    assert "unpaired UTF-16 surrogate" in malformed(b'{"name": "\\ud800"}').message


def test_parse_json_accepts_a_paired_surrogate_escape():
    assert parse_json(b'{"name": "\\ud83d\\ude00"}') == {"name": "\U0001f600"}


def test_a_null_array_item_or_map_value_is_refused_by_its_path():
    error = assert_refused({"code": "gold", "charges": [None]}, PLAN, "INVALID_TYPE", field="body.charges[0]")
    assert error.message == "body.charges[0] must be an object"
    prices = schema.mapping(Spec("decimal"))
    error = assert_refused({"us": "1", "eu": None}, prices, "INVALID_TYPE", field="body.eu")
    assert error.message == "body.eu must be a decimal number or a string holding one"


def test_a_nullable_array_item_may_be_null():
    assert check([None, 3], array(Spec("integer", nullable=True))) == [None, 3]
