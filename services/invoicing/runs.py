"""The billing run on request (BillingRunService): what the scheduler does
every interval, for one organization, customer or test clock, answered
with the number of invoices it issued."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bxb.invoicing.v1 import billing_runs_pb2 as pb
from bxb.invoicing.v1 import billing_runs_pb2_grpc
from services.common import tenancy
from services.common.errors import InvalidArgument
from services.common.grpc_server import Context
from services.common.timestamps import from_proto
from services.invoicing import clocks
from services.invoicing.billing import Biller, Scheduler
from services.invoicing.projection import SubscriptionProjection


class BillingRunServicer(billing_runs_pb2_grpc.BillingRunServiceServicer):
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        biller: Biller,
        scheduler: Scheduler,
        projection: SubscriptionProjection,
    ):
        self.sessions = sessions
        self.biller = biller
        self.scheduler = scheduler
        self.projection = projection

    async def RunBilling(self, request: pb.RunBillingRequest, context: Context) -> pb.RunBillingResponse:
        org = tenancy.organization_id()
        clock = request.test_clock_id
        if clock:
            if not request.HasField("frozen_time"):
                raise InvalidArgument("frozen_time is required with test_clock_id", field="frozen_time")
            async with self.sessions() as session, session.begin():
                await clocks.advance(session, org, clock, from_proto(request.frozen_time))
            # Its customers' newest subscriptions may still be on their way here.
            await self.projection.catch_up_clock(org, clock)
        elif request.customer_id:  # likewise the customer's
            await self.projection.catch_up(org, request.customer_id)
        created, behind = await self.biller.sweep(org=org, customer_id=request.customer_id, test_clock_id=clock)
        if behind:  # more due than one run bills: the rest is billed in the background
            self.scheduler.follow(org, request.customer_id, clock)
        return pb.RunBillingResponse(invoices_created=created)
