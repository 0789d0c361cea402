"""Payments (PaymentService); charging is in charging.py, payment methods in
methods.py, refunds in refunds.py and refunder.py.

An invoice's payments (ListInvoicePayments) are answered from payments' own
records: an invoice it has no payment for (not finalized yet, or unknown)
answers an empty response, not NOT_FOUND, so reading never waits on
invoicing."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bxb.invoicing.v1 import invoices_pb2
from bxb.payments.v1 import payments_pb2 as pb
from bxb.payments.v1 import payments_pb2_grpc
from services.common import pagination, tenancy
from services.common.errors import FailedPrecondition, InvalidArgument, NotFound
from services.common.grpc_server import Context
from services.common.timestamps import to_proto
from services.payments.methods import PaymentMethodRpcs, PaymentMethods
from services.payments.models import (
    PAYMENT_FAILED,
    PAYMENT_REQUIRES_ACTION,
    Payment,
    PaymentAttempt,
    Refund,
)

if TYPE_CHECKING:  # they import this module
    from services.payments.charging import Charging
    from services.payments.closing import Closing


def payment_proto(payment: Payment) -> pb.Payment:
    return pb.Payment(
        id=payment.id,
        invoice_id=payment.invoice_id,
        customer_id=payment.customer_id,
        amount_cents=payment.amount_cents,
        currency=payment.currency,
        status=pb.PaymentStatus.Value(payment.status),
        create_time=to_proto(payment.create_time),
        provider_payment_id=payment.provider_payment_id,
        failure_message=payment.failure_message,
        payment_url=payment.payment_url,
        refunded_amount_cents=payment.refunded_amount_cents,
        attempt_count=payment.attempt_count,
        next_attempt_time=to_proto(payment.next_attempt_time),
        failure_reason=payment.failure_reason,
        version=payment.version,
        update_time=to_proto(payment.update_time),
    )


def attempt_proto(attempt: PaymentAttempt) -> pb.PaymentAttempt:
    return pb.PaymentAttempt(
        id=attempt.id,
        payment_id=attempt.payment_id,
        invoice_id=attempt.invoice_id,
        status=pb.PaymentAttemptStatus.Value(f"PAYMENT_ATTEMPT_STATUS_{attempt.status.upper()}"),
        trigger=pb.PaymentAttemptTrigger.Value(attempt.trigger),
        amount_cents=attempt.amount_cents,
        provider_amount=attempt.provider_amount,
        currency=attempt.currency,
        provider_customer_id=attempt.provider_customer_id,
        provider_payment_method=attempt.provider_payment_method,
        provider_payment_id=attempt.provider_payment_id,
        failure_reason=attempt.failure_reason,
        failure_message=attempt.failure_message,
        create_time=to_proto(attempt.create_time),
    )


def refund_proto(refund: Refund) -> pb.Refund:
    return pb.Refund(
        id=refund.id,
        payment_id=refund.payment_id,
        invoice_id=refund.invoice_id,
        credit_note_id=refund.credit_note_id,
        status=pb.RefundStatus.Value(refund.status),
        amount_cents=refund.amount_cents,
        provider_amount=refund.provider_amount,
        currency=refund.currency,
        provider_refund_id=refund.provider_refund_id,
        failure_message=refund.failure_message,
        create_time=to_proto(refund.create_time),
    )


class PaymentServicer(PaymentMethodRpcs, payments_pb2_grpc.PaymentServiceServicer):
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        charging: Charging | None = None,
        closing: Closing | None = None,
        methods: PaymentMethods | None = None,
    ):
        self.sessions = sessions
        self.charging = charging  # charges invoices
        self.closing = closing  # closes voided invoices' payments
        self.methods = methods  # customers' payment methods (methods.py)

    async def ListPayments(self, request: pb.ListPaymentsRequest, context: Context) -> pb.ListPaymentsResponse:
        org = tenancy.organization_id()
        page = pagination.page(request, "ListPayments")
        query = select(Payment).where(Payment.organization_id == org)
        if request.customer_id:
            query = query.where(Payment.customer_id == request.customer_id)
        if request.invoice_id:
            query = query.where(Payment.invoice_id == request.invoice_id)
        if request.status:
            query = query.where(Payment.status == pb.PaymentStatus.Name(request.status))
        query = query.order_by(Payment.create_time.desc(), Payment.id).offset(page.offset).limit(page.size + 1)
        async with self.sessions() as session:
            rows = (await session.execute(query)).scalars().all()
        payments, token = pagination.answer(page, [payment_proto(p) for p in rows])
        return pb.ListPaymentsResponse(payments=payments, next_page_token=token)

    async def GetPayment(self, request: pb.GetPaymentRequest, context: Context) -> pb.Payment:
        query = select(Payment).where(Payment.organization_id == tenancy.organization_id(), Payment.id == request.id)
        async with self.sessions() as session:
            payment = (await session.execute(query)).scalar_one_or_none()
        if payment is None:
            raise NotFound(f"payment {request.id!r} not found", field="id")
        return payment_proto(payment)

    async def ListInvoicePayments(
        self, request: pb.ListInvoicePaymentsRequest, context: Context
    ) -> pb.ListInvoicePaymentsResponse:
        """The invoice's payment, every attempt and every refund, newest first;
        empty when payments has no payment for the invoice."""
        org = tenancy.organization_id()
        query = select(Payment).where(Payment.organization_id == org, Payment.invoice_id == request.invoice_id)
        async with self.sessions() as session:
            payment = (await session.execute(query)).scalar_one_or_none()
            if payment is None:
                return pb.ListInvoicePaymentsResponse()
            attempts = select(PaymentAttempt).where(PaymentAttempt.payment_id == payment.id)
            attempts = attempts.order_by(PaymentAttempt.create_time.desc(), PaymentAttempt.id.desc())
            refunds = select(Refund).where(Refund.payment_id == payment.id)
            refunds = refunds.order_by(Refund.create_time.desc(), Refund.id.desc())
            return pb.ListInvoicePaymentsResponse(
                payment=payment_proto(payment),
                attempts=[attempt_proto(a) for a in (await session.execute(attempts)).scalars()],
                refunds=[refund_proto(r) for r in (await session.execute(refunds)).scalars()],
            )

    async def ChargeInvoice(self, request: pb.ChargeInvoiceRequest, context: Context) -> pb.Payment:
        """The succeeded payment; a decline or a payment waiting for the
        customer is an error, recorded before it is raised."""
        assert self.charging is not None  # the server gives one
        payment = await self.charging.charge(tenancy.organization_id(), request.invoice_id)
        if payment.status == PAYMENT_FAILED:
            raise FailedPrecondition(
                payment.failure_message or "the payment was declined",
                reason="PAYMENT_FAILED",
                field="payment_method",
                metadata={"payment_id": payment.id, "provider_payment_id": payment.provider_payment_id},
            )
        if payment.status == PAYMENT_REQUIRES_ACTION:
            raise FailedPrecondition(
                "the customer must authenticate the payment (3-D Secure) of payment intent "
                f"{payment.provider_payment_id}",
                reason="PAYMENT_REQUIRES_ACTION",
                field="payment_method",
                metadata={"payment_id": payment.id, "provider_payment_id": payment.provider_payment_id},
            )
        return payment_proto(payment)

    async def CancelInvoicePayment(self, request: pb.CancelInvoicePaymentRequest, context: Context) -> pb.Payment:
        if not request.invoice_id:
            raise InvalidArgument("invoice_id is required", field="invoice_id")
        invoice = invoices_pb2.Invoice(
            id=request.invoice_id,
            customer_id=request.customer_id,
            total_amount_cents=request.amount_cents,
            currency=request.currency,
        )
        assert self.closing is not None  # the server gives one
        return payment_proto(await self.closing.cancel(tenancy.organization_id(), invoice))
