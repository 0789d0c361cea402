"""Invoices (InvoiceService) and the drafts of open and ended periods (Drafting).

A customer's invoice list (over gRPC as over REST) starts with drafts, computed on each read and
never stored (no id, no number; see drafts.py): one for each subscription's
open period, and one for each ended period the billing run has not invoiced
yet (the newest PENDING_SHOWN), each priced as it stands now; then its
stored invoices, the drafts of ended periods in a grace period among them.
Reads never write: issuing what fell due is the billing run's job. One
listing prices the drafts of at most DRAFTED_SUBSCRIPTIONS subscriptions (the
newest) with one metering call and one catalog call. A preview is the open
period's draft with its usage projected to the period's end. Each
subscription is read at its own present: its test clock's time, if it lives
on one (clocks.py).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bxb.catalog.v1 import plans_pb2, taxes_pb2
from bxb.invoicing.v1 import calculations_pb2, invoices_pb2_grpc
from bxb.invoicing.v1 import invoices_pb2 as pb
from services.common import pagination, tenancy
from services.common.decimals import canonical
from services.common.errors import FailedPrecondition, NotFound, Unavailable
from services.common.grpc_server import Context
from services.common.periods import Period
from services.common.timestamps import to_proto, utcnow
from services.invoicing import clocks, drafts, issuing
from services.invoicing.billing import Biller, open_period, plan_of, subscription_periods
from services.invoicing.delivery import Delivery
from services.invoicing.fees import FeeCalculator, Job
from services.invoicing.invoice_view import invoice_proto, payment_status_clause, stored
from services.invoicing.lifecycle import Lifecycle
from services.invoicing.models import Invoice, Subscription
from services.invoicing.pricing.money import AmountOutOfRange
from services.invoicing.projection import SubscriptionProjection
from services.invoicing.requested import RequestedInvoices
from services.invoicing.taxation import Totals

log = logging.getLogger("bxb.invoices")
MICROSECOND = timedelta(microseconds=1)
# Subscriptions of a customer one listing prices (the newest): a bound on one read's work.
DRAFTED_SUBSCRIPTIONS = 200
# Ended periods of a subscription, not invoiced yet, that a listing shows as drafts (the newest).
PENDING_SHOWN = 12
# What one draft prices: a subscription, its plan, a period, and the subscription's present.
Drafted = tuple[Subscription, plans_pb2.Plan, Period, datetime]


def shown_periods(subscription: Subscription, plan: plans_pb2.Plan, now: datetime) -> list[Period]:
    """The periods a listing shows as drafts, newest first: the one open at
    `now`, and the ended ones not invoiced yet (at most PENDING_SHOWN)."""
    billed = subscription.billed_through
    started = subscription_periods(subscription, plan, now)
    ended = [p for p in started if p.end <= now and (billed is None or p.end > billed)]
    current = open_period(subscription, plan, now)
    return ([current] if current is not None else []) + ended[::-1][:PENDING_SHOWN]


def draft_proto(
    subscription: Subscription,
    plan: plans_pb2.Plan,
    period: Period,
    fees: list[pb.Fee],
    given: list[pb.InvoiceCoupon],
    amounts: Totals,
) -> pb.Invoice:
    """A computed draft as the API shows it: no id, no number."""
    return pb.Invoice(
        customer_id=subscription.customer_id,
        subscription_id=subscription.id,
        plan_code=plan.code,
        status=pb.INVOICE_STATUS_DRAFT,
        currency=plan.currency,
        period_start=to_proto(period.start),
        period_end=to_proto(period.end),
        fees=fees,
        subtotal_cents=amounts.subtotal,
        coupons=given,
        coupons_amount_cents=amounts.discount,
        taxes=amounts.taxes,
        taxes_amount_cents=amounts.tax,
        total_amount_cents=amounts.total,
        amount_due_cents=amounts.total,
        timing=pb.BILLING_TIMING_IN_ARREARS,
    )


def running(subscription: Subscription, now: datetime | None) -> tuple[plans_pb2.Plan, Period | None]:
    """The subscription's plan and its period open at `now`: none before it
    starts, once it has ended, or without a present (its clock unknown here)."""
    plan = plan_of(subscription)
    return plan, open_period(subscription, plan, now) if now is not None else None


class Drafting:
    """The drafts of a customer's periods, priced on read and never stored;
    also what a preview and current usage price. Each subscription is read
    at its own present (its test clock's time, if it lives on one)."""

    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], fees: FeeCalculator, projection: SubscriptionProjection
    ):
        self.sessions = sessions
        self.fees = fees
        self.projection = projection

    async def _subscriptions(self, org: str, customer_id: str, subscription_id: str = "") -> list[Subscription]:
        query = select(Subscription).where(Subscription.organization_id == org, Subscription.customer_id == customer_id)
        if subscription_id:
            query = query.where(Subscription.id == subscription_id)
        async with self.sessions() as session:
            return list((await session.execute(query.order_by(Subscription.create_time))).scalars().all())

    async def _present(self, subscriptions: list[Subscription]) -> dict[str, datetime]:
        """Each subscription's present (its clock's time on a test clock); a
        subscription whose clock is not known here yet has none."""
        async with self.sessions() as session:
            return await clocks.presents(session, subscriptions, utcnow())

    async def drafts(self, org: str, customer_id: str) -> list[pb.Invoice]:
        """The invoice each open period would get if it ended now, and each
        ended period the billing run has not invoiced yet, newest first (none
        for a period without a fee)."""
        subscriptions = await self._subscriptions(org, customer_id)
        present = await self._present(subscriptions)
        wanted: list[Drafted] = []
        for subscription in reversed(subscriptions[-DRAFTED_SUBSCRIPTIONS:]):
            now = present.get(subscription.id)
            if now is None:
                continue  # its clock is unknown here yet: no draft
            plan = plan_of(subscription)
            wanted += [(subscription, plan, p, now) for p in shown_periods(subscription, plan, now)]
        async with self.sessions() as session:  # ended periods in a grace period are stored drafts: listed already
            kept = await drafts.stored(session, [(s.id, p.start) for s, _, p, _ in wanted])
        return await self._priced([w for w in wanted if (w[0].id, w[2].start) not in kept], subscriptions)

    async def _priced(
        self, wanted: list[Drafted], siblings: list[Subscription], listing: bool = True
    ) -> list[pb.Invoice]:
        """The drafts of `wanted` (one customer's), priced with one metering
        call and one catalog call; a period without a fee has none. A draft
        whose amounts are out of range (usage times price beyond what an
        invoice holds) is left out of a `listing` (logged: the customer's
        other invoices are still listed); otherwise AMOUNT_OUT_OF_RANGE."""
        if not wanted:
            return []
        org = wanted[0][0].organization_id
        jobs: list[Job] = [(s, plan, [period], pb.BILLING_TIMING_IN_ARREARS, siblings) for s, plan, period, _ in wanted]
        try:
            priced: list[list[list[pb.Fee]] | None] = list(await self.fees.jobs_fees(jobs))
        except AmountOutOfRange:
            if not listing:
                raise
            priced = [await self._alone(job) for job in jobs]  # to find the ones out of range
        taxes = await self.fees.jobs_taxes(org, [(s.customer_id, plan.tax_codes) for s, plan, _, _ in wanted])
        found = []
        async with self.sessions() as session:
            for (subscription, plan, period, now), fees, tax in zip(wanted, priced, taxes, strict=True):
                try:
                    draft = await self._draft(session, subscription, plan, period, now, fees, tax)
                except AmountOutOfRange as error:
                    if not listing:
                        raise
                    log.warning("draft of %s left out of a listing: %s", subscription.id, error.message)
                    continue
                if draft is not None:
                    found.append(draft)
        return found

    async def _alone(self, job: Job) -> list[list[pb.Fee]] | None:
        """One draft's fees priced alone; None when they are out of range."""
        try:
            [fees] = await self.fees.jobs_fees([job])
        except AmountOutOfRange as error:
            log.warning("draft of %s left out of a listing: %s", job[0].id, error.message)
            return None
        return fees

    @staticmethod
    async def _draft(
        session: AsyncSession,
        subscription: Subscription,
        plan: plans_pb2.Plan,
        period: Period,
        now: datetime,
        fees: list[list[pb.Fee]] | None,
        tax: list[taxes_pb2.Tax],
    ) -> pb.Invoice | None:
        """One draft from its fees (none without a fee, or when left out as out of range)."""
        if not fees or not fees[0]:
            return None  # nothing will be billed at its end either
        # Invoices on request or at a threshold may have billed part of it.
        lines, _ = await issuing.deducted(session, subscription.id, fees[0], period.start, period.end)
        given, amounts = await drafts.priced(session, subscription, plan, period.start, lines, now, tax)
        return draft_proto(subscription, plan, period, lines, given, amounts)

    async def preview(
        self, org: str, request: calculations_pb2.PreviewInvoiceRequest
    ) -> calculations_pb2.InvoicePreview:
        subscription = await self.projection.arrived(org, request.subscription_id)
        if subscription is None:
            raise NotFound(f"subscription {request.subscription_id!r} not found", field="subscription_id")
        now = (await self._present([subscription])).get(subscription.id)
        plan, period = running(subscription, now)
        if period is None:
            raise FailedPrecondition(
                f"subscription {request.subscription_id!r} has no open period to preview",
                field="subscription_id",
                reason="NO_OPEN_PERIOD",
            )
        assert now is not None  # a period is open at the subscription's present
        elapsed = Decimal((now - period.start) // MICROSECOND)
        length = Decimal((period.end - period.start) // MICROSECOND)
        siblings = await self._subscriptions(org, subscription.customer_id)
        drafted: Sequence[pb.Invoice | None] = await self._priced(
            [(subscription, plan, period, now)], siblings, listing=False
        )
        [draft] = drafted or [None]
        # Usage projected to the period's end; at its very start there is no pace yet.
        projected = await self.fees.charge_fees(subscription, plan, period, length / elapsed if elapsed else None)
        return calculations_pb2.InvoicePreview(
            invoice=draft,
            projected_fees=projected,
            projected_usage_amount_cents=sum(f.amount_cents for f in projected),
            elapsed_ratio=canonical(elapsed / length),
        )

    async def current_usage(
        self, org: str, request: calculations_pb2.GetCurrentUsageRequest
    ) -> calculations_pb2.GetCurrentUsageResponse:
        subscriptions = await self._subscriptions(org, request.customer_id, request.subscription_id)
        if request.subscription_id and not subscriptions:
            raise NotFound(f"subscription {request.subscription_id!r} not found", field="subscription_id")
        present = await self._present(subscriptions)
        running_now = []
        for subscription in subscriptions[-DRAFTED_SUBSCRIPTIONS:]:
            plan, period = running(subscription, present.get(subscription.id))
            if period is not None:  # not started yet, or ended: none
                running_now.append((subscription, plan, period))
        result = calculations_pb2.GetCurrentUsageResponse(customer_id=request.customer_id)
        measured = await self.fees.jobs_charge_fees(running_now)
        for (subscription, plan, period), fees in zip(running_now, measured, strict=True):
            result.subscriptions.append(
                calculations_pb2.SubscriptionUsage(
                    subscription_id=subscription.id,
                    plan_code=plan.code,
                    currency=plan.currency,
                    period_start=to_proto(period.start),
                    period_end=to_proto(period.end),
                    fees=fees,
                    amount_cents=sum(f.amount_cents for f in fees),
                )
            )
        return result


class InvoiceServicer(invoices_pb2_grpc.InvoiceServiceServicer):
    """InvoiceService: stored invoices, a customer's drafts, and the
    invoice's lifecycle, document and email."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        drafting: Drafting,
        biller: Biller,
        requested: RequestedInvoices,
        lifecycle: Lifecycle,
        delivery: Delivery,
    ):
        self.sessions = sessions
        self.drafting = drafting
        self.biller = biller
        self.requested = requested
        self.lifecycle = lifecycle
        self.delivery = delivery

    async def GetInvoice(self, request: pb.GetInvoiceRequest, context: Context) -> pb.Invoice:
        async with self.sessions() as session:
            return invoice_proto(await stored(session, tenancy.organization_id(), request.id))

    async def ListInvoices(self, request: pb.ListInvoicesRequest, context: Context) -> pb.ListInvoicesResponse:
        org = tenancy.organization_id()
        page = pagination.page(request, "ListInvoices")
        query = select(Invoice).where(Invoice.organization_id == org)
        if request.customer_id:
            query = query.where(Invoice.customer_id == request.customer_id)
        if request.payment_status:
            query = query.where(payment_status_clause() == pb.InvoicePaymentStatus.Name(request.payment_status))
        query = query.order_by(Invoice.period_start.desc(), Invoice.number.desc())
        async with self.sessions() as session:
            rows = (await session.execute(query.offset(page.offset).limit(page.size + 1))).scalars().all()
        invoices, token = pagination.answer(page, [invoice_proto(i) for i in rows])
        computed = []
        # Drafts have no payment status: a listing by one leaves them out.
        if request.customer_id and page.offset == 0 and not request.payment_status:  # over gRPC as over REST
            with contextlib.suppress(Unavailable):  # the catalog away: what is here is listed
                await self.drafting.projection.arrived_for(
                    org, request.customer_id
                )  # one created a moment ago included
            computed = await self.drafting.drafts(org, request.customer_id)
        return pb.ListInvoicesResponse(invoices=[*computed, *invoices], next_page_token=token)

    async def FinalizeInvoice(self, request: pb.FinalizeInvoiceRequest, context: Context) -> pb.Invoice:
        return await self.biller.finalize(tenancy.organization_id(), request.id)

    async def CreateInvoice(self, request: pb.CreateInvoiceRequest, context: Context) -> pb.Invoice:
        return await self.requested.create(tenancy.organization_id(), request)

    async def VoidInvoice(self, request: pb.VoidInvoiceRequest, context: Context) -> pb.Invoice:
        return await self.lifecycle.change(tenancy.organization_id(), request.id, "void")

    async def ArchiveInvoice(self, request: pb.ArchiveInvoiceRequest, context: Context) -> pb.Invoice:
        return await self.lifecycle.change(tenancy.organization_id(), request.id, "archive")

    async def RenderInvoicePdf(self, request: pb.RenderInvoicePdfRequest, context: Context) -> pb.InvoicePdf:
        return await self.delivery.pdf(tenancy.organization_id(), request.id)

    async def SendInvoiceEmail(
        self, request: pb.SendInvoiceEmailRequest, context: Context
    ) -> pb.SendInvoiceEmailResponse:
        return await self.delivery.email(tenancy.organization_id(), request)
