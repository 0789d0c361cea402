"""A charge's terms beyond its model's properties: filters on the metric's
declared property values (each priced by the charge's model), grouping,
minimum spend, payment in advance and display names; and the rules of a
metric's own filters. Every refusal names the JSON field."""

from __future__ import annotations

import pytest

from bxb.catalog.v1 import billable_metrics_pb2 as metrics_pb
from bxb.catalog.v1 import plans_pb2 as pb
from services.catalog import charge_rules, metrics, validation
from services.common.errors import InvalidArgument

PATH = "charges[0]"
STANDARD, GRADUATED, FLAT, PACKAGE = (
    pb.CHARGE_MODEL_STANDARD,
    pb.CHARGE_MODEL_GRADUATED,
    pb.CHARGE_MODEL_FLAT,
    pb.CHARGE_MODEL_PACKAGE,
)
METRIC = metrics_pb.BillableMetric(
    code="api_calls",
    aggregation_type=metrics_pb.AGGREGATION_TYPE_SUM,
    field_name="amount",
    filters=[
        metrics_pb.PropertyValues(key="region", values=["us-east-1", "eu-west-1", "ap-south-1"]),
        metrics_pb.PropertyValues(key="tier", values=["free", "pro"]),
    ],
)


def values(**keys: list[str]) -> list[metrics_pb.PropertyValues]:
    return [metrics_pb.PropertyValues(key=key, values=given) for key, given in keys.items()]


def price(amount: str = "1", **props) -> pb.ChargeProperties:
    return pb.ChargeProperties(amount=amount, **props)


def a_filter(amount: str = "1", name: str = "", **keys: list[str]) -> pb.ChargeFilter:
    return pb.ChargeFilter(values=values(**keys), properties=price(amount), invoice_display_name=name)


def standard(*filters: pb.ChargeFilter, **terms) -> pb.Charge:
    return pb.Charge(charge_model=STANDARD, properties=terms.pop("properties", price()), filters=filters, **terms)


def refusal(given: pb.Charge, metric: metrics_pb.BillableMetric = METRIC) -> InvalidArgument:
    with pytest.raises(InvalidArgument) as caught:
        charge_rules.charge(given, PATH, metric)
    return caught.value


# --- filters ----------------------------------------------------------------


def test_filters_are_kept_in_order_with_canonical_properties_and_display_names():
    given = standard(
        a_filter("0.50", "US East", region=["us-east-1"]),
        a_filter("0.40", region=["eu-west-1", "ap-south-1"], tier=["pro"]),
        properties=price("1.00"),
        invoice_display_name="API calls",
    )
    stored = charge_rules.charge(given, PATH, METRIC)
    assert stored == pb.Charge(
        charge_model=STANDARD,
        properties=price("1"),
        filters=[
            pb.ChargeFilter(
                values=values(region=["us-east-1"]), properties=price("0.5"), invoice_display_name="US East"
            ),
            pb.ChargeFilter(values=values(region=["eu-west-1", "ap-south-1"], tier=["pro"]), properties=price("0.4")),
        ],
        invoice_display_name="API calls",
    )


def test_a_filter_needs_at_least_one_key():
    error = refusal(standard(pb.ChargeFilter(properties=price())))
    assert error.field == "charges[0].filters[0].values"


def test_a_key_the_metric_does_not_declare_is_refused_by_name():
    error = refusal(standard(a_filter(region=["us-east-1"]), a_filter(country=["fr"])))
    assert (error.field, error.reason) == ("charges[0].filters[1].values.country", "UNKNOWN_FILTER")
    assert "region, tier" in error.message


def test_a_metric_without_filters_takes_no_charge_filter():
    bare = metrics_pb.BillableMetric(code="m", aggregation_type=metrics_pb.AGGREGATION_TYPE_COUNT)
    error = refusal(standard(a_filter(region=["us-east-1"])), bare)
    assert (error.field, error.reason) == ("charges[0].filters[0].values.region", "UNKNOWN_FILTER")
    assert "(its filters: none)" in error.message


def test_a_value_the_metric_does_not_declare_is_refused_by_key():
    error = refusal(standard(a_filter(region=["us-east-1", "mars-1"])))
    assert (error.field, error.reason) == ("charges[0].filters[0].values.region", "UNKNOWN_FILTER")
    assert "'mars-1'" in error.message


def test_a_key_given_twice_in_one_filter_is_refused():
    twice = pb.ChargeFilter(values=[*values(region=["us-east-1"]), *values(region=["eu-west-1"])], properties=price())
    assert refusal(standard(twice)).field == "charges[0].filters[0].values.region"


def test_a_key_without_values_is_refused():
    assert refusal(standard(a_filter(region=[]))).field == "charges[0].filters[0].values.region"


def test_a_value_given_twice_is_refused():
    error = refusal(standard(a_filter(region=["us-east-1", "us-east-1"])))
    assert error.field == "charges[0].filters[0].values.region"
    assert "given twice" in error.message


def test_two_filters_on_the_same_values_are_refused_whatever_their_order():
    error = refusal(
        standard(
            a_filter(region=["us-east-1", "eu-west-1"], tier=["pro"]),
            a_filter(tier=["free"]),
            a_filter(tier=["pro"], region=["eu-west-1", "us-east-1"]),
        )
    )
    assert error.field == "charges[0].filters[2].values"
    assert "charges[0].filters[0]" in error.message


def test_filters_on_overlapping_values_are_distinct():
    given = standard(a_filter(region=["us-east-1"]), a_filter(region=["us-east-1"], tier=["pro"]))
    assert len(charge_rules.charge(given, PATH, METRIC).filters) == 2


def test_a_filters_properties_are_checked_by_the_charges_model():
    missing = pb.ChargeFilter(values=values(region=["us-east-1"]), properties=pb.ChargeProperties())
    error = refusal(standard(a_filter(region=["eu-west-1"]), missing))
    assert error.field == "charges[0].filters[1].properties.amount"
    assert "required for the standard model" in error.message


def test_a_filter_property_of_another_model_is_refused_by_name():
    foreign = pb.ChargeFilter(values=values(region=["us-east-1"]), properties=price(rate="2"))
    assert refusal(standard(foreign)).field == "charges[0].filters[0].properties.rate"


def test_graduated_filter_ranges_follow_the_bound_rules():
    ranges = [pb.GraduatedRange(to_value="10", per_unit_amount="1"), pb.GraduatedRange(from_value="12")]
    given = pb.Charge(
        charge_model=GRADUATED,
        properties=pb.ChargeProperties(graduated_ranges=[pb.GraduatedRange(per_unit_amount="1")]),
        filters=[pb.ChargeFilter(values=values(tier=["pro"]), properties=pb.ChargeProperties(graduated_ranges=ranges))],
    )
    assert refusal(given).field == "charges[0].filters[0].properties.graduated_ranges[1].from"


def test_a_charge_has_at_most_a_hundred_filters():
    many = [a_filter(region=["us-east-1"]) for _ in range(charge_rules.MAX_FILTERS + 1)]
    assert refusal(standard(*many)).field == "charges[0].filters"


def test_a_filter_display_name_has_at_most_200_characters():
    error = refusal(standard(a_filter(name="x" * 201, region=["us-east-1"])))
    assert error.field == "charges[0].filters[0].invoice_display_name"


# --- grouping ---------------------------------------------------------------


def test_grouped_by_is_kept_for_a_usage_model():
    given = pb.Charge(
        charge_model=PACKAGE, properties=pb.ChargeProperties(amount="2", package_size=10, grouped_by=["region", "az"])
    )
    stored = charge_rules.charge(given, PATH, METRIC)
    assert list(stored.properties.grouped_by) == ["region", "az"]
    assert stored.properties.package_size == 10


def test_a_flat_charge_cannot_be_grouped():
    given = pb.Charge(charge_model=FLAT, properties=pb.ChargeProperties(amount="5", grouped_by=["region"]))
    error = refusal(given)
    assert (error.field, error.message) == (
        "charges[0].properties.grouped_by",
        "charges[0].properties.grouped_by does not apply to the flat model",
    )


def test_a_filter_cannot_be_grouped_on_its_own():
    grouped = pb.ChargeFilter(values=values(region=["us-east-1"]), properties=price(grouped_by=["tier"]))
    error = refusal(standard(grouped))
    assert error.field == "charges[0].filters[0].properties.grouped_by"
    assert "whole charge" in error.message


@pytest.mark.parametrize(
    ("keys", "field"),
    [
        (["region", ""], "charges[0].properties.grouped_by[1]"),
        (["region", "region"], "charges[0].properties.grouped_by[1]"),
        (["x" * 101], "charges[0].properties.grouped_by[0]"),
        ([f"k{n}" for n in range(21)], "charges[0].properties.grouped_by"),
    ],
)
def test_grouped_by_needs_a_few_distinct_non_empty_keys(keys, field):
    assert refusal(standard(properties=price(grouped_by=keys))).field == field


# --- minimum spend, advance payment, display name ----------------------------


def test_the_other_terms_are_kept():
    stored = charge_rules.charge(
        pb.Charge(
            charge_model=FLAT,
            properties=pb.ChargeProperties(amount="49"),
            min_amount_cents=100,
            pay_in_advance=True,
            invoice_display_name="Seat",
        ),
        PATH,
        METRIC,
    )
    assert (stored.min_amount_cents, stored.pay_in_advance, stored.invoice_display_name) == (100, True, "Seat")


@pytest.mark.parametrize("model", [STANDARD, PACKAGE])
def test_only_a_flat_charge_can_be_paid_in_advance(model):
    given = pb.Charge(
        charge_model=model,
        properties=pb.ChargeProperties(amount="1", package_size=1 if model == PACKAGE else None),
    )
    given.pay_in_advance = True
    error = refusal(given)
    assert error.field == "charges[0].pay_in_advance"
    assert "only a flat charge" in error.message


def test_a_negative_minimum_spend_is_refused():
    assert refusal(standard(min_amount_cents=-1)).field == "charges[0].min_amount_cents"


def test_a_display_name_has_at_most_200_characters():
    assert refusal(standard(invoice_display_name="x" * 201)).field == "charges[0].invoice_display_name"


def test_the_models_checks_come_first():
    given = pb.Charge(charge_model=STANDARD, pay_in_advance=True)
    assert refusal(given).field == "charges[0].properties.amount"


# --- a metric's filters -----------------------------------------------------


def test_metric_filters_are_stored_as_given():
    given = values(region=["us-east-1", "eu-west-1"], tier=["free"])
    assert metrics.filters(given) == [
        {"key": "region", "values": ["us-east-1", "eu-west-1"]},
        {"key": "tier", "values": ["free"]},
    ]


@pytest.mark.parametrize(
    ("given", "field"),
    [
        ([metrics_pb.PropertyValues(values=["a"])], "filters[0].key"),
        (values(**{"k" * 101: ["a"]}), "filters[0].key"),
        ([*values(region=["a"]), *values(region=["b"])], "filters[1].key"),
        (values(region=[]), "filters[0].values"),
        (values(region=["a", ""]), "filters[0].values[1]"),
        (values(region=["a", "a"]), "filters[0].values[1]"),
        (values(region=["v" * 201]), "filters[0].values[0]"),
        (values(region=[str(n) for n in range(501)]), "filters[0].values"),
        (values(**{f"k{n}": ["a"] for n in range(51)}), "filters"),
    ],
)
def test_metric_filter_refusals_name_the_field(given, field):
    with pytest.raises(InvalidArgument) as caught:
        metrics.filters(given)
    assert caught.value.field == field


def test_the_largest_metric_filters_are_accepted():
    given = values(**{f"k{n}": ["a"] for n in range(49)}, last=[str(n) for n in range(500)])
    assert len(metrics.filters(given)) == 50


@pytest.mark.parametrize(
    ("after", "lost"),
    [
        ([{"key": "region", "values": ["b", "a", "c"]}, {"key": "tier", "values": ["x"]}], ""),
        ([{"key": "region", "values": ["a", "b"]}], ""),
        ([{"key": "region", "values": ["a"]}], "region=b"),
        ([{"key": "tier", "values": ["x"]}], "region"),
        ([], "region"),
    ],
)
def test_a_lost_filter_is_a_dropped_key_or_value(after, lost):
    assert metrics.lost_filter([{"key": "region", "values": ["a", "b"]}], after) == lost


def test_strings_keep_their_order():
    assert validation.strings(["b", "a"], "f", 2, 1) == ["b", "a"]
