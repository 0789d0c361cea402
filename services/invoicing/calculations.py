"""Pricing on demand (CalculationService): the same numbers an invoice bills.

CreateCalculation prices one subscription over a window (by default its open
period), split at billing-period boundaries; each slice gets the fees of both
timings, base fee and minimums prorated by the slice's share of its period.
The result is stored, so an invoice or a client can refer to it. A preview
and current usage price the open period as it stands (invoices.Drafting).
"""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bxb.catalog.v1 import plans_pb2
from bxb.invoicing.v1 import calculations_pb2 as pb
from bxb.invoicing.v1 import invoices_pb2
from services.common import periods
from services.common.errors import InvalidArgument, NotFound
from services.common.ids import new_id
from services.common.timestamps import from_proto, to_proto, utcnow
from services.invoicing import clocks
from services.invoicing.billing import plan_of
from services.invoicing.fees import FeeCalculator
from services.invoicing.models import Calculation, Subscription
from services.invoicing.projection import SubscriptionProjection

MICROSECOND = timedelta(microseconds=1)
ARREARS = invoices_pb2.BILLING_TIMING_IN_ARREARS
# Billing periods one calculation may span (ten years of a monthly plan):
# each is priced apart, so a window of centuries would run for hours.
MAX_SLICES = 120


def interval_of(plan: plans_pb2.Plan) -> str:
    return plans_pb2.PlanInterval.Name(plan.interval)


def _window(request: pb.CreateCalculationRequest, start_name: str, end_name: str) -> tuple[datetime, datetime]:
    """The window both fields (given) bound; the end after the start."""
    start, end = from_proto(getattr(request, start_name)), from_proto(getattr(request, end_name))
    if end <= start:
        raise InvalidArgument(f"{end_name} must be after {start_name}", field=end_name)
    return start, end


def default_window(subscription: Subscription, interval: str, now: datetime) -> tuple[datetime, datetime]:
    """The period running now; the first one before billing starts (the
    subscription starts, or its trial ends), the last one (cut at its end) once
    it has ended; empty for one that ended before billing started."""
    start = subscription.billing_start
    at = max(now, start)
    if subscription.terminate_time is not None:
        at = min(at, subscription.terminate_time - MICROSECOND)
    period = periods.current(start, interval, subscription.billing_time, at, until=subscription.terminate_time)
    return (period.start, period.end) if period is not None else (start, start)


def slices(subscription: Subscription, interval: str, start: datetime, end: datetime) -> list[periods.Period]:
    """[start, end) cut at the subscription's period boundaries and clipped to
    its active span: at most MAX_SLICES (each is priced on its own), or a 400."""
    every = periods.periods(
        subscription.billing_start, interval, subscription.billing_time, until=subscription.terminate_time
    )
    touching = (p for p in itertools.takewhile(lambda p: p.start < end, every) if p.end > start)
    cut = [
        periods.Period(max(p.start, start), min(p.end, end), p.full_start, p.full_end)
        for p in itertools.islice(touching, MAX_SLICES + 1)
    ]
    if len(cut) > MAX_SLICES:
        raise InvalidArgument(
            f"the window spans more than {MAX_SLICES} billing periods; price a shorter one",
            field="period_end",
            reason="WINDOW_TOO_LONG",
        )
    return cut


def record(
    session: AsyncSession,
    org: str,
    subscription: Subscription,
    plan: plans_pb2.Plan,
    window: tuple[datetime, datetime],
    line_items: list[invoices_pb2.Fee],
    now: datetime,
) -> pb.Calculation:
    """Stores a priced window (in the caller's transaction) and returns it."""
    calculation = pb.Calculation(
        id=new_id("calc"),
        customer_id=subscription.customer_id,
        subscription_id=subscription.id,
        plan_code=plan.code,
        plan_version=plan.version,
        currency=plan.currency,
        period_start=to_proto(window[0]),
        period_end=to_proto(window[1]),
        line_items=line_items,
        total_amount_cents=sum(fee.amount_cents for fee in line_items),
        create_time=to_proto(now),
    )
    session.add(
        Calculation(
            id=calculation.id,
            organization_id=org,
            customer_id=calculation.customer_id,
            subscription_id=calculation.subscription_id,
            period_start=window[0],
            period_end=window[1],
            total_amount_cents=calculation.total_amount_cents,
            message=calculation.SerializeToString(),
            create_time=now,
        )
    )
    return calculation


class Pricing:
    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], fees: FeeCalculator, projection: SubscriptionProjection
    ):
        self.sessions = sessions
        self.fees = fees
        self.projection = projection

    async def _siblings(self, org: str, customer_id: str) -> list[Subscription]:
        """The customer's subscriptions, first owner of unassigned events first."""
        query = (
            select(Subscription)
            .where(Subscription.organization_id == org, Subscription.customer_id == customer_id)
            .order_by(Subscription.start_time, Subscription.create_time, Subscription.id)
        )
        async with self.sessions() as session:
            return list((await session.execute(query)).scalars().all())

    async def _named(self, org: str, customer_id: str, subscription_id: str) -> tuple[Subscription, list[Subscription]]:
        """The customer's subscription `subscription_id`, and all the customer's."""
        rows = await self._siblings(org, customer_id)
        if not any(row.id == subscription_id for row in rows):
            # Created a moment ago, its event still on its way here: wait for it (no session held).
            arrived = await self.projection.arrived(org, subscription_id)
            if arrived is not None and arrived.customer_id == customer_id:
                rows = await self._siblings(org, customer_id)
        for row in rows:
            if row.id == subscription_id:
                return row, rows
        raise NotFound(
            f"subscription {subscription_id!r} not found for customer {customer_id!r}", field="subscription_id"
        )

    async def pick(self, org: str, customer_id: str, subscription_id: str) -> tuple[Subscription, list[Subscription]]:
        """The named subscription, or the customer's only one (preferring those
        active now); and all the customer's."""
        if subscription_id:
            return await self._named(org, customer_id, subscription_id)
        rows = await self._siblings(org, customer_id)
        async with self.sessions() as session:
            present = await clocks.presents(session, rows, utcnow())  # each at its own time (test clocks)

        def is_active(row: Subscription) -> bool:
            now = present.get(row.id)
            return (
                now is not None and row.start_time <= now and (row.terminate_time is None or now < row.terminate_time)
            )

        active = [r for r in rows if is_active(r)]
        candidates = active or rows
        if not candidates:
            raise NotFound(f"customer {customer_id!r} has no subscription", field="customer_id")
        if len(candidates) > 1:
            raise InvalidArgument(
                f"customer {customer_id!r} has {len(candidates)} subscriptions: give subscription_id",
                field="subscription_id",
            )
        return candidates[0], rows

    async def calculate(self, org: str, request: pb.CreateCalculationRequest) -> pb.Calculation:
        bounds = [request.HasField("period_start"), request.HasField("period_end")]
        if any(bounds) and not all(bounds):
            missing = "period_end" if bounds[0] else "period_start"
            raise InvalidArgument(
                f"give both period_start and period_end, or neither: {missing} is missing", field=missing
            )
        window = _window(request, "period_start", "period_end") if all(bounds) else None
        if not request.subscription_id:  # a subscription created a moment ago may be on its way here
            await self.projection.arrived_for(org, request.customer_id)
        subscription, rows = await self.pick(org, request.customer_id, request.subscription_id)
        async with self.sessions() as session:
            now = await clocks.present(session, subscription, utcnow())
        plan = plan_of(subscription)
        interval = interval_of(plan)
        if window is None:  # the open period, at the subscription's present
            window = default_window(subscription, interval, now)
        parts = slices(subscription, interval, *window)
        # Both timings of every slice, measured in one metering call (no transaction held meanwhile).
        jobs = [
            (subscription, plan, parts, timing, rows) for timing in (invoices_pb2.BILLING_TIMING_IN_ADVANCE, ARREARS)
        ]
        advance, arrears = await self.fees.jobs_fees(jobs)
        line_items = [fee for before, after in zip(advance, arrears, strict=True) for fee in (*before, *after)]
        async with self.sessions() as session, session.begin():
            return record(session, org, subscription, plan, window, line_items, utcnow())

    async def get(self, org: str, calculation_id: str) -> pb.Calculation:
        async with self.sessions() as session:
            row = await session.get(Calculation, calculation_id)
        if row is None or row.organization_id != org:
            raise NotFound(f"calculation {calculation_id!r} not found", field="id")
        return pb.Calculation.FromString(row.message)
