"""The numbers an event may carry: exactly what ClickHouse's Decimal128(12)
holds, in notation Python and ClickHouse read alike."""

from __future__ import annotations

from decimal import Decimal

import pytest

from bxb.catalog.v1 import billable_metrics_pb2 as metrics_pb
from services.common.errors import InvalidArgument
from services.metering.numbers import exact_number, property_error, value_text

ACCEPTED = {
    "2340": Decimal(2340),
    "-0.5": Decimal("-0.5"),
    "+5": Decimal(5),
    ".5": Decimal("0.5"),
    "5.": Decimal(5),
    "1E+3": Decimal(1000),
    "1e-12": Decimal("1e-12"),
    "99999999999999999999999999.999999999999": Decimal("99999999999999999999999999.999999999999"),
    "0.100000000000000": Decimal("0.1"),  # trailing zeros are not decimal places of the value
}
REFUSED = ["abc", "1_000", " 7 ", "7 ", "", "1e26", "-1e26", "0.1234567890123", "1e-13", "NaN", "Infinity", "0x10",
           "1e99999999", "--1", "1,5"]  # fmt: skip


@pytest.mark.parametrize(("text", "value"), ACCEPTED.items())
def test_a_number_is_read_exactly(text, value):
    assert exact_number(text, "value") == value


@pytest.mark.parametrize("text", REFUSED)
def test_anything_else_is_refused_naming_the_field(text):
    with pytest.raises(InvalidArgument) as refused:
        exact_number(text, "properties.tokens")
    assert (refused.value.field, refused.value.reason) == ("properties.tokens", "INVALID_NUMBER")
    assert "at most 26 integer digits and 12 decimal places" in refused.value.message


def test_the_top_level_value_is_kept_in_canonical_notation():
    assert [value_text(t, "value") for t in ("1E+3", "-0.50", "+5")] == ["1000", "-0.5", "5"]


def metric(aggregation: int, field: str = "tokens") -> metrics_pb.BillableMetric:
    return metrics_pb.BillableMetric(code="api", aggregation_type=aggregation, field_name=field)


@pytest.mark.parametrize(
    "aggregation",
    [
        metrics_pb.AGGREGATION_TYPE_SUM,
        metrics_pb.AGGREGATION_TYPE_MAX,
        metrics_pb.AGGREGATION_TYPE_LATEST,
        metrics_pb.AGGREGATION_TYPE_WEIGHTED_SUM,
    ],
)
def test_a_property_a_metric_adds_up_must_be_a_number(aggregation):
    error = property_error(metric(aggregation), {"tokens": "abc"}, "events[2].")
    assert (error.reason, error.field) == ("INVALID_NUMBER", "events[2].properties.tokens")
    assert property_error(metric(aggregation), {"tokens": "12"}, "") is None
    assert property_error(metric(aggregation), {"other": "abc"}, "") is None  # absent: counts nothing


def test_a_property_read_as_text_or_not_at_all_may_be_anything():
    assert property_error(metric(metrics_pb.AGGREGATION_TYPE_UNIQUE_COUNT), {"tokens": "abc"}, "") is None
    assert property_error(metric(metrics_pb.AGGREGATION_TYPE_COUNT, ""), {"tokens": "abc"}, "") is None
    assert property_error(metric(metrics_pb.AGGREGATION_TYPE_SUM, ""), {"tokens": "abc"}, "") is None  # fed by value
