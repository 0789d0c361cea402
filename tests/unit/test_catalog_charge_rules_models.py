"""The volume, package, percentage, graduated percentage and flat charge
models: what each accepts, its canonical form, and every refusal, named by the
JSON field path."""

from __future__ import annotations

import pytest

from bxb.catalog.v1 import billable_metrics_pb2 as metrics_pb
from bxb.catalog.v1 import plans_pb2 as pb
from services.catalog.charge_rules import validate
from services.common.errors import InvalidArgument

PATH = "charges[0]"
WHERE = "charges[0].properties"
SUM = metrics_pb.AGGREGATION_TYPE_SUM

VOLUME = pb.CHARGE_MODEL_VOLUME
PACKAGE = pb.CHARGE_MODEL_PACKAGE
PERCENTAGE = pb.CHARGE_MODEL_PERCENTAGE
GRADUATED_PERCENTAGE = pb.CHARGE_MODEL_GRADUATED_PERCENTAGE
FLAT = pb.CHARGE_MODEL_FLAT


def rng(from_value: str = "", to_value: str = "", per_unit: str = "", flat: str = "") -> pb.GraduatedRange:
    return pb.GraduatedRange(from_value=from_value, to_value=to_value, per_unit_amount=per_unit, flat_amount=flat)


def prng(from_value: str = "", to_value: str = "", rate: str = "", flat: str = "") -> pb.GraduatedPercentageRange:
    return pb.GraduatedPercentageRange(from_value=from_value, to_value=to_value, rate=rate, flat_amount=flat)


def charge(model: int, **props) -> pb.Charge:
    return pb.Charge(charge_model=model, properties=pb.ChargeProperties(**props))


def accepted(model: int, aggregation: int = SUM, **props) -> pb.ChargeProperties:
    return validate(charge(model, **props), PATH, aggregation)


def refusal(model: int, aggregation: int = SUM, **props) -> InvalidArgument:
    with pytest.raises(InvalidArgument) as caught:
        validate(charge(model, **props), PATH, aggregation)
    return caught.value


# --- which properties each model has ----------------------------------------

# One valid-looking value for every property, to offer it to a model it does not belong to.
SAMPLE = {
    "amount": "1",
    "graduated_ranges": [rng("0", "", "1")],
    "volume_ranges": [rng("0", "", "1")],
    "package_size": 1,
    "free_units": 1,
    "rate": "1",
    "fixed_amount": "1",
    "free_units_per_events": 1,
    "free_units_per_total_aggregation": "1",
    "per_transaction_min_amount": "1",
    "per_transaction_max_amount": "1",
    "graduated_percentage_ranges": [prng("0", "", "1")],
    "grouped_by": ["region"],
}
# The properties of each model, as ISSUE3_MODELS.md and the API agree; every
# model that depends on usage may group it (grouped_by), FLAT does not.
OWN = {
    pb.CHARGE_MODEL_STANDARD: {"amount", "grouped_by"},
    pb.CHARGE_MODEL_GRADUATED: {"graduated_ranges", "grouped_by"},
    VOLUME: {"volume_ranges", "grouped_by"},
    PACKAGE: {"amount", "package_size", "free_units", "grouped_by"},
    PERCENTAGE: {
        "rate",
        "fixed_amount",
        "free_units_per_events",
        "free_units_per_total_aggregation",
        "per_transaction_min_amount",
        "per_transaction_max_amount",
        "grouped_by",
    },
    GRADUATED_PERCENTAGE: {"graduated_percentage_ranges", "grouped_by"},
    FLAT: {"amount"},
}


def test_the_sample_covers_every_property_of_the_proto():
    assert set(SAMPLE) == {field.name for field in pb.ChargeProperties.DESCRIPTOR.fields}
    assert set(OWN) == set(pb.ChargeModel.values()) - {pb.CHARGE_MODEL_UNSPECIFIED}


def test_each_model_accepts_all_of_its_own_properties_together():
    for model, names in OWN.items():
        props = accepted(model, **{name: SAMPLE[name] for name in names})
        assert {field.name for field, _ in props.ListFields()} == names, pb.ChargeModel.Name(model)


@pytest.mark.parametrize(
    ("model", "foreign"),
    [(model, name) for model, names in OWN.items() for name in SAMPLE if name not in names],
    ids=lambda value: pb.ChargeModel.Name(value) if isinstance(value, int) else value,
)
def test_a_property_of_another_model_is_refused_by_name(model, foreign):
    own = {name: SAMPLE[name] for name in OWN[model]}
    error = refusal(model, **own, **{foreign: SAMPLE[foreign]})
    name = pb.ChargeModel.Name(model).removeprefix("CHARGE_MODEL_").lower()
    assert (error.field, error.message) == (
        f"{WHERE}.{foreign}",
        f"{WHERE}.{foreign} does not apply to the {name} model",
    )


def test_a_foreign_property_is_named_even_when_the_own_ones_are_missing():
    assert refusal(FLAT, rate="2").field == f"{WHERE}.rate"


# --- the metric -------------------------------------------------------------

NOT_SUM = [
    metrics_pb.AGGREGATION_TYPE_COUNT,
    metrics_pb.AGGREGATION_TYPE_MAX,
    metrics_pb.AGGREGATION_TYPE_UNIQUE_COUNT,
    metrics_pb.AGGREGATION_TYPE_LATEST,
]


@pytest.mark.parametrize("aggregation", NOT_SUM)
@pytest.mark.parametrize(
    ("model", "props", "name"),
    [
        (PERCENTAGE, {"rate": "1"}, "percentage"),
        (GRADUATED_PERCENTAGE, {"graduated_percentage_ranges": [prng("0", "", "1")]}, "graduated_percentage"),
    ],
)
def test_percentage_models_need_a_sum_metric(model, props, name, aggregation):
    error = refusal(model, aggregation, **props)
    assert (error.field, error.reason) == ("charges[0].charge_model", "INCOMPATIBLE_METRIC")
    assert error.message == f"charges[0].charge_model {name} needs a billable metric with aggregation_type sum"


@pytest.mark.parametrize("aggregation", NOT_SUM)
@pytest.mark.parametrize("model", [VOLUME, PACKAGE, FLAT])
def test_other_models_take_any_metric(model, aggregation):
    own = {name: SAMPLE[name] for name in OWN[model]}
    assert accepted(model, aggregation, **own) == accepted(model, SUM, **own)


# --- volume -----------------------------------------------------------------

VOLUME_RANGES = f"{WHERE}.volume_ranges"


def test_volume_ranges_are_stored_canonical_with_defaults():
    props = accepted(VOLUME, volume_ranges=[rng("", "100.0", "1.50", "10.00"), rng("101", "1e3", "1.0"), rng("1001")])
    assert props == pb.ChargeProperties(
        volume_ranges=[rng("0", "100", "1.5", "10"), rng("101", "1000", "1", "0"), rng("1001", "", "0", "0")]
    )


def test_volume_without_ranges_is_refused():
    error = refusal(VOLUME)
    assert error.field == VOLUME_RANGES
    assert "at least one range" in error.message


@pytest.mark.parametrize(
    ("ranges", "field", "words"),
    [
        ([rng("1", "", "1")], f"{VOLUME_RANGES}[0].from", "must be 0"),
        ([rng("0", "100", "1"), rng("102", "", "1")], f"{VOLUME_RANGES}[1].from", "must be 101"),
        ([rng("0", "100", "1"), rng("101", "200", "1")], f"{VOLUME_RANGES}[1].to", "must be null"),
        ([rng("0", "", "1"), rng("1", "", "1")], f"{VOLUME_RANGES}[0].to", "only the last range"),
        ([rng("0", "9.5", "1"), rng("10", "", "1")], f"{VOLUME_RANGES}[0].to", "whole number"),
        ([rng("0", "", "-1")], f"{VOLUME_RANGES}[0].per_unit", "negative"),
        ([rng("0", "", "1", "x")], f"{VOLUME_RANGES}[0].flat_amount", "decimal number"),
    ],
)
def test_volume_ranges_follow_the_graduated_bound_rules(ranges, field, words):
    error = refusal(VOLUME, volume_ranges=ranges)
    assert error.field == field
    assert words in error.message


# --- package ----------------------------------------------------------------


def test_package_is_stored_canonical():
    assert accepted(PACKAGE, amount="5.00", package_size=100, free_units=10) == pb.ChargeProperties(
        amount="5", package_size=100, free_units=10
    )


def test_package_free_units_default_to_zero():
    assert accepted(PACKAGE, amount="0", package_size=1) == pb.ChargeProperties(amount="0", package_size=1)


@pytest.mark.parametrize(
    ("props", "field", "words"),
    [
        ({"package_size": 10}, f"{WHERE}.amount", "amount is required for the package model"),
        ({"amount": "-1", "package_size": 10}, f"{WHERE}.amount", "negative"),
        ({"amount": "1"}, f"{WHERE}.package_size", "package_size is required for the package model"),
        ({"amount": "1", "package_size": -3}, f"{WHERE}.package_size", "whole number of at least 1, got -3"),
        ({"amount": "1", "package_size": 10, "free_units": -1}, f"{WHERE}.free_units", "at least 0, got -1"),
    ],
)
def test_package_refusals(props, field, words):
    error = refusal(PACKAGE, **props)
    assert error.field == field
    assert words in error.message


# --- percentage -------------------------------------------------------------


def test_percentage_with_only_a_rate_leaves_every_option_unset():
    assert accepted(PERCENTAGE, rate="2.50") == pb.ChargeProperties(rate="2.5")


def test_percentage_with_every_option_is_stored_canonical():
    props = accepted(
        PERCENTAGE,
        rate="1.50",
        fixed_amount="0.10",
        free_units_per_events=3,
        free_units_per_total_aggregation="500.00",
        per_transaction_min_amount="0.50",
        per_transaction_max_amount="1e1",
    )
    assert props == pb.ChargeProperties(
        rate="1.5",
        fixed_amount="0.1",
        free_units_per_events=3,
        free_units_per_total_aggregation="500",
        per_transaction_min_amount="0.5",
        per_transaction_max_amount="10",
    )


@pytest.mark.parametrize("rate", ["0", "100", "150.5"])
def test_a_rate_of_zero_or_above_a_hundred_is_allowed(rate):
    assert accepted(PERCENTAGE, rate=rate).rate == rate


@pytest.mark.parametrize("value", ["0", "2"])
def test_min_may_equal_max_and_zero_is_a_set_bound(value):
    props = accepted(PERCENTAGE, rate="1", per_transaction_min_amount=value, per_transaction_max_amount=value)
    assert (props.per_transaction_min_amount, props.per_transaction_max_amount) == (value, value)


def test_min_or_max_may_be_given_alone():
    assert accepted(PERCENTAGE, rate="1", per_transaction_min_amount="5").per_transaction_max_amount == ""
    assert accepted(PERCENTAGE, rate="1", per_transaction_max_amount="5").per_transaction_min_amount == ""


def test_percentage_without_a_rate_is_refused():
    error = refusal(PERCENTAGE, fixed_amount="-1", free_units_per_events=-1)  # the missing rate is named first
    assert error.field == f"{WHERE}.rate"
    assert error.message == f"{WHERE}.rate is required for the percentage model"


@pytest.mark.parametrize(
    "name",
    [
        "rate",
        "fixed_amount",
        "free_units_per_total_aggregation",
        "per_transaction_min_amount",
        "per_transaction_max_amount",
    ],
)
@pytest.mark.parametrize(("value", "words"), [("-0.01", "negative"), ("ten", "decimal number"), ("Inf", "finite")])
def test_percentage_decimals_are_checked_by_name(name, value, words):
    props = {"rate": "1", name: value}
    error = refusal(PERCENTAGE, **props)
    assert error.field == f"{WHERE}.{name}"
    assert words in error.message


def test_negative_free_units_per_events_is_refused():
    error = refusal(PERCENTAGE, rate="1", free_units_per_events=-2)
    assert error.field == f"{WHERE}.free_units_per_events"
    assert "at least 0, got -2" in error.message


def test_min_above_max_is_refused():
    error = refusal(PERCENTAGE, rate="1", per_transaction_min_amount="5.5", per_transaction_max_amount="5")
    assert error.field == f"{WHERE}.per_transaction_min_amount"
    assert error.message == f"{WHERE}.per_transaction_min_amount must not exceed per_transaction_max_amount"


# --- graduated percentage ---------------------------------------------------

PERCENT_RANGES = f"{WHERE}.graduated_percentage_ranges"


def test_graduated_percentage_ranges_are_stored_canonical_with_defaults():
    props = accepted(
        GRADUATED_PERCENTAGE,
        graduated_percentage_ranges=[prng("", "1e3", "2.00", "0.50"), prng("1001", "", "1.0")],
    )
    assert props == pb.ChargeProperties(
        graduated_percentage_ranges=[prng("0", "1000", "2", "0.5"), prng("1001", "", "1", "0")]
    )


def test_a_graduated_percentage_tier_without_a_rate_charges_zero_percent():
    props = accepted(GRADUATED_PERCENTAGE, graduated_percentage_ranges=[prng("0", "", "", "3")])
    assert props.graduated_percentage_ranges == [prng("0", "", "0", "3")]


def test_graduated_percentage_without_ranges_is_refused():
    error = refusal(GRADUATED_PERCENTAGE)
    assert error.field == PERCENT_RANGES
    assert "at least one range" in error.message


@pytest.mark.parametrize(
    ("ranges", "field", "words"),
    [
        ([prng("5", "", "1")], f"{PERCENT_RANGES}[0].from", "must be 0"),
        ([prng("0", "10", "1"), prng("10", "", "1")], f"{PERCENT_RANGES}[1].from", "must be 11"),
        ([prng("0", "10", "1"), prng("11", "20", "1")], f"{PERCENT_RANGES}[1].to", "must be null"),
        ([prng("0", "10", "1"), prng("11", "5", "1"), prng("6")], f"{PERCENT_RANGES}[1].to", "not below from"),
        ([prng("0", "", "1"), prng("1", "", "1")], f"{PERCENT_RANGES}[0].to", "only the last range"),
        ([prng("0", "10", "1"), prng("11", "", "-1")], f"{PERCENT_RANGES}[1].rate", "negative"),
        ([prng("0", "", "one")], f"{PERCENT_RANGES}[0].rate", "decimal number"),
        ([prng("0", "", "1", "-1")], f"{PERCENT_RANGES}[0].flat_amount", "negative"),
    ],
)
def test_graduated_percentage_ranges_follow_the_graduated_bound_rules(ranges, field, words):
    error = refusal(GRADUATED_PERCENTAGE, graduated_percentage_ranges=ranges)
    assert error.field == field
    assert words in error.message


# --- flat -------------------------------------------------------------------


def test_flat_is_stored_canonical():
    assert accepted(FLAT, amount="49.90") == pb.ChargeProperties(amount="49.9")


@pytest.mark.parametrize(
    ("amount", "words"), [("", "amount is required for the flat model"), ("-5", "negative"), ("1e200", "out of range")]
)
def test_flat_refusals(amount, words):
    error = refusal(FLAT, amount=amount)
    assert error.field == f"{WHERE}.amount"
    assert words in error.message


def test_the_path_prefix_is_the_callers():
    with pytest.raises(InvalidArgument) as caught:
        validate(charge(PACKAGE, amount="1"), "charges[7]", SUM)
    assert caught.value.field == "charges[7].properties.package_size"
