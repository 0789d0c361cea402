"""/v1/usage/summary and /v1/usage/histogram: usage views for dashboards.

Both name the metric by `metric_key` or `code` and take the window as
`period_start` and `period_end` query parameters; metering aggregates it as
the catalog defines it.
- summary: from daily pre-computed aggregates, without waiting for queued
  events: `meta.consistency` is "eventual" (latest and weighted_sum metrics
  are read exactly, and say "exact"). POST /v1/usage/compute is the exact,
  invoiced figure.
- histogram: exact usage per `interval` (minute, hour or day, aligned in
  UTC), split by the `group_by` property when given.
"""

from __future__ import annotations

import grpc
from starlette.routing import Route

from bxb.metering.v1 import usage_pb2 as pb
from gateway import render
from gateway.call import Call, endpoint, json
from gateway.errors import respelled
from gateway.schema import Spec, obj, one_of, string
from services.common.timestamps import format_rfc3339, to_proto

WINDOW = {
    "customer_id": string(required=True, max_length=200),
    "metric_key": string(max_length=100),
    "code": string(max_length=100),
    "period_start": Spec("timestamp", required=True),
    "period_end": Spec("timestamp", required=True),
}
SUMMARY = obj(WINDOW)
HISTOGRAM = obj(
    {
        **WINDOW,
        "interval": string(required=True, choices=("minute", "hour", "day")),
        "group_by": string(max_length=200),
    }
)
INTERVALS = {
    "minute": pb.HISTOGRAM_INTERVAL_MINUTE,
    "hour": pb.HISTOGRAM_INTERVAL_HOUR,
    "day": pb.HISTOGRAM_INTERVAL_DAY,
}


class Query:
    """A checked query string and the metric it names."""

    def __init__(self, call: Call, spec: Spec):
        self.call = call
        self.params = call.query_params(spec)
        self.code, self.named = one_of(self.params, ("metric_key", "code"))

    def window(self) -> dict:
        return {
            "customer_id": self.params["customer_id"],
            "code": self.code,
            "start_time": to_proto(self.params["period_start"]),
            "end_time": to_proto(self.params["period_end"]),
        }

    def failed(self, error: grpc.aio.AioRpcError):
        return respelled(error, {"code": self.named, "start_time": "period_start", "end_time": "period_end"})

    def head(self) -> dict:
        return {
            "customer_id": self.params["customer_id"],
            "metric_key": self.code,
            "period_start": format_rfc3339(self.params["period_start"]),
            "period_end": format_rfc3339(self.params["period_end"]),
        }


async def summary(call: Call):
    query = Query(call, SUMMARY)
    try:
        window = query.window()
        reply = await call.clients.usage.SummarizeUsage(pb.SummarizeUsageRequest(**window), **call.options)
    except grpc.aio.AioRpcError as error:
        return query.failed(error)
    return json(
        {
            **query.head(),
            "value": reply.value,
            "events_count": reply.event_count,
            "meta": {"consistency": "exact" if reply.exact else "eventual"},
        }
    )


async def histogram(call: Call):
    query = Query(call, HISTOGRAM)
    interval, group_by = query.params["interval"], query.params["group_by"] or ""
    try:
        window = query.window()
        request = pb.UsageHistogramRequest(**window, interval=INTERVALS[interval], group_by=group_by)
        reply = await call.clients.usage.UsageHistogram(request, **call.options)
    except grpc.aio.AioRpcError as error:
        return query.failed(error)
    return json(
        {
            **query.head(),
            "interval": interval,
            "group_by": group_by or None,
            "buckets": [
                {
                    "start": render.time(bucket, "start_time"),
                    "end": render.time(bucket, "end_time"),
                    **({"group": bucket.group_value} if group_by else {}),
                    "value": bucket.value,
                    "events_count": bucket.event_count,
                }
                for bucket in reply.buckets
            ],
        }
    )


routes = [
    Route("/v1/usage/summary", endpoint(summary), methods=["GET"]),
    Route("/v1/usage/histogram", endpoint(histogram), methods=["GET"]),
]
