"""Subscriptions (SubscriptionService): creation, termination and plan
changes. Every change announces itself on NATS through the outbox, in the
same transaction: subscription_created for a new subscription (with its
pinned plan), subscription_updated when a subscription's end is set.

A plan change ends the subscription and starts a replacement on the new
plan, linked both ways (previous/next). An upgrade (a base fee at least as
high) switches now; a downgrade switches when the current billing period
ends, the replacement pending until then. A pending subscription switches at
its start. A change or a termination cancels the replacements that earlier
changes scheduled (a cancelled subscription ends at its start). The client's
external_id names the latest subscription: it moves to the replacement."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bxb.catalog.v1 import events_pb2, subscriptions_pb2_grpc
from bxb.catalog.v1 import subscriptions_pb2 as pb
from services.catalog import customers, plans, test_clocks, validation
from services.catalog.models import Customer, Outbox, Plan, Subscription
from services.common import outbox, pagination, periods, tenancy
from services.common.errors import FailedPrecondition, InvalidArgument, NotFound
from services.common.grpc_server import Context
from services.common.ids import new_id
from services.common.timestamps import from_proto, to_proto, utcnow

SUBSCRIPTION_CREATED = "bxb.catalog.v1.subscription_created"
SUBSCRIPTION_UPDATED = "bxb.catalog.v1.subscription_updated"


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
            "start_time must be between 2000-01-01 and 2099-12-31", field="start_time", reason="START_DATE_OUT_OF_RANGE"
        )
    return value


def trial_end(request: pb.CreateSubscriptionRequest, plan: Plan, start: datetime) -> datetime | None:
    """The end of the subscription's free trial: the request's days, else the plan's."""
    days = request.trial_period_days if request.HasField("trial_period_days") else plan.trial_period_days
    return start + timedelta(days=days) if days else None


def billing_anchor(subscription: Subscription) -> datetime:
    """Where billing periods start: the trial's end, else the start."""
    return subscription.trial_end_time or subscription.start_time


def terminated(subscription: Subscription, now: datetime) -> bool:
    """Ended, or cancelled before it started (its end is its start)."""
    end = subscription.terminate_time
    return end is not None and (end <= now or end <= subscription.start_time)


def status(subscription: Subscription, now: datetime) -> pb.SubscriptionStatus.ValueType:
    if terminated(subscription, now):
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
        terminate_time=to_proto(subscription.terminate_time),
        previous_subscription_id=subscription.previous_subscription_id or "",
        next_subscription_id=subscription.next_subscription_id or "",
        trial_end_time=to_proto(subscription.trial_end_time),
        test_clock_id=subscription.test_clock_id or "",
        invoice_grace_period_days=subscription.invoice_grace_period_days or 0,
    )


async def _with_plan(session: AsyncSession, subscription: Subscription) -> pb.Subscription:
    now = await test_clocks.now(session, subscription.organization_id, subscription.test_clock_id)
    return subscription_proto(subscription, await session.get_one(Plan, subscription.plan_id), now)


async def _announce_created(
    session: AsyncSession, subscription: Subscription, plan: Plan, now: datetime
) -> pb.Subscription:
    result = subscription_proto(subscription, plan, now)
    customer = await session.get_one(Customer, (subscription.organization_id, subscription.customer_id))
    event = events_pb2.SubscriptionCreated(
        event_id=new_id("evt"),
        organization_id=subscription.organization_id,
        occur_time=to_proto(now),
        subscription=result,
        plan=plans.plan_proto(plan),
        customer=customers.customer_proto(customer),
    )
    await outbox.enqueue(session, Outbox, SUBSCRIPTION_CREATED, event)
    return result


async def _announce_updated(session: AsyncSession, subscription: Subscription, now: datetime) -> pb.Subscription:
    result = subscription_proto(subscription, await session.get_one(Plan, subscription.plan_id), now)
    event = events_pb2.SubscriptionUpdated(
        event_id=new_id("evt"),
        organization_id=subscription.organization_id,
        occur_time=to_proto(now),
        subscription=result,
    )
    await outbox.enqueue(session, Outbox, SUBSCRIPTION_UPDATED, event)
    return result


async def _locked(session: AsyncSession, org: str, subscription_id: str) -> Subscription:
    """The subscription, row-locked until the transaction ends: concurrent
    terminations and plan changes of one subscription run one after the other."""
    query = (
        select(Subscription)
        .where(Subscription.id == subscription_id, Subscription.organization_id == org)
        .with_for_update()
    )
    subscription = (await session.execute(query)).scalar_one_or_none()
    if subscription is None:
        raise NotFound(f"subscription {subscription_id!r} not found", field="id")
    return subscription


async def _cancel_successors(session: AsyncSession, subscription: Subscription, now: datetime) -> None:
    """Cancels the pending replacements earlier plan changes scheduled to
    follow `subscription` (the chain, when a pending replacement was itself
    changed). Called only for a subscription that has not ended, so every
    successor is pending or already cancelled. The external_id, which a plan
    change moved to the pending replacement, comes back to `subscription`."""
    next_id = subscription.next_subscription_id
    while next_id:
        successor = await _locked(session, subscription.organization_id, next_id)
        if not terminated(successor, now):
            successor.terminate_time = successor.start_time
            external_id, successor.external_id = successor.external_id, None
            await session.flush()  # frees the external_id before `subscription` takes it back
            subscription.external_id = external_id
            await _announce_updated(session, successor, now)
        next_id = successor.next_subscription_id


def switch_time(subscription: Subscription, old: Plan, new: Plan, now: datetime) -> datetime:
    """When the replacement on `new` starts."""
    if subscription.start_time > now:  # not started yet: it changes at its start
        return subscription.start_time
    if billing_anchor(subscription) > now:  # in its trial: nothing is paid for yet
        return now
    if new.amount_cents >= old.amount_cents:  # an upgrade: now, the old plan's period is prorated
        return now
    # A downgrade: at the end of the period already paid for.
    period = periods.current(billing_anchor(subscription), old.interval, subscription.billing_time, now)
    assert period is not None  # started, with no end given: a period holds `now`
    return period.end


class SubscriptionServicer(subscriptions_pb2_grpc.SubscriptionServiceServicer):
    def __init__(self, sessions: async_sessionmaker[AsyncSession], relay: outbox.OutboxRelay):
        self.sessions = sessions
        self.relay = relay

    async def CreateSubscription(self, request: pb.CreateSubscriptionRequest, context: Context) -> pb.Subscription:
        org = tenancy.organization_id()
        validation.external_id(request.customer_id, "customer_id")
        if request.external_id:
            validation.external_id(request.external_id, "external_id")
        async with self.sessions() as session, session.begin():
            if request.external_id:
                query = select(Subscription).where(
                    Subscription.organization_id == org, Subscription.external_id == request.external_id
                )
                existing = (await session.execute(query)).scalar_one_or_none()
                if existing is not None:  # a retried create returns what the first one made
                    return await _with_plan(session, existing)
            plan = await plans.resolve(session, org, request.plan_code, request.plan_id)
            customer = await customers.ensure(session, org, request.customer_id)
            now = await test_clocks.now(session, org, customer.test_clock_id)  # a clock's customer lives at its time
            start = start_time(request, now)
            subscription = Subscription(
                id=new_id("sub"),
                organization_id=org,
                customer_id=request.customer_id,
                plan_id=plan.id,
                billing_time=pb.BillingTime.Name(request.billing_time or pb.BILLING_TIME_ANNIVERSARY),
                start_time=start,
                trial_end_time=trial_end(request, plan, start),
                external_id=request.external_id or None,
                create_time=now,
                test_clock_id=customer.test_clock_id,
                invoice_grace_period_days=customer.invoice_grace_period_days,
            )
            session.add(subscription)
            await session.flush()
            result = await _announce_created(session, subscription, plan, now)
        self.relay.wake()
        return result

    async def GetSubscription(self, request: pb.GetSubscriptionRequest, context: Context) -> pb.Subscription:
        org = tenancy.organization_id()
        async with self.sessions() as session:
            subscription = await session.get(Subscription, request.id)
            if subscription is None or subscription.organization_id != org:
                raise NotFound(f"subscription {request.id!r} not found", field="id")
            return await _with_plan(session, subscription)

    async def ListSubscriptions(
        self, request: pb.ListSubscriptionsRequest, context: Context
    ) -> pb.ListSubscriptionsResponse:
        org = tenancy.organization_id()
        page = pagination.page(request, "ListSubscriptions")
        query = (
            select(Subscription, Plan)
            .join(Plan, Plan.id == Subscription.plan_id)
            .where(Subscription.organization_id == org)
        )
        if request.customer_id:
            query = query.where(Subscription.customer_id == request.customer_id)
        if request.test_clock_id:
            query = query.where(Subscription.test_clock_id == request.test_clock_id)
        query = query.order_by(Subscription.create_time, Subscription.id).offset(page.offset).limit(page.size + 1)
        async with self.sessions() as session:
            rows = (await session.execute(query)).all()
            clocks = await test_clocks.times(session, org)
        now = utcnow()
        subscriptions, token = pagination.answer(
            page, [subscription_proto(s, p, clocks.get(s.test_clock_id or "", now)) for s, p in rows]
        )
        return pb.ListSubscriptionsResponse(subscriptions=subscriptions, next_page_token=token)

    async def TerminateSubscription(
        self, request: pb.TerminateSubscriptionRequest, context: Context
    ) -> pb.Subscription:
        org = tenancy.organization_id()
        async with self.sessions() as session, session.begin():
            subscription = await _locked(session, org, request.id)
            # Read under the lock, after any concurrent change committed.
            now = await test_clocks.now(session, org, subscription.test_clock_id)
            if terminated(subscription, now):  # terminating again changes nothing
                return await _with_plan(session, subscription)
            await _cancel_successors(session, subscription, now)
            subscription.terminate_time = max(now, subscription.start_time)  # a pending one is cancelled
            result = await _announce_updated(session, subscription, now)
        self.relay.wake()
        return result

    async def ChangeSubscriptionPlan(
        self, request: pb.ChangeSubscriptionPlanRequest, context: Context
    ) -> pb.Subscription:
        org = tenancy.organization_id()
        async with self.sessions() as session, session.begin():
            subscription = await _locked(session, org, request.id)
            # Read under the lock, after any concurrent change committed.
            now = await test_clocks.now(session, org, subscription.test_clock_id)
            if terminated(subscription, now):
                raise FailedPrecondition(
                    f"subscription {request.id!r} is terminated; its plan cannot change",
                    field="status",
                    reason="SUBSCRIPTION_TERMINATED",
                )
            old = await session.get_one(Plan, subscription.plan_id)
            new = await plans.resolve(session, org, request.plan_code, request.plan_id)
            field = "plan_code" if request.plan_code else "plan_id"
            if new.code == old.code:
                raise InvalidArgument(
                    f"the subscription is already on plan {old.code!r}", field=field, reason="SAME_PLAN"
                )
            if new.currency != old.currency:
                raise InvalidArgument(
                    f"plan {new.code!r} is in {new.currency} but the subscription is in {old.currency}",
                    field=field,
                    reason="CURRENCY_MISMATCH",
                )
            await _cancel_successors(session, subscription, now)
            switch = switch_time(subscription, old, new, now)
            trial = subscription.trial_end_time
            replacement = Subscription(
                id=new_id("sub"),
                organization_id=org,
                customer_id=subscription.customer_id,
                plan_id=new.id,
                billing_time=subscription.billing_time,
                start_time=switch,
                trial_end_time=trial if trial is not None and trial > switch else None,  # the rest of the trial
                external_id=subscription.external_id,  # the client's reference follows the replacement
                previous_subscription_id=subscription.id,
                test_clock_id=subscription.test_clock_id,
                invoice_grace_period_days=subscription.invoice_grace_period_days,
                create_time=now,
            )
            subscription.terminate_time = replacement.start_time
            subscription.next_subscription_id = replacement.id
            subscription.external_id = None
            await session.flush()  # frees the external_id before the replacement takes it
            session.add(replacement)
            await session.flush()
            await _announce_updated(session, subscription, now)
            result = await _announce_created(session, replacement, new, now)
        self.relay.wake()
        return result
