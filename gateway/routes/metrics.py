"""/v1/billable_metrics: what to meter."""

from __future__ import annotations

from starlette.routing import Route

from bxb.catalog.v1 import billable_metrics_pb2 as pb
from gateway import render
from gateway.call import Call, endpoint, json
from gateway.schema import obj, string

PREFIX = "AGGREGATION_TYPE_"
AGGREGATIONS = ("count", "sum", "max", "unique_count", "latest")

CREATE = obj(
    {
        "name": string(max_length=200),
        "code": string(required=True, max_length=100),
        "description": string(max_length=2000),
        "aggregation_type": string(required=True, choices=AGGREGATIONS),
        "field_name": string(max_length=200),
    }
)


def metric_json(metric: pb.BillableMetric) -> dict:
    return {
        "id": metric.id,
        "code": metric.code,
        "name": metric.name,
        "description": metric.description,
        "aggregation_type": render.enum(pb.AggregationType, metric.aggregation_type, PREFIX),
        "field_name": metric.field_name or None,
        "created_at": render.time(metric, "create_time"),
    }


async def create(call: Call):
    body = call.body
    metric = pb.BillableMetric(
        code=body["code"],
        name=body["name"] or "",
        description=body["description"] or "",
        aggregation_type=render.enum_value(pb.AggregationType, body["aggregation_type"], PREFIX),
        field_name=body["field_name"] or "",
    )
    created = await call.clients.metrics.CreateBillableMetric(
        pb.CreateBillableMetricRequest(billable_metric=metric), **call.options
    )
    return json(metric_json(created), 201)


async def get(call: Call):
    metric = await call.clients.metrics.GetBillableMetric(
        pb.GetBillableMetricRequest(code=call.path("code")), **call.options
    )
    return json(metric_json(metric))


async def list_(call: Call):
    reply = await call.clients.metrics.ListBillableMetrics(
        pb.ListBillableMetricsRequest(page_size=call.query_int("page_size"), page_token=call.query("page_token")),
        **call.options,
    )
    return json(
        {"billable_metrics": [metric_json(m) for m in reply.billable_metrics], "next_page_token": reply.next_page_token}
    )


routes = [
    Route("/v1/billable_metrics", endpoint(create, CREATE), methods=["POST"]),
    Route("/v1/billable_metrics", endpoint(list_), methods=["GET"]),
    Route("/v1/billable_metrics/{code}", endpoint(get), methods=["GET"]),
]
