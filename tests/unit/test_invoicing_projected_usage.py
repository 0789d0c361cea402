"""Usage projected to a period's end (previews): counts and sums grow with
time, a count stays whole, a percentage charge's events repeat in order, and
levels stay as they are."""

from __future__ import annotations

from decimal import Decimal

from bxb.catalog.v1 import billable_metrics_pb2 as metrics
from bxb.catalog.v1 import plans_pb2
from bxb.metering.v1 import usage_pb2
from services.invoicing.fees import projected


def charge(aggregation: int) -> plans_pb2.Charge:
    return plans_pb2.Charge(billable_metric=metrics.BillableMetric(code="m", aggregation_type=aggregation))


def usage(value: str, count: int, values=(), groups=()) -> usage_pb2.AggregateUsageResponse:
    return usage_pb2.AggregateUsageResponse(value=value, event_count=count, values=list(values), groups=list(groups))


def test_a_sum_grows_by_the_factor_and_its_groups_with_it():
    group = usage_pb2.UsageGroup(bucket=1, group_values=["eu"], value="10.5", event_count=3)
    got = projected(charge(metrics.AGGREGATION_TYPE_SUM), usage("110000", 4, groups=[group]), Decimal("3.1"))
    assert (got.value, got.event_count) == ("341000", 12)
    assert (got.groups[0].value, got.groups[0].event_count, list(got.groups[0].group_values)) == ("32.55", 9, ["eu"])


def test_a_count_stays_whole_and_the_original_is_untouched():
    original = usage("7", 7)
    got = projected(charge(metrics.AGGREGATION_TYPE_COUNT), original, Decimal("2.5"))
    assert (got.value, got.event_count) == ("17", 17)
    assert original.value == "7"


def test_each_event_s_values_repeat_in_order_for_percentage_charges():
    got = projected(charge(metrics.AGGREGATION_TYPE_SUM), usage("6", 3, values=["1", "2", "3"]), Decimal("2.4"))
    assert list(got.values) == ["1", "2", "3", "1", "2", "3", "1"]


def test_levels_are_not_projected():
    for aggregation in (
        metrics.AGGREGATION_TYPE_MAX,
        metrics.AGGREGATION_TYPE_LATEST,
        metrics.AGGREGATION_TYPE_UNIQUE_COUNT,
        metrics.AGGREGATION_TYPE_WEIGHTED_SUM,
    ):
        level = usage("42", 5)
        assert projected(charge(aggregation), level, Decimal(3)) is level
