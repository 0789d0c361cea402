"""/v1/billable_metrics and /v1/metrics: what to meter.

One resource, two spellings. `/v1/billable_metrics` names a metric by `code`
(bxb); `/v1/metrics` names it by `key` (ABAXUS). Both render the same JSON,
carrying `code` and `key` (the same value). A metric reads the property
`field_name` of its events or, when `value_type` ("integer" or "decimal") is
set, the event's top-level value; a count reads neither. `filters` declares
the event properties charges may price differently, with their values:
`[{"key": "region", "values": ["us-east-1", "eu-west-1"]}]`.
"""

from __future__ import annotations

from google.protobuf import field_mask_pb2
from starlette.responses import Response
from starlette.routing import Route

from bxb.catalog.v1 import billable_metrics_pb2 as pb
from gateway import render, schema
from gateway.call import Call, endpoint, json
from gateway.errors import invalid
from gateway.schema import array, obj, string

PREFIX = "AGGREGATION_TYPE_"
VALUE_PREFIX = "VALUE_TYPE_"
AGGREGATIONS = ("count", "sum", "max", "unique_count", "latest", "weighted_sum")
VALUE_TYPES = ("integer", "decimal")

DEFINITION = {
    "name": string(max_length=200),
    "description": string(max_length=2000),
    "aggregation_type": string(choices=AGGREGATIONS),
    "field_name": string(max_length=200),
    "value_type": string(choices=VALUE_TYPES),
    # The catalog checks the rest (distinct keys and values, lengths, counts).
    "filters": array(obj({"key": string(required=True), "values": array(string(required=True), required=True)})),
}
# A PATCH body: any of the definition fields; null clears a field.
UPDATE = obj(DEFINITION)


def create_spec(id_name: str) -> schema.Spec:
    return obj(
        {
            id_name: string(required=True, max_length=100),
            **DEFINITION,
            "aggregation_type": string(required=True, choices=AGGREGATIONS),
        }
    )


def metric_json(metric: pb.BillableMetric) -> dict:
    return {
        "id": metric.id,
        "code": metric.code,
        "key": metric.code,
        "name": metric.name,
        "description": metric.description,
        "aggregation_type": render.enum(pb.AggregationType, metric.aggregation_type, PREFIX),
        "value_type": render.enum(pb.ValueType, metric.value_type, VALUE_PREFIX) if metric.value_type else None,
        "field_name": metric.field_name or None,
        "filters": [{"key": item.key, "values": list(item.values)} for item in metric.filters],
        "created_at": render.time(metric, "create_time"),
    }


def metric_message(body: dict, code: str = "") -> pb.BillableMetric:
    """The proto of a checked body; absent and null fields are left unset."""
    return pb.BillableMetric(
        code=code,
        name=body["name"] or "",
        description=body["description"] or "",
        aggregation_type=render.enum_value(pb.AggregationType, body["aggregation_type"] or "unspecified", PREFIX),
        field_name=body["field_name"] or "",
        value_type=render.enum_value(pb.ValueType, body["value_type"] or "unspecified", VALUE_PREFIX),
        filters=[pb.PropertyValues(key=item["key"], values=item["values"]) for item in body["filters"] or []],
    )


def create(id_name: str):
    async def handler(call: Call):
        metric = metric_message(call.body, call.body[id_name])
        created = await call.clients.metrics.CreateBillableMetric(
            pb.CreateBillableMetricRequest(billable_metric=metric), **call.options
        )
        return json(metric_json(created), 201)

    return handler


def get(id_name: str):
    async def handler(call: Call):
        metric = await call.clients.metrics.GetBillableMetric(
            pb.GetBillableMetricRequest(code=call.path(id_name)), **call.options
        )
        return json(metric_json(metric))

    return handler


def list_(list_name: str):
    async def handler(call: Call):
        reply = await call.clients.metrics.ListBillableMetrics(
            pb.ListBillableMetricsRequest(page_size=call.query_int("page_size"), page_token=call.query("page_token")),
            **call.options,
        )
        return json(
            {list_name: [metric_json(m) for m in reply.billable_metrics], "next_page_token": reply.next_page_token}
        )

    return handler


def update(id_name: str):
    async def handler(call: Call):
        """PATCH with a partial body: the fields present (name, description,
        aggregation_type, field_name, value_type, filters) become the
        update_mask, the others keep their values; null clears a field.
        Changing aggregation_type, field_name or value_type, or dropping a
        filter key or value, while a plan uses the metric is a 409
        METRIC_IN_USE. The code/key cannot change."""
        paths = [name for name in DEFINITION if name in call.sent]
        if not paths:
            raise invalid(f"name at least one field to change: {', '.join(DEFINITION)}", "", "MISSING_FIELD")
        updated = await call.clients.metrics.UpdateBillableMetric(
            pb.UpdateBillableMetricRequest(
                billable_metric=metric_message(call.body, call.path(id_name)),
                update_mask=field_mask_pb2.FieldMask(paths=paths),
            ),
            **call.options,
        )
        return json(metric_json(updated))

    return handler


def delete(id_name: str):
    async def handler(call: Call):
        await call.clients.metrics.DeleteBillableMetric(
            pb.DeleteBillableMetricRequest(code=call.path(id_name)), **call.options
        )
        return Response(status_code=204)

    return handler


def spelling(base: str, id_name: str, list_name: str) -> list[Route]:
    one = f"{base}/{{{id_name}}}"
    return [
        Route(base, endpoint(create(id_name), create_spec(id_name)), methods=["POST"]),
        Route(base, endpoint(list_(list_name)), methods=["GET"]),
        Route(one, endpoint(get(id_name)), methods=["GET"]),
        Route(one, endpoint(update(id_name), UPDATE), methods=["PATCH"]),
        Route(one, endpoint(delete(id_name)), methods=["DELETE"]),
    ]


routes = [
    *spelling("/v1/billable_metrics", "code", "billable_metrics"),
    *spelling("/v1/metrics", "key", "metrics"),
]
