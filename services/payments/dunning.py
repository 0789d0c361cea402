"""Dunning: how a declined invoice is charged again (DunningCampaignService
keeps each organization's campaigns), and what a decline does to its payment.

A payment's first decline puts it under the organization's default campaign
(kept on the payment, `dunning_campaign_id`). Its n-th retry is due
`retry_days[n-1]` days after that first decline, in the customer's time (its
test clock's, when it lives on one); the collector (collection.py) charges it
then. When the campaign's charges are spent (max_attempts, at most one more
than its retry days), the payment becomes UNCOLLECTIBLE and nothing charges
it again. Without a campaign a declined payment stays FAILED until someone
charges it. A dispute (DISPUTED) takes a payment out of collection.
"""

from __future__ import annotations

import itertools
from datetime import timedelta

from google.protobuf import empty_pb2
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bxb.payments.v1 import dunning_pb2 as pb
from bxb.payments.v1 import dunning_pb2_grpc
from services.common import pagination, tenancy
from services.common.errors import AlreadyExists, InvalidArgument, NotFound
from services.common.grpc_server import Context
from services.common.ids import new_id
from services.common.timestamps import to_proto, utcnow
from services.payments import clocks
from services.payments.models import PAYMENT_UNCOLLECTIBLE, DunningCampaign, Payment


def campaign_proto(campaign: DunningCampaign) -> pb.DunningCampaign:
    return pb.DunningCampaign(
        id=campaign.id,
        code=campaign.code,
        name=campaign.name,
        retry_days=campaign.retry_days,
        max_attempts=campaign.max_attempts,
        send_emails=campaign.send_emails,
        is_default=campaign.is_default,
        create_time=to_proto(campaign.create_time),
    )


def most_attempts(campaign: DunningCampaign) -> int:
    """The charges the campaign makes for one invoice, the first included."""
    return min(campaign.max_attempts or len(campaign.retry_days) + 1, len(campaign.retry_days) + 1)


async def campaign_of(session: AsyncSession, payment: Payment) -> DunningCampaign | None:
    """The campaign dunning the payment: its own once declined, else the organization's default."""
    query = select(DunningCampaign).where(DunningCampaign.organization_id == payment.organization_id)
    if payment.dunning_campaign_id:
        query = query.where(DunningCampaign.id == payment.dunning_campaign_id)
    else:
        query = query.where(DunningCampaign.is_default)
    return (await session.execute(query)).scalar_one_or_none()


async def after_decline(session: AsyncSession, payment: Payment) -> None:
    """A payment just declined (FAILED, attempt_count charges made): its next
    retry scheduled, or UNCOLLECTIBLE once its campaign's charges are spent."""
    payment.next_attempt_time = None
    campaign = await campaign_of(session, payment)
    if campaign is None:
        return  # no dunning: charged again only on request
    payment.dunning_campaign_id = campaign.id
    now = await clocks.now(session, payment.organization_id, payment.test_clock_id) or utcnow()
    first = payment.first_failure_time = payment.first_failure_time or now
    if payment.attempt_count >= most_attempts(campaign):
        payment.status = PAYMENT_UNCOLLECTIBLE
        return
    retries_made = max(payment.attempt_count - 1, 0)
    payment.next_attempt_time = first + timedelta(days=campaign.retry_days[retries_made])


def _checked(spec: pb.DunningCampaign) -> None:
    days = list(spec.retry_days)
    if any(later <= earlier for earlier, later in itertools.pairwise(days)):
        raise InvalidArgument("retry_days must increase", field="retry_days")
    if spec.max_attempts > len(days) + 1:
        raise InvalidArgument(
            f"max_attempts must be at most {len(days) + 1}: one charge and one per retry day", field="max_attempts"
        )


class DunningCampaignServicer(dunning_pb2_grpc.DunningCampaignServiceServicer):
    def __init__(self, sessions: async_sessionmaker[AsyncSession]):
        self.sessions = sessions

    async def CreateDunningCampaign(
        self, request: pb.CreateDunningCampaignRequest, context: Context
    ) -> pb.DunningCampaign:
        org, spec = tenancy.organization_id(), request.dunning_campaign
        _checked(spec)
        campaign = DunningCampaign(
            id=new_id("dun"),
            organization_id=org,
            code=spec.code,
            name=spec.name,
            retry_days=list(spec.retry_days),
            max_attempts=spec.max_attempts or len(spec.retry_days) + 1,
            send_emails=spec.send_emails,
            is_default=spec.is_default,
            create_time=utcnow(),
        )
        try:
            async with self.sessions() as session, session.begin():
                if spec.is_default:  # one default: the new one replaces it
                    await session.execute(
                        update(DunningCampaign)
                        .where(DunningCampaign.organization_id == org, DunningCampaign.is_default)
                        .values(is_default=False)
                    )
                session.add(campaign)
        except IntegrityError:
            raise AlreadyExists(f"dunning campaign {spec.code!r} already exists", field="code") from None
        return campaign_proto(campaign)

    async def GetDunningCampaign(self, request: pb.GetDunningCampaignRequest, context: Context) -> pb.DunningCampaign:
        async with self.sessions() as session:
            return campaign_proto(await self._find(session, tenancy.organization_id(), request.code))

    async def ListDunningCampaigns(
        self, request: pb.ListDunningCampaignsRequest, context: Context
    ) -> pb.ListDunningCampaignsResponse:
        org = tenancy.organization_id()
        page = pagination.page(request, "ListDunningCampaigns")
        query = (
            select(DunningCampaign)
            .where(DunningCampaign.organization_id == org)
            .order_by(DunningCampaign.create_time, DunningCampaign.id)
            .offset(page.offset)
            .limit(page.size + 1)
        )
        async with self.sessions() as session:
            rows = (await session.execute(query)).scalars().all()
        campaigns, token = pagination.answer(page, [campaign_proto(c) for c in rows])
        return pb.ListDunningCampaignsResponse(dunning_campaigns=campaigns, next_page_token=token)

    async def DeleteDunningCampaign(
        self, request: pb.DeleteDunningCampaignRequest, context: Context
    ) -> empty_pb2.Empty:
        async with self.sessions() as session, session.begin():
            campaign = await self._find(session, tenancy.organization_id(), request.code)
            # Payments it was retrying get no more retries: a declined one stays FAILED.
            await session.execute(
                update(Payment)
                .where(Payment.organization_id == campaign.organization_id, Payment.dunning_campaign_id == campaign.id)
                .values(next_attempt_time=None, dunning_campaign_id="")
            )
            await session.delete(campaign)
        return empty_pb2.Empty()

    @staticmethod
    async def _find(session: AsyncSession, org: str, code: str) -> DunningCampaign:
        query = select(DunningCampaign).where(DunningCampaign.organization_id == org, DunningCampaign.code == code)
        campaign = (await session.execute(query)).scalar_one_or_none()
        if campaign is None:
            raise NotFound(f"dunning campaign {code!r} not found", field="code")
        return campaign
