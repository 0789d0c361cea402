"""Invoices and current usage (InvoiceService)."""

from __future__ import annotations

from google.protobuf import json_format
from sqlalchemy import select
from sqlalchemy.ext.asyncio import async_sessionmaker

from bxb.catalog.v1 import plans_pb2
from bxb.invoicing.v1 import invoices_pb2 as pb
from bxb.invoicing.v1 import invoices_pb2_grpc
from services.common import pagination, periods, tenancy
from services.common.errors import NotFound
from services.common.timestamps import to_proto, utcnow
from services.invoicing.billing import Biller
from services.invoicing.calculations import Pricing
from services.invoicing.fees import FeeCalculator
from services.invoicing.invoice_view import invoice_proto
from services.invoicing.models import Invoice, Subscription
from services.invoicing.projection import SubscriptionProjection


class InvoiceServicer(invoices_pb2_grpc.InvoiceServiceServicer):
    def __init__(
        self,
        sessions: async_sessionmaker,
        biller: Biller,
        fees: FeeCalculator,
        projection: SubscriptionProjection,
        pricing: Pricing,
    ):
        self.sessions = sessions
        self.pricing = pricing
        self.biller = biller
        self.fees = fees
        self.projection = projection

    async def GetInvoice(self, request: pb.GetInvoiceRequest, context) -> pb.Invoice:
        org = tenancy.organization_id()
        async with self.sessions() as session:
            invoice = await session.get(Invoice, request.id)
        if invoice is None or invoice.organization_id != org:
            raise NotFound(f"invoice {request.id!r} not found", field="id")
        return invoice_proto(invoice)

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
        return pb.ListInvoicesResponse(
            invoices=[invoice_proto(i) for i in rows[:size]],
            next_page_token=pagination.next_token(offset, size, len(rows)),
        )

    async def GetCurrentUsage(self, request: pb.GetCurrentUsageRequest, context) -> pb.GetCurrentUsageResponse:
        org = tenancy.organization_id()
        query = select(Subscription).where(
            Subscription.organization_id == org, Subscription.customer_id == request.customer_id
        )
        if request.subscription_id:
            query = query.where(Subscription.id == request.subscription_id)
        async with self.sessions() as session:
            subscriptions = (await session.execute(query.order_by(Subscription.create_time))).scalars().all()
        if request.subscription_id and not subscriptions:
            raise NotFound(f"subscription {request.subscription_id!r} not found", field="subscription_id")
        now = utcnow()
        result = pb.GetCurrentUsageResponse(customer_id=request.customer_id)
        for subscription in subscriptions:
            plan = json_format.ParseDict(subscription.plan, plans_pb2.Plan())
            interval = plans_pb2.PlanInterval.Name(plan.interval)
            period = periods.current(subscription.start_time, interval, subscription.billing_time, now)
            if period is None:
                continue  # starts in the future
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
