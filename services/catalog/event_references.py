"""What a batch of usage events names (EventReferenceService): the metrics
and customers of the calling organization among those asked for, in one
call with one query each."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bxb.catalog.v1 import event_references_pb2 as pb
from bxb.catalog.v1 import event_references_pb2_grpc
from services.catalog.metrics import metric_proto
from services.catalog.models import BillableMetric, Customer
from services.common import tenancy
from services.common.errors import InvalidArgument
from services.common.grpc_server import Context

MAX_NAMES = 1000  # metric codes, and customer ids, per call


class EventReferenceServicer(event_references_pb2_grpc.EventReferenceServiceServicer):
    def __init__(self, sessions: async_sessionmaker[AsyncSession]):
        self.sessions = sessions

    async def ResolveEventReferences(
        self, request: pb.ResolveEventReferencesRequest, context: Context
    ) -> pb.ResolveEventReferencesResponse:
        org = tenancy.organization_id()
        for field in ("metric_codes", "customer_ids"):
            if len(getattr(request, field)) > MAX_NAMES:
                raise InvalidArgument(f"{field} must have at most {MAX_NAMES} entries", field=field)
        codes, customers = set(request.metric_codes), set(request.customer_ids)
        async with self.sessions() as session:
            metrics = (
                await session.execute(
                    select(BillableMetric).where(BillableMetric.organization_id == org, BillableMetric.code.in_(codes))
                )
            ).scalars()
            found = await session.execute(
                select(Customer.id).where(Customer.organization_id == org, Customer.id.in_(customers))
            )
            known = sorted(found.scalars())
        answer = pb.ResolveEventReferencesResponse(customer_ids=known)
        for metric in metrics:
            definition = metric_proto(metric)
            del definition.filters[:]
            answer.billable_metrics.append(definition)
        return answer
