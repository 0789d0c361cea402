"""Charging an invoice (PaymentService.ChargeInvoice, ABAXUS's
`POST /v1/invoices/{id}/charge`).

The invoice is read from invoicing (its state and what it still asks, after
credit notes), so a charge right after the invoice is issued does not wait
for invoice_finalized to reach this service. Its payment row is locked for
the whole attempt: two charges of one invoice never run at once, and a paid
invoice is never charged again (asking again answers the payment). The
customer's default payment method is charged; the outcome is stored and
announced as payment_updated, from which invoicing marks the invoice paid.
"""

from __future__ import annotations

import grpc
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bxb.invoicing.v1 import invoices_pb2, invoices_pb2_grpc
from bxb.payments.v1 import events_pb2
from services.common import outbox, tenancy
from services.common.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable
from services.common.ids import new_id
from services.common.timestamps import to_proto, utcnow
from services.payments.models import Outbox, Payment, PaymentMethod
from services.payments.payments import payment_proto
from services.payments.stripe_charges import Charge, Declined, StripeCharges

PAYMENT_UPDATED = "bxb.payments.v1.payment_updated"
PENDING, SUCCEEDED, FAILED = "PAYMENT_STATUS_PENDING", "PAYMENT_STATUS_SUCCEEDED", "PAYMENT_STATUS_FAILED"
MAX_MESSAGE = 500  # the stored column's width


async def receivable(session: AsyncSession, org: str, invoice: invoices_pb2.Invoice) -> Payment:
    """The invoice's payment row, created when invoice_finalized has not
    brought it yet; locked until the transaction ends."""
    await session.execute(
        insert(Payment)
        .values(
            id=new_id("pay"),
            organization_id=org,
            invoice_id=invoice.id,
            customer_id=invoice.customer_id,
            amount_cents=invoice.total_amount_cents,
            currency=invoice.currency,
            status=PENDING if invoice.total_amount_cents > 0 else SUCCEEDED,
        )
        .on_conflict_do_nothing()
    )
    query = select(Payment).where(Payment.organization_id == org, Payment.invoice_id == invoice.id)
    return (await session.execute(query.with_for_update())).scalar_one()


class Charging:
    def __init__(
        self,
        sessions: async_sessionmaker,
        relay: outbox.OutboxRelay,
        stripe: StripeCharges | None = None,
        invoices: invoices_pb2_grpc.InvoiceServiceStub | None = None,
        timeout: float = 10.0,
    ):
        self.sessions = sessions
        self.relay = relay
        self.stripe = stripe  # None when no provider is configured
        self.invoices = invoices  # connected when the service starts
        self.timeout = timeout

    async def _invoice(self, org: str, invoice_id: str) -> invoices_pb2.Invoice:
        try:
            return await self.invoices.GetInvoice(
                invoices_pb2.GetInvoiceRequest(id=invoice_id), metadata=tenancy.metadata(org), timeout=self.timeout
            )
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                raise NotFound(f"invoice {invoice_id!r} not found", field="invoice_id") from None
            raise Unavailable(f"invoicing could not be reached: {error.code().name}") from None

    async def charge(self, org: str, invoice_id: str) -> Payment:
        if not invoice_id:
            raise InvalidArgument("invoice_id is required", field="invoice_id")
        invoice = await self._invoice(org, invoice_id)
        async with self.sessions() as session, session.begin():
            payment = await receivable(session, org, invoice)
            if payment.status != SUCCEEDED:
                await self._attempt(session, payment, invoice)
            # Announced again when it had already succeeded: invoicing's "paid" is idempotent.
            event = events_pb2.PaymentUpdated(
                event_id=new_id("evt"),
                organization_id=org,
                occur_time=to_proto(utcnow()),
                payment=payment_proto(payment),
            )
            await outbox.enqueue(session, Outbox, PAYMENT_UPDATED, event)
        self.relay.wake()
        return payment

    async def _attempt(self, session: AsyncSession, payment: Payment, invoice: invoices_pb2.Invoice) -> None:
        if invoice.status != invoices_pb2.INVOICE_STATUS_FINALIZED:
            state = invoices_pb2.InvoiceStatus.Name(invoice.status).removeprefix("INVOICE_STATUS_").lower()
            raise FailedPrecondition(
                f"invoice {invoice.id!r} is {state}: only a finalized invoice is charged",
                field="status",
                reason="INVALID_TRANSITION",
                metadata={"status": state},
            )
        payment.amount_cents = invoice.amount_due_cents
        if payment.amount_cents <= 0:  # credit notes took it all: nothing to collect
            payment.status = SUCCEEDED
            return
        method = await self._default_method(session, payment)
        if self.stripe is None:
            raise FailedPrecondition(
                "no payment provider is configured (set BXB_STRIPE_API_KEY)", reason="PAYMENTS_NOT_CONFIGURED"
            )
        charge = Charge(
            amount=payment.amount_cents,
            currency=payment.currency,
            customer=method.provider_customer_id,
            payment_method=method.provider_payment_method,
            idempotency_key=f"{payment.id}-{payment.attempts}",
        )
        try:
            payment.provider_payment_id = await self.stripe.charge(charge)
        except Declined as declined:
            payment.status, payment.failure_message = FAILED, str(declined)[:MAX_MESSAGE]
            payment.attempts += 1
            return
        payment.status, payment.failure_message = SUCCEEDED, ""

    @staticmethod
    async def _default_method(session: AsyncSession, payment: Payment) -> PaymentMethod:
        query = select(PaymentMethod).where(
            PaymentMethod.organization_id == payment.organization_id,
            PaymentMethod.customer_id == payment.customer_id,
            PaymentMethod.is_default,
        )
        method = (await session.execute(query)).scalar_one_or_none()
        if method is None:
            raise FailedPrecondition(
                f"customer {payment.customer_id!r} has no payment method",
                field="customer_id",
                reason="NO_PAYMENT_METHOD",
            )
        return method
