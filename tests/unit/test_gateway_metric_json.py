"""The one JSON shape of a metric, whichever route (code or key) serves it."""

from __future__ import annotations

from bxb.catalog.v1 import billable_metrics_pb2 as pb
from gateway.codec import Decoder, Encoder
from gateway.dialects import ABAXUS, BXB


def test_a_metric_renders_its_code_as_key_and_its_value_type():
    metric = pb.BillableMetric(
        id="bm_1", code="api_calls", aggregation_type=pb.AGGREGATION_TYPE_WEIGHTED_SUM, value_type=pb.VALUE_TYPE_DECIMAL
    )
    for views in (BXB, ABAXUS):
        rendered = Encoder(views).message(metric)
        assert (rendered["code"], rendered["key"]) == ("api_calls", "api_calls")
        assert (rendered["aggregation_type"], rendered["value_type"], rendered["field_name"]) == (
            "weighted_sum",
            "decimal",
            None,
        )
        assert rendered["created_at"] is None
    assert Encoder(BXB).message(metric) == Encoder(ABAXUS).message(metric)


def test_an_unset_value_type_renders_as_null():
    metric = pb.BillableMetric(code="c", aggregation_type=pb.AGGREGATION_TYPE_COUNT)
    assert Encoder(BXB).message(metric)["value_type"] is None


def test_a_body_missing_optional_fields_leaves_them_unset():
    message = pb.BillableMetric()
    Decoder(ABAXUS).into(message, {"key": "api_calls", "aggregation_type": "sum", "value_type": "integer"})
    assert message == pb.BillableMetric(
        code="api_calls", aggregation_type=pb.AGGREGATION_TYPE_SUM, value_type=pb.VALUE_TYPE_INTEGER
    )
