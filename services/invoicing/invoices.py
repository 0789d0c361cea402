"""Invoices and current usage (InvoiceService).

A customer's invoice list can start with drafts: one per subscription with an
open period, its arrears fees priced as they stand now (computed, never
stored: no id, no number; see drafts.py), followed by its stored invoices,
the drafts of ended periods in a grace period among them. A preview is the
open period's draft with its usage projected to the period's end. Each
subscription is read at its own present: its test clock's time, if it lives
on one (clocks.py).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import async_sessionmaker

from bxb.catalog.v1 import plans_pb2
from bxb.invoicing.v1 import invoices_pb2 as pb
from bxb.invoicing.v1 import invoices_pb2_grpc
from services.common import pagination, tenancy
from services.common.decimals import canonical
from services.common.errors import FailedPrecondition, InvalidArgument, NotFound
from services.common.periods import Period
from services.common.timestamps import from_proto, to_proto, utcnow
from services.invoicing import clocks, drafts, issuing
from services.invoicing.billing import Biller, open_period, plan_of
from services.invoicing.calculations import Pricing
from services.invoicing.credit_notes import CreditNotes
from services.invoicing.delivery import Delivery
from services.invoicing.fees import FeeCalculator
from services.invoicing.invoice_view import invoice_proto, stored
from services.invoicing.lifecycle import Lifecycle
from services.invoicing.models import Invoice, Subscription
from services.invoicing.projection import SubscriptionProjection
from services.invoicing.requested import RequestedInvoices

MICROSECOND = timedelta(microseconds=1)


def running(subscription: Subscription, now: datetime | None) -> tuple[plans_pb2.Plan, Period | None]:
    """The subscription's plan and its period open at `now`: none before it
    starts, once it has ended, or without a present (its clock unknown here)."""
    plan = plan_of(subscription)
    return plan, open_period(subscription, plan, now) if now is not None else None


class InvoiceServicer(invoices_pb2_grpc.InvoiceServiceServicer):
    def __init__(
        self,
        sessions: async_sessionmaker,
        biller: Biller,
        fees: FeeCalculator,
        projection: SubscriptionProjection,
        pricing: Pricing,
        requested: RequestedInvoices,
        lifecycle: Lifecycle,
        delivery: Delivery,
        credit_notes: CreditNotes,
    ):
        self.delivery = delivery
        self.credit_notes = credit_notes
        self.sessions = sessions
        self.requested = requested
        self.lifecycle = lifecycle
        self.pricing = pricing
        self.biller = biller
        self.fees = fees
        self.projection = projection

    async def GetInvoice(self, request: pb.GetInvoiceRequest, context) -> pb.Invoice:
        async with self.sessions() as session:
            return invoice_proto(await stored(session, tenancy.organization_id(), request.id))

    async def ListInvoices(self, request: pb.ListInvoicesRequest, context) -> pb.ListInvoicesResponse:
        org = tenancy.organization_id()
        size = pagination.page_size(request.page_size)
        offset = pagination.decode_token(request.page_token)
        if request.customer_id:
            # Reading a customer's invoices first closes its due periods, so a
            # list never lags behind the calendar (or behind a subscription
            # whose event is still in flight).
            await self.projection.catch_up(org, request.customer_id)
            await self.biller.run(org=org, customer_id=request.customer_id)
        query = select(Invoice).where(Invoice.organization_id == org)
        if request.customer_id:
            query = query.where(Invoice.customer_id == request.customer_id)
        query = query.order_by(Invoice.period_start.desc(), Invoice.number.desc()).offset(offset).limit(size + 1)
        async with self.sessions() as session:
            rows = (await session.execute(query)).scalars().all()
        open_drafts = []
        if request.customer_id and request.include_draft and offset == 0:
            open_drafts = await self._drafts(org, request.customer_id)
        return pb.ListInvoicesResponse(
            invoices=[*open_drafts, *(invoice_proto(i) for i in rows[:size])],
            next_page_token=pagination.next_token(offset, size, len(rows)),
        )

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

    async def _drafts(self, org: str, customer_id: str) -> list[pb.Invoice]:
        """The invoice each open period would get if it ended now (none for a period without a fee)."""
        subscriptions = await self._subscriptions(org, customer_id)
        present = await self._present(subscriptions)
        found = [await self._draft(s, present.get(s.id)) for s in subscriptions]
        return [draft for draft in found if draft is not None]

    async def _draft(self, subscription: Subscription, now: datetime | None) -> pb.Invoice | None:
        """The invoice the open period at `now` would get if it ended then; None without one or without a fee."""
        plan, period = running(subscription, now)
        if period is None:
            return None  # not started yet, or ended
        fees = await self.fees.period_fees(subscription, plan, period, pb.BILLING_TIMING_IN_ARREARS)
        if not fees:
            return None  # nothing will be billed at its end either
        taxes = await self.fees.tax_rates(subscription, plan)
        async with self.sessions() as session:
            # Invoices on request or at a threshold may have billed part of it.
            fees, _ = await issuing.deducted(session, subscription.id, fees, period.start, period.end)
            given, amounts = await drafts.priced(session, subscription, plan, period.start, fees, now, taxes)
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

    async def PreviewInvoice(self, request: pb.PreviewInvoiceRequest, context) -> pb.InvoicePreview:
        org = tenancy.organization_id()
        subscription = await self.projection.subscription(org, request.subscription_id)
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
        elapsed = Decimal((now - period.start) // MICROSECOND)
        length = Decimal((period.end - period.start) // MICROSECOND)
        draft = await self._draft(subscription, now)
        # Usage projected to the period's end; at its very start there is no pace yet.
        projected = await self.fees.charge_fees(subscription, plan, period, length / elapsed if elapsed else None)
        return pb.InvoicePreview(
            invoice=draft,
            projected_fees=projected,
            projected_usage_amount_cents=sum(f.amount_cents for f in projected),
            elapsed_ratio=canonical(elapsed / length),
        )

    async def GetCurrentUsage(self, request: pb.GetCurrentUsageRequest, context) -> pb.GetCurrentUsageResponse:
        org = tenancy.organization_id()
        subscriptions = await self._subscriptions(org, request.customer_id, request.subscription_id)
        if request.subscription_id and not subscriptions:
            raise NotFound(f"subscription {request.subscription_id!r} not found", field="subscription_id")
        present = await self._present(subscriptions)
        result = pb.GetCurrentUsageResponse(customer_id=request.customer_id)
        for subscription in subscriptions:
            plan, period = running(subscription, present.get(subscription.id))
            if period is None:
                continue  # starts in the future, or has ended
            fees = await self.fees.charge_fees(subscription, plan, period)
            result.subscriptions.append(
                pb.SubscriptionUsage(
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

    async def RunBilling(self, request: pb.RunBillingRequest, context) -> pb.RunBillingResponse:
        org = tenancy.organization_id()
        clock = request.test_clock_id
        if clock:
            if not request.HasField("frozen_time"):
                raise InvalidArgument("frozen_time is required with test_clock_id", field="frozen_time")
            async with self.sessions() as session, session.begin():
                await clocks.advance(session, org, clock, from_proto(request.frozen_time))
            # Its customers' newest subscriptions may still be on their way here.
            await self.projection.catch_up_clock(org, clock)
        created = await self.biller.run(org=org, customer_id=request.customer_id, test_clock_id=clock)
        return pb.RunBillingResponse(invoices_created=created)

    async def FinalizeInvoice(self, request: pb.FinalizeInvoiceRequest, context) -> pb.Invoice:
        return await self.biller.finalize(tenancy.organization_id(), request.id)

    async def ComputeUsage(self, request: pb.ComputeUsageRequest, context) -> pb.ComputeUsageResponse:
        return await self.pricing.compute_usage(tenancy.organization_id(), request)

    async def CalculatePrice(self, request: pb.CalculatePriceRequest, context) -> pb.Calculation:
        return await self.pricing.calculate(tenancy.organization_id(), request)

    async def GetCalculation(self, request: pb.GetCalculationRequest, context) -> pb.Calculation:
        return await self.pricing.get(tenancy.organization_id(), request.id)

    async def CreateInvoice(self, request: pb.CreateInvoiceRequest, context) -> pb.Invoice:
        return await self.requested.create(tenancy.organization_id(), request)

    async def VoidInvoice(self, request: pb.VoidInvoiceRequest, context) -> pb.Invoice:
        return await self.lifecycle.change(tenancy.organization_id(), request.id, "void")

    async def ArchiveInvoice(self, request: pb.ArchiveInvoiceRequest, context) -> pb.Invoice:
        return await self.lifecycle.change(tenancy.organization_id(), request.id, "archive")

    async def RenderInvoicePdf(self, request: pb.RenderInvoicePdfRequest, context) -> pb.InvoicePdf:
        return await self.delivery.pdf(tenancy.organization_id(), request.id)

    async def SendInvoiceEmail(self, request: pb.SendInvoiceEmailRequest, context) -> pb.SendInvoiceEmailResponse:
        return await self.delivery.email(tenancy.organization_id(), request)

    async def CreateCreditNote(self, request: pb.CreateCreditNoteRequest, context) -> pb.CreditNote:
        return await self.credit_notes.create(tenancy.organization_id(), request)

    async def GetCreditNote(self, request: pb.GetCreditNoteRequest, context) -> pb.CreditNote:
        return await self.credit_notes.get(tenancy.organization_id(), request.id)

    async def ListCreditNotes(self, request: pb.ListCreditNotesRequest, context) -> pb.ListCreditNotesResponse:
        return await self.credit_notes.list(tenancy.organization_id(), request)
