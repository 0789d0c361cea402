"""Billable metrics (BillableMetricService)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bxb.catalog.v1 import billable_metrics_pb2 as pb
from bxb.catalog.v1 import billable_metrics_pb2_grpc
from services.catalog import validation
from services.catalog.models import BillableMetric
from services.common import pagination, tenancy
from services.common.errors import AlreadyExists, InvalidArgument, NotFound
from services.common.ids import new_id
from services.common.timestamps import to_proto

# Aggregations that read a property; COUNT reads none.
NEEDS_FIELD = {
    pb.AGGREGATION_TYPE_SUM,
    pb.AGGREGATION_TYPE_MAX,
    pb.AGGREGATION_TYPE_UNIQUE_COUNT,
    pb.AGGREGATION_TYPE_LATEST,
}


def metric_proto(metric: BillableMetric) -> pb.BillableMetric:
    return pb.BillableMetric(
        id=metric.id,
        code=metric.code,
        name=metric.name,
        description=metric.description,
        aggregation_type=pb.AggregationType.Value(metric.aggregation_type),
        field_name=metric.field_name,
        create_time=to_proto(metric.create_time),
    )


async def find(session: AsyncSession, org: str, code: str) -> BillableMetric | None:
    query = select(BillableMetric).where(BillableMetric.organization_id == org, BillableMetric.code == code)
    return (await session.execute(query)).scalar_one_or_none()


def validated(metric: pb.BillableMetric) -> BillableMetric:
    validation.code(metric.code, "code")
    if metric.aggregation_type not in pb.AggregationType.values() or metric.aggregation_type == 0:
        raise InvalidArgument("aggregation_type is required", field="aggregation_type")
    field_name = metric.field_name.strip()
    if metric.aggregation_type in NEEDS_FIELD and not field_name:
        raise InvalidArgument(
            f"field_name is required for aggregation_type {aggregation_name(metric.aggregation_type)}",
            field="field_name",
        )
    if metric.aggregation_type == pb.AGGREGATION_TYPE_COUNT:
        field_name = ""
    return BillableMetric(
        id=new_id("bm"),
        code=metric.code,
        name=validation.text(metric.name.strip() or metric.code, "name"),
        description=validation.text(metric.description, "description", 2000),
        aggregation_type=pb.AggregationType.Name(metric.aggregation_type),
        field_name=validation.text(field_name, "field_name"),
    )


def aggregation_name(value: int) -> str:
    return pb.AggregationType.Name(value).removeprefix("AGGREGATION_TYPE_").lower()


class BillableMetricServicer(billable_metrics_pb2_grpc.BillableMetricServiceServicer):
    def __init__(self, sessions: async_sessionmaker):
        self.sessions = sessions

    async def CreateBillableMetric(self, request: pb.CreateBillableMetricRequest, context) -> pb.BillableMetric:
        org = tenancy.organization_id()
        metric = validated(request.billable_metric)
        metric.organization_id = org
        async with self.sessions() as session, session.begin():
            if await find(session, org, metric.code) is not None:
                raise AlreadyExists(f"a billable metric with code {metric.code!r} already exists", field="code")
            session.add(metric)
            await session.flush()
            await session.refresh(metric)
            return metric_proto(metric)

    async def GetBillableMetric(self, request: pb.GetBillableMetricRequest, context) -> pb.BillableMetric:
        org = tenancy.organization_id()
        async with self.sessions() as session:
            metric = await find(session, org, request.code)
        if metric is None:
            raise NotFound(f"billable metric {request.code!r} not found", field="code")
        return metric_proto(metric)

    async def ListBillableMetrics(
        self, request: pb.ListBillableMetricsRequest, context
    ) -> pb.ListBillableMetricsResponse:
        org = tenancy.organization_id()
        size = pagination.page_size(request.page_size)
        offset = pagination.decode_token(request.page_token)
        query = (
            select(BillableMetric)
            .where(BillableMetric.organization_id == org)
            .order_by(BillableMetric.create_time, BillableMetric.id)
            .offset(offset)
            .limit(size + 1)
        )
        async with self.sessions() as session:
            rows = (await session.execute(query)).scalars().all()
        return pb.ListBillableMetricsResponse(
            billable_metrics=[metric_proto(m) for m in rows[:size]],
            next_page_token=pagination.next_token(offset, size, len(rows)),
        )
