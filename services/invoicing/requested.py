"""Invoices on request (ABAXUS `POST /v1/invoices`): a subscription billed up
to a cutoff, now.

The invoice starts where the subscription's billing stands: the end of its
last live invoice in arrears, on request or at a threshold, or of its last
closed period, else where billing starts (the start, or the trial's end). A
voided invoice that did not close its period no longer counts, so what it
billed can be invoiced again; a closed period stays closed. It ends at the
cutoff (exclusive; a cutoff at 23:59:59 bills that whole day), clipped to the
subscription's end, and never later than now.

Every billing period it touches is priced as the end-of-period invoice
prices it (fees in arrears; a period cut at the cutoff prices up to it,
its base fee prorated), less what earlier invoices on request already billed
of that period. A period the cutoff closes is settled: the billing run will
not bill it again. One the cutoff cuts records what this invoice billed of it,
so the next invoice of that period, on request or at its end, deducts it.
A cutoff already invoiced answers the live invoice ending exactly there (a
retry, or a period the billing run closed), else FAILED_PRECONDITION.
Nothing to bill (a 0 subtotal) is refused and nothing is stored. The invoice
references the pricing calculation of its window: the latest one stored for
exactly that window and total, else one stored from its own lines.
"""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bxb.catalog.v1 import plans_pb2
from bxb.invoicing.v1 import invoices_pb2 as pb
from services.common import periods
from services.common.errors import Aborted, FailedPrecondition, InvalidArgument
from services.common.outbox import OutboxRelay
from services.common.timestamps import format_rfc3339, from_proto, utcnow
from services.invoicing import clocks, issuing, thresholds
from services.invoicing.billing import plan_of
from services.invoicing.calculations import Pricing, interval_of, record
from services.invoicing.fees import FeeCalculator
from services.invoicing.invoice_view import invoice_proto
from services.invoicing.models import Calculation, InterimAmount, Invoice, Subscription

ON_REQUEST, ARREARS = pb.BILLING_TIMING_ON_REQUEST, pb.BILLING_TIMING_IN_ARREARS
BILLED_TO = ("BILLING_TIMING_IN_ARREARS", "BILLING_TIMING_ON_REQUEST", "BILLING_TIMING_PROGRESSIVE")
# Live invoices that move where a subscription's billing stands.
BILLING = (Invoice.timing.in_(BILLED_TO), Invoice.void_time.is_(None))
SECOND = timedelta(seconds=1)


def period_end(cutoff: datetime) -> datetime:
    """A cutoff at the day's last second (23:59:59) bills through that second."""
    if (cutoff.hour, cutoff.minute, cutoff.second, cutoff.microsecond) == (23, 59, 59, 0):
        return cutoff + SECOND
    return cutoff


async def billed_to(session: AsyncSession, subscription: Subscription) -> datetime:
    """Where the subscription's billing stands: what its next invoice starts from."""
    last = await session.execute(
        select(func.max(Invoice.period_end)).where(Invoice.subscription_id == subscription.id, *BILLING)
    )
    marks = [subscription.billing_start, last.scalar(), subscription.billed_through]
    return max(mark for mark in marks if mark is not None)


class RequestedInvoices:
    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], fees: FeeCalculator, pricing: Pricing, relay: OutboxRelay
    ):
        self.sessions = sessions
        self.fees = fees
        self.pricing = pricing
        self.relay = relay

    async def create(self, org: str, request: pb.CreateInvoiceRequest) -> pb.Invoice:
        cutoff = from_proto(request.cutoff_time)
        if not request.subscription_id:  # the customer's whole list must be current
            await self.pricing.projection.catch_up(org, request.customer_id)
        subscription, rows = await self.pricing.pick(org, request.customer_id, request.subscription_id)
        async with self.sessions() as session:
            now = await clocks.present(session, subscription, utcnow())  # a test clock's customer: its time
            start = await billed_to(session, subscription)
        # A cutoff already after now is judged as given: the last second of
        # year 9999 has no second after it.
        end = cutoff if cutoff > now else period_end(cutoff)
        if end > now:
            raise InvalidArgument(
                "cutoff_date must not be in the future", field="cutoff_time", reason="CUTOFF_IN_FUTURE"
            )
        if subscription.terminate_time is not None:
            end = min(end, subscription.terminate_time)
        if end <= start:
            existing = await self._ending(subscription.id, end)
            if existing is not None:  # a retry, or a period the billing run closed: the invoice ending there
                return invoice_proto(existing)
            raise FailedPrecondition(
                f"subscription {subscription.id!r} is invoiced through {format_rfc3339(start)}",
                field="cutoff_time",
                reason="ALREADY_INVOICED",
            )
        return invoice_proto(await self.issue(subscription, rows, start, end, ON_REQUEST, now))

    async def issue(
        self,
        subscription: Subscription,
        rows: list[Subscription] | None,
        start: datetime,
        end: datetime,
        timing: pb.BillingTiming.ValueType,
        now: datetime,
        crossed: thresholds.Crossing | None = None,
    ) -> Invoice:
        """Bills [start, end) (start: where billing stood when read); ABORTED
        when another invoice moved it meanwhile. `crossed`: the usage
        thresholds this invoice bills up to (recorded and announced)."""
        org = subscription.organization_id
        plan = plan_of(subscription)
        interval = interval_of(plan)
        every = periods.periods(
            subscription.billing_start, interval, subscription.billing_time, until=subscription.terminate_time
        )
        touched = [p for p in itertools.takewhile(lambda p: p.start < end, every) if p.end > start]
        priced = []
        for period in touched:
            window = (
                period if end >= period.end else periods.Period(period.start, end, period.full_start, period.full_end)
            )
            priced.append((period, window, await self.fees.period_fees(subscription, plan, window, ARREARS, rows)))
        taxes = await self.fees.tax_rates(subscription, plan)
        async with self.sessions() as session, session.begin():
            fresh = (await issuing.lock(session, [subscription.id]))[subscription.id]
            if await billed_to(session, fresh) != start:
                raise Aborted("the subscription was invoiced meanwhile; retry", field="cutoff_time")
            lines, interim = [], []
            for period, window, fees in priced:
                fees, _ = await issuing.deducted(session, subscription.id, fees, period.start, window.end)
                lines += fees
                if window.end == period.end:  # closed: the billing run leaves it alone
                    issuing.settle(fresh, Subscription.billed_through, period.end)
                else:
                    interim.append((period.start, sum(f.amount_cents for f in fees)))
            subtotal = sum(f.amount_cents for f in lines)
            if subtotal == 0:
                raise FailedPrecondition(
                    f"nothing to invoice for subscription {subscription.id!r} up to the cutoff: the total is 0",
                    field="cutoff_time",
                    reason="ZERO_TOTAL",
                )
            calculation = await self._calculation(session, org, fresh, plan, (start, end), lines, subtotal, now)
            invoice = await issuing.store(
                session, fresh, plan, (start, end), timing, lines, now, taxes, calculation_id=calculation
            )
            await issuing.announce(session, [invoice])
            if crossed is not None:
                await thresholds.record(session, invoice, crossed)
            session.add_all(
                InterimAmount(invoice_id=invoice.id, period_start=p, subscription_id=subscription.id, amount_cents=c)
                for p, c in interim
            )
        self.relay.wake()
        return invoice

    async def _ending(self, subscription_id: str, end: datetime) -> Invoice | None:
        async with self.sessions() as session:
            found = await session.execute(
                select(Invoice)
                .where(Invoice.subscription_id == subscription_id, Invoice.period_end == end, *BILLING)
                .limit(1)
            )
            return found.scalar_one_or_none()

    @staticmethod
    async def _calculation(
        session: AsyncSession,
        org: str,
        subscription: Subscription,
        plan: plans_pb2.Plan,
        window: tuple[datetime, datetime],
        lines: list[pb.Fee],
        subtotal: int,
        now: datetime,
    ) -> str:
        """The latest calculation of exactly this window and total, else a new one of these lines."""
        found = await session.execute(
            select(Calculation.id)
            .where(
                Calculation.organization_id == org,
                Calculation.subscription_id == subscription.id,
                Calculation.period_start == window[0],
                Calculation.period_end == window[1],
                Calculation.total_amount_cents == subtotal,
            )
            .order_by(Calculation.create_time.desc())
            .limit(1)
        )
        existing = found.scalar_one_or_none()
        return existing or record(session, org, subscription, plan, window, lines, now).id
