"""The one JSON shape of a metric, whichever route (code or key) serves it."""

from __future__ import annotations

from bxb.catalog.v1 import billable_metrics_pb2 as pb
from gateway.routes.metrics import create_spec, metric_json, metric_message
from gateway.schema import check


def test_a_metric_renders_its_code_as_key_and_its_value_type():
    metric = pb.BillableMetric(
        id="bm_1", code="api_calls", aggregation_type=pb.AGGREGATION_TYPE_WEIGHTED_SUM, value_type=pb.VALUE_TYPE_DECIMAL
    )
    rendered = metric_json(metric)
    assert (rendered["code"], rendered["key"]) == ("api_calls", "api_calls")
    assert (rendered["aggregation_type"], rendered["value_type"], rendered["field_name"]) == (
        "weighted_sum",
        "decimal",
        None,
    )
    assert rendered["created_at"] is None


def test_an_unset_value_type_renders_as_null():
    assert metric_json(pb.BillableMetric(code="c", aggregation_type=pb.AGGREGATION_TYPE_COUNT))["value_type"] is None


def test_a_body_missing_optional_fields_leaves_them_unset():
    body = check({"key": "api_calls", "aggregation_type": "sum", "value_type": "integer"}, create_spec("key"))
    message = metric_message(body, body["key"])
    assert message == pb.BillableMetric(
        code="api_calls", aggregation_type=pb.AGGREGATION_TYPE_SUM, value_type=pb.VALUE_TYPE_INTEGER
    )
