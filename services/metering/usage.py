"""Exact usage queries (UsageService)."""

from __future__ import annotations

from bxb.metering.v1 import usage_pb2 as pb
from bxb.metering.v1 import usage_pb2_grpc
from services.common import tenancy
from services.common.decimals import canonical
from services.common.errors import InvalidArgument
from services.common.timestamps import from_proto
from services.metering.store import EventStore


class UsageServicer(usage_pb2_grpc.UsageServiceServicer):
    def __init__(self, store: EventStore):
        self.store = store

    async def AggregateUsage(self, request: pb.AggregateUsageRequest, context) -> pb.AggregateUsageResponse:
        org = tenancy.organization_id()
        if request.aggregation == pb.AGGREGATION_UNSPECIFIED or request.aggregation not in pb.Aggregation.values():
            raise InvalidArgument("aggregation is required", field="aggregation")
        aggregation = pb.Aggregation.Name(request.aggregation).removeprefix("AGGREGATION_").lower()
        if aggregation == "count" and request.include_values:
            raise InvalidArgument("include_values needs an aggregation of a value, not count", field="include_values")
        for name in ("customer_id", "code"):
            if not getattr(request, name):
                raise InvalidArgument(f"{name} is required", field=name)
        for name in ("start_time", "end_time"):
            if not request.HasField(name):
                raise InvalidArgument(f"{name} is required", field=name)
        start, end = from_proto(request.start_time), from_proto(request.end_time)
        if end < start:
            raise InvalidArgument("end_time must not be before start_time", field="end_time")
        usage = await self.store.aggregate(
            org,
            request.customer_id,
            request.code,
            aggregation,
            request.field_name,
            start,
            end,
            include_values=request.include_values,
        )
        return pb.AggregateUsageResponse(
            value=canonical(usage.value), event_count=usage.count, values=[canonical(v) for v in usage.values]
        )
