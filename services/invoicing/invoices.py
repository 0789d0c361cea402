"""Invoices and current usage (InvoiceService).

A customer's invoice list can start with drafts: one per subscription with an
open period, its arrears fees priced as they stand now. A draft is never
stored; it has no id and no number, and becomes the period's finalized
invoice when the period ends (and is billed). Its coupons are those an
invoice issued now would get, given what they have already discounted.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import async_sessionmaker

from bxb.invoicing.v1 import invoices_pb2 as pb
from bxb.invoicing.v1 import invoices_pb2_grpc
from services.common import pagination, tenancy
from services.common.errors import NotFound
from services.common.timestamps import to_proto, utcnow
from services.invoicing import coupons, issuing
from services.invoicing.billing import Biller, open_period, plan_of
from services.invoicing.calculations import Pricing
from services.invoicing.credit_notes import CreditNotes
from services.invoicing.delivery import Delivery
from services.invoicing.discounts import Invoiced
from services.invoicing.fees import FeeCalculator
from services.invoicing.invoice_view import invoice_proto, stored
from services.invoicing.lifecycle import Lifecycle
from services.invoicing.models import Invoice, Subscription
from services.invoicing.projection import SubscriptionProjection
from services.invoicing.requested import RequestedInvoices
from services.invoicing.taxation import totals


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
        drafts = []
        if request.customer_id and request.include_draft and offset == 0:
            drafts = await self._drafts(org, request.customer_id, utcnow())
        return pb.ListInvoicesResponse(
            invoices=[*drafts, *(invoice_proto(i) for i in rows[:size])],
            next_page_token=pagination.next_token(offset, size, len(rows)),
        )

    async def _subscriptions(self, org: str, customer_id: str, subscription_id: str = "") -> list[Subscription]:
        query = select(Subscription).where(Subscription.organization_id == org, Subscription.customer_id == customer_id)
        if subscription_id:
            query = query.where(Subscription.id == subscription_id)
        async with self.sessions() as session:
            return list((await session.execute(query.order_by(Subscription.create_time))).scalars().all())

    async def _drafts(self, org: str, customer_id: str, now: datetime) -> list[pb.Invoice]:
        """The invoice each open period would get if it ended now (none for a period without a fee)."""
        drafts = []
        for subscription in await self._subscriptions(org, customer_id):
            plan = plan_of(subscription)
            period = open_period(subscription, plan, now)
            if period is None:
                continue  # not started yet, or ended
            fees = await self.fees.period_fees(subscription, plan, period, pb.BILLING_TIMING_IN_ARREARS)
            if not fees:
                continue  # nothing will be billed at its end either
            async with self.sessions() as session:
                # Invoices on request or at a threshold may have billed part of it.
                fees, _ = await issuing.deducted(session, subscription.id, fees, period.start, period.end)
                invoiced = Invoiced(fees, plan.currency, plan.code, period.start)
                given = await coupons.discount(session, org, customer_id, subscription.id, invoiced, now)
            amounts = totals(fees, given, plan.currency, await self.fees.tax_rates(subscription, plan))
            drafts.append(
                pb.Invoice(
                    customer_id=customer_id,
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
            )
        return drafts

    async def GetCurrentUsage(self, request: pb.GetCurrentUsageRequest, context) -> pb.GetCurrentUsageResponse:
        org = tenancy.organization_id()
        subscriptions = await self._subscriptions(org, request.customer_id, request.subscription_id)
        if request.subscription_id and not subscriptions:
            raise NotFound(f"subscription {request.subscription_id!r} not found", field="subscription_id")
        now = utcnow()
        result = pb.GetCurrentUsageResponse(customer_id=request.customer_id)
        for subscription in subscriptions:
            plan = plan_of(subscription)
            period = open_period(subscription, plan, now)
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
        created = await self.biller.run(org=org, customer_id=request.customer_id)
        return pb.RunBillingResponse(invoices_created=created)

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
