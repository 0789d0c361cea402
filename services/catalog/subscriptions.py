"""Subscriptions (SubscriptionService). Creating one announces it on NATS
with its pinned plan, through the outbox, in the same transaction."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bxb.catalog.v1 import events_pb2, subscriptions_pb2_grpc
from bxb.catalog.v1 import subscriptions_pb2 as pb
from services.catalog import customers, plans, validation
from services.catalog.models import Outbox, Plan, Subscription
from services.common import outbox, pagination, tenancy
from services.common.errors import InvalidArgument, NotFound
from services.common.ids import new_id
from services.common.timestamps import from_proto, to_proto, utcnow

SUBSCRIPTION_CREATED = "bxb.catalog.v1.subscription_created"


# Billing periods are closed one by one from the start date, so the start is
# bounded: a typo like 0206 must not mint two thousand years of invoices.
EARLIEST_START = datetime(2000, 1, 1, tzinfo=UTC)
LATEST_START = datetime(2100, 1, 1, tzinfo=UTC)


def start_time(request: pb.CreateSubscriptionRequest, now: datetime) -> datetime:
    if not request.HasField("start_time"):
        return now
    value = from_proto(request.start_time)
    if not EARLIEST_START <= value < LATEST_START:
        raise InvalidArgument(
            "start_date must be between 2000-01-01 and 2099-12-31", field="start_date", reason="START_DATE_OUT_OF_RANGE"
        )
    return value


def status(subscription: Subscription, now: datetime) -> int:
    if subscription.terminate_time is not None and subscription.terminate_time <= now:
        return pb.SUBSCRIPTION_STATUS_TERMINATED
    if subscription.start_time > now:
        return pb.SUBSCRIPTION_STATUS_PENDING
    return pb.SUBSCRIPTION_STATUS_ACTIVE


def subscription_proto(subscription: Subscription, plan: Plan, now: datetime | None = None) -> pb.Subscription:
    return pb.Subscription(
        id=subscription.id,
        customer_id=subscription.customer_id,
        plan_id=plan.id,
        plan_code=plan.code,
        plan_version=plan.version,
        status=status(subscription, now or utcnow()),
        billing_time=pb.BillingTime.Value(subscription.billing_time),
        start_time=to_proto(subscription.start_time),
        create_time=to_proto(subscription.create_time),
        external_id=subscription.external_id or "",
    )


async def _with_plan(session: AsyncSession, subscription: Subscription) -> pb.Subscription:
    return subscription_proto(subscription, await session.get(Plan, subscription.plan_id))


class SubscriptionServicer(subscriptions_pb2_grpc.SubscriptionServiceServicer):
    def __init__(self, sessions: async_sessionmaker, relay: outbox.OutboxRelay):
        self.sessions = sessions
        self.relay = relay

    async def CreateSubscription(self, request: pb.CreateSubscriptionRequest, context) -> pb.Subscription:
        org = tenancy.organization_id()
        validation.external_id(request.customer_id, "customer_id")
        if request.external_id:
            validation.external_id(request.external_id, "external_id")
        now = utcnow()
        async with self.sessions() as session, session.begin():
            if request.external_id:
                query = select(Subscription).where(
                    Subscription.organization_id == org, Subscription.external_id == request.external_id
                )
                existing = (await session.execute(query)).scalar_one_or_none()
                if existing is not None:  # a retried create returns what the first one made
                    return await _with_plan(session, existing)
            plan = await plans.resolve(session, org, request.plan_code, request.plan_id)
            await customers.ensure(session, org, request.customer_id)
            subscription = Subscription(
                id=new_id("sub"),
                organization_id=org,
                customer_id=request.customer_id,
                plan_id=plan.id,
                billing_time=pb.BillingTime.Name(request.billing_time or pb.BILLING_TIME_ANNIVERSARY),
                start_time=start_time(request, now),
                external_id=request.external_id or None,
                create_time=now,
            )
            session.add(subscription)
            await session.flush()
            result = subscription_proto(subscription, plan, now)
            event = events_pb2.SubscriptionCreated(
                event_id=new_id("evt"),
                organization_id=org,
                occur_time=to_proto(now),
                subscription=result,
                plan=plans.plan_proto(plan),
            )
            await outbox.enqueue(session, Outbox, SUBSCRIPTION_CREATED, event)
        self.relay.wake()
        return result

    async def GetSubscription(self, request: pb.GetSubscriptionRequest, context) -> pb.Subscription:
        org = tenancy.organization_id()
        async with self.sessions() as session:
            subscription = await session.get(Subscription, request.id)
            if subscription is None or subscription.organization_id != org:
                raise NotFound(f"subscription {request.id!r} not found", field="id")
            return await _with_plan(session, subscription)

    async def ListSubscriptions(self, request: pb.ListSubscriptionsRequest, context) -> pb.ListSubscriptionsResponse:
        org = tenancy.organization_id()
        size = pagination.page_size(request.page_size)
        offset = pagination.decode_token(request.page_token)
        query = (
            select(Subscription, Plan)
            .join(Plan, Plan.id == Subscription.plan_id)
            .where(Subscription.organization_id == org)
        )
        if request.customer_id:
            query = query.where(Subscription.customer_id == request.customer_id)
        query = query.order_by(Subscription.create_time, Subscription.id).offset(offset).limit(size + 1)
        async with self.sessions() as session:
            rows = (await session.execute(query)).all()
        now = utcnow()
        return pb.ListSubscriptionsResponse(
            subscriptions=[subscription_proto(s, p, now) for s, p in rows[:size]],
            next_page_token=pagination.next_token(offset, size, len(rows)),
        )
