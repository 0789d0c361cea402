"""A catalog metric's aggregation as metering's usage queries name it."""

from __future__ import annotations

from bxb.catalog.v1 import billable_metrics_pb2
from bxb.metering.v1 import usage_pb2


def aggregation(metric: billable_metrics_pb2.BillableMetric) -> usage_pb2.Aggregation.ValueType:
    name = billable_metrics_pb2.AggregationType.Name(metric.aggregation_type).removeprefix("AGGREGATION_TYPE_")
    return usage_pb2.Aggregation.Value(f"AGGREGATION_{name}")
