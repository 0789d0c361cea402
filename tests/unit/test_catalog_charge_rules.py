"""What a plan's charge properties may contain; every refusal names the
field the way the JSON API spells it."""

from __future__ import annotations

import pytest

from bxb.catalog.v1 import billable_metrics_pb2 as metrics_pb
from bxb.catalog.v1 import plans_pb2 as pb
from services.catalog.charge_rules import validate
from services.common.errors import InvalidArgument

PATH = "charges[0]"
SUM = metrics_pb.AGGREGATION_TYPE_SUM
RANGES = "charges[0].properties.graduated_ranges"


def rng(from_value: str = "", to_value: str = "", per_unit: str = "", flat: str = "") -> pb.GraduatedRange:
    return pb.GraduatedRange(from_value=from_value, to_value=to_value, per_unit_amount=per_unit, flat_amount=flat)


def standard(amount: str = "", ranges=()) -> pb.Charge:
    return pb.Charge(
        charge_model=pb.CHARGE_MODEL_STANDARD, properties=pb.ChargeProperties(amount=amount, graduated_ranges=ranges)
    )


def graduated(*ranges: pb.GraduatedRange, amount: str = "") -> pb.Charge:
    return pb.Charge(
        charge_model=pb.CHARGE_MODEL_GRADUATED, properties=pb.ChargeProperties(amount=amount, graduated_ranges=ranges)
    )


def refusal(charge: pb.Charge, path: str = PATH) -> InvalidArgument:
    with pytest.raises(InvalidArgument) as caught:
        validate(charge, path, SUM)
    return caught.value


# --- standard -------------------------------------------------------------


@pytest.mark.parametrize(("given", "stored"), [("0.0010", "0.001"), ("1e3", "1000"), ("12.50", "12.5"), ("0", "0")])
def test_standard_amount_is_stored_canonical(given, stored):
    assert validate(standard(given), PATH, SUM) == pb.ChargeProperties(amount=stored)


def test_standard_without_amount_is_refused():
    error = refusal(standard())
    assert error.field == "charges[0].properties.amount"
    assert "required" in error.message


@pytest.mark.parametrize(("amount", "words"), [("abc", "decimal number"), ("-0.01", "negative"), ("NaN", "finite")])
def test_standard_with_a_bad_amount_is_refused(amount, words):
    error = refusal(standard(amount))
    assert error.field == "charges[0].properties.amount"
    assert words in error.message


def test_standard_with_graduated_ranges_is_refused():
    error = refusal(standard("1", ranges=[rng("0", "", "1")]))
    assert error.field == "charges[0].properties.graduated_ranges"


def test_the_path_prefix_is_the_callers():
    assert refusal(standard(), path="charges[3]").field == "charges[3].properties.amount"


# --- graduated: accepted --------------------------------------------------


def test_graduated_ranges_are_stored_canonical_with_defaults():
    props = validate(
        graduated(rng("", "100.0", "0.10", "5.00"), rng("101", "1e3", "0.050"), rng("1001.0", "")), PATH, SUM
    )
    assert props == pb.ChargeProperties(
        graduated_ranges=[
            rng("0", "100", "0.1", "5"),
            rng("101", "1000", "0.05", "0"),
            rng("1001", "", "0", "0"),
        ]
    )


def test_a_single_open_range_is_enough():
    assert validate(graduated(rng("0", "", "0.5")), PATH, SUM) == pb.ChargeProperties(
        graduated_ranges=[rng("0", "", "0.5", "0")]
    )


def test_a_one_unit_range_is_allowed():
    props = validate(graduated(rng("0", "0", "0", "10"), rng("1", "", "1")), PATH, SUM)
    assert [(r.from_value, r.to_value) for r in props.graduated_ranges] == [("0", "0"), ("1", "")]


# --- graduated: refused ---------------------------------------------------


def test_graduated_with_an_amount_is_refused():
    error = refusal(graduated(rng("0", "", "1"), amount="1"))
    assert error.field == "charges[0].properties.amount"


def test_graduated_without_ranges_is_refused():
    error = refusal(graduated())
    assert error.field == RANGES
    assert "at least one range" in error.message


def test_first_range_must_start_at_zero():
    error = refusal(graduated(rng("1", "", "1")))
    assert error.field == f"{RANGES}[0].from"
    assert "must be 0" in error.message


def test_a_gap_between_ranges_is_refused():
    error = refusal(graduated(rng("0", "100", "1"), rng("102", "", "1")))
    assert error.field == f"{RANGES}[1].from"
    assert "must be 101" in error.message


def test_overlapping_ranges_are_refused():
    error = refusal(graduated(rng("0", "100", "1"), rng("100", "", "1")))
    assert error.field == f"{RANGES}[1].from"
    assert "must be 101" in error.message


def test_a_later_range_without_from_is_refused():
    error = refusal(graduated(rng("0", "100", "1"), rng("", "", "1")))
    assert error.field == f"{RANGES}[1].from"


@pytest.mark.parametrize(("from_value", "words"), [("x", "decimal number"), ("-1", "negative")])
def test_a_malformed_from_is_refused(from_value, words):
    error = refusal(graduated(rng(from_value, "", "1")))
    assert error.field == f"{RANGES}[0].from"
    assert words in error.message


def test_an_unbounded_middle_range_is_refused():
    error = refusal(graduated(rng("0", "100", "1"), rng("101", "", "1"), rng("201", "", "1")))
    assert error.field == f"{RANGES}[1].to"
    assert "only the last range may be open-ended" in error.message


def test_the_last_range_must_be_open_ended():
    error = refusal(graduated(rng("0", "100", "1"), rng("101", "200", "1")))
    assert error.field == f"{RANGES}[1].to"
    assert "must be null" in error.message


def test_a_single_bounded_range_is_refused():
    assert refusal(graduated(rng("0", "100", "1"))).field == f"{RANGES}[0].to"


@pytest.mark.parametrize(
    ("to_value", "words"),
    [("100.5", "whole number"), ("abc", "decimal number"), ("-5", "negative"), ("1e101", "out of range")],
)
def test_a_malformed_to_is_refused(to_value, words):
    error = refusal(graduated(rng("0", to_value, "1"), rng("101", "", "1")))
    assert error.field == f"{RANGES}[0].to"
    assert words in error.message


def test_to_below_from_is_refused():
    error = refusal(graduated(rng("0", "100", "1"), rng("101", "50", "1"), rng("51", "", "1")))
    assert error.field == f"{RANGES}[1].to"
    assert "not below from" in error.message


@pytest.mark.parametrize(
    ("ranges", "field"),
    [
        ((rng("0", "", "-0.01"),), f"{RANGES}[0].per_unit"),
        ((rng("0", "", "cheap"),), f"{RANGES}[0].per_unit"),
        ((rng("0", "10", "1"), rng("11", "", "1", "-5")), f"{RANGES}[1].flat_amount"),
        ((rng("0", "", "1", "Infinity"),), f"{RANGES}[0].flat_amount"),
    ],
)
def test_bad_prices_are_refused(ranges, field):
    assert refusal(graduated(*ranges)).field == field


# --- model ----------------------------------------------------------------


@pytest.mark.parametrize("model", [pb.CHARGE_MODEL_UNSPECIFIED, 99])
def test_a_charge_without_a_known_model_is_refused(model):
    charge = pb.Charge(charge_model=model, properties=pb.ChargeProperties(amount="1"))
    error = refusal(charge)
    assert error.field == "charges[0].charge_model"
    assert "required" in error.message
