"""Invoice state changes after finalization.

    finalized (issued) --void--> voided
    finalized (issued) --pay--> paid     (money collected: payment_updated)
    finalized, paid, voided --archive--> archived

Any other change is refused with FAILED_PRECONDITION (409) naming the
current state; so is voiding an invoice that has credit notes. Voiding gives back what the invoice's coupons took (their
redemptions go) and what it billed of a period it did not close (an invoice
on request may bill that again); a period it closed stays closed. Each change is announced as invoice_updated.

Voiding must not race a charge into money taken with nothing owed: before
the invoice is voided, the payments service closes its payment to charges
(CancelInvoicePayment), with the invoice row locked meanwhile so that no
credit note or payment changes it, and within a deadline. Payments refuses
while a charge is under way or once one collected (its reason is passed on,
a 409); payments unreachable is UNAVAILABLE (503) and nothing changes. If
the void then fails to commit, the payment stays closed and voiding again
completes it.

Every payment_updated is kept on the invoice (payment status, payment_url),
applied only when its payment's version is newer than the one kept, since
announcements may arrive late, out of order or twice. Version 0 is an
unversioned announcement (a payments service older than versions): it
applies while nothing versioned has been heard, the last one winning. Money
collected is a fact no later news undoes: any announcement saying so
(succeeded, refunded, disputed), even an older one, marks a finalized
invoice paid; a refund or dispute leaves it paid.
"""

from __future__ import annotations

import logging

import grpc
from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bxb.invoicing.v1 import events_pb2
from bxb.invoicing.v1 import invoices_pb2 as pb
from bxb.payments.v1 import events_pb2 as payments_events_pb2
from bxb.payments.v1 import payments_pb2
from services.common import outbox, peers
from services.common.errors import FailedPrecondition, Unavailable, error_info
from services.common.ids import new_id
from services.common.timestamps import to_proto, utcnow
from services.invoicing.invoice_view import invoice_proto, payment_status, stored
from services.invoicing.models import CouponRedemption, Invoice, Outbox

log = logging.getLogger("bxb.lifecycle")

INVOICE_UPDATED = "bxb.invoicing.v1.invoice_updated"
FINALIZED, PAID = "INVOICE_STATUS_FINALIZED", "INVOICE_STATUS_PAID"
VOIDED, ARCHIVED = "INVOICE_STATUS_VOIDED", "INVOICE_STATUS_ARCHIVED"
# The action, the state it leads to, and the states it may start from.
ACTIONS = {
    "void": (VOIDED, (FINALIZED,)),
    "archive": (ARCHIVED, (FINALIZED, PAID, VOIDED)),
}
PAYMENT_UPDATED = "bxb.payments.v1.payment_updated"
# Each PaymentStatus as the invoice shows it (bxb.invoicing.v1.InvoicePaymentStatus).
PAYMENT_STATUSES = {
    payments_pb2.PAYMENT_STATUS_PENDING: "INVOICE_PAYMENT_STATUS_PENDING",
    payments_pb2.PAYMENT_STATUS_REQUIRES_ACTION: "INVOICE_PAYMENT_STATUS_REQUIRES_ACTION",
    payments_pb2.PAYMENT_STATUS_SUCCEEDED: "INVOICE_PAYMENT_STATUS_SUCCEEDED",
    payments_pb2.PAYMENT_STATUS_FAILED: "INVOICE_PAYMENT_STATUS_FAILED",
    payments_pb2.PAYMENT_STATUS_REFUNDED: "INVOICE_PAYMENT_STATUS_REFUNDED",
    payments_pb2.PAYMENT_STATUS_PARTIALLY_REFUNDED: "INVOICE_PAYMENT_STATUS_PARTIALLY_REFUNDED",
    payments_pb2.PAYMENT_STATUS_DISPUTED: "INVOICE_PAYMENT_STATUS_DISPUTED",
    payments_pb2.PAYMENT_STATUS_UNCOLLECTIBLE: "INVOICE_PAYMENT_STATUS_UNCOLLECTIBLE",
    payments_pb2.PAYMENT_STATUS_CANCELED: "INVOICE_PAYMENT_STATUS_CANCELED",
}
# The states only a collected charge reaches (a dispute is of a charge that succeeded).
COLLECTED = frozenset(
    {
        payments_pb2.PAYMENT_STATUS_SUCCEEDED,
        payments_pb2.PAYMENT_STATUS_REFUNDED,
        payments_pb2.PAYMENT_STATUS_PARTIALLY_REFUNDED,
        payments_pb2.PAYMENT_STATUS_DISPUTED,
    }
)


def state_name(status: str) -> str:
    return status.removeprefix("INVOICE_STATUS_").lower()


def invalid_transition(invoice_id: str, status: str, outcome: str, field: str = "status") -> FailedPrecondition:
    """The refusal of an action the invoice's state does not allow: a 409
    naming that state ("invoice 'inv_...' is voided: it cannot be voided")."""
    state = state_name(status)
    return FailedPrecondition(
        f"invoice {invoice_id!r} is {state}: {outcome}",
        field=field,
        reason="INVALID_TRANSITION",
        metadata={"status": state},
    )


class Lifecycle:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        relay: outbox.OutboxRelay,
        payments: peers.Payments,
    ):
        self.sessions = sessions
        self.relay = relay
        self.payments = payments  # asked to close an invoice's payment before it is voided

    async def change(self, org: str, invoice_id: str, action: str) -> pb.Invoice:
        target, sources = ACTIONS[action]
        async with self.sessions() as session, session.begin():
            invoice = await stored(session, org, invoice_id, lock=True)
            if invoice.status not in sources:
                raise invalid_transition(invoice_id, invoice.status, f"it cannot be {state_name(target)}")
            if target == VOIDED and invoice.credit_notes_amount_cents:
                raise FailedPrecondition(
                    f"invoice {invoice_id!r} has credit notes: it cannot be voided",
                    field="status",
                    reason="HAS_CREDIT_NOTES",
                    metadata={"status": state_name(invoice.status)},
                )
            if target == VOIDED:
                await self._close_payment(org, invoice)
            invoice.status = target
            if target == VOIDED:
                invoice.void_time = utcnow()
                await session.execute(delete(CouponRedemption).where(CouponRedemption.invoice_id == invoice.id))
            result = await self._announce(session, invoice)
        self.relay.wake()
        return result

    @staticmethod
    async def _announce(session: AsyncSession, invoice: Invoice) -> pb.Invoice:
        """Announces the invoice as it now stands (invoice_updated, through the outbox)."""
        result = invoice_proto(invoice)
        event = events_pb2.InvoiceUpdated(
            event_id=new_id("evt"),
            organization_id=invoice.organization_id,
            occur_time=to_proto(utcnow()),
            invoice=result,
        )
        await outbox.enqueue(session, Outbox, INVOICE_UPDATED, event)
        return result

    async def _close_payment(self, org: str, invoice: Invoice) -> None:
        """Has payments close the invoice's payment to charges, or raises why not."""
        request = payments_pb2.CancelInvoicePaymentRequest(
            invoice_id=invoice.id,
            customer_id=invoice.customer_id,
            amount_cents=invoice.total_amount_cents,
            currency=invoice.currency,
        )
        try:
            await self.payments.cancel_invoice_payment(org, request)
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.FAILED_PRECONDITION:
                raise Unavailable(f"payments could not be reached: {error.code().name}") from None
            info = error_info(error)
            assert info is not None  # payments' refusals carry an ErrorInfo
            raise FailedPrecondition(
                f"invoice {invoice.id!r} cannot be voided: {error.details()}",
                field="status",
                reason=info.reason,
                metadata={"status": state_name(invoice.status)},
            ) from None

    async def paid(self, subject: str, payload: bytes) -> None:
        """Applies a payment_updated to its invoice (rules above) and
        announces the invoice when that changed it. The invoice must exist
        in the payment's organization: until it is found the announcement
        is redelivered (then parked)."""
        if subject != PAYMENT_UPDATED:
            return  # a newer payments service may announce facts this version ignores
        event = payments_events_pb2.PaymentUpdated.FromString(payload)
        payment = event.payment
        status = PAYMENT_STATUSES.get(payment.status)
        if status is None:
            log.info("payment status %d of invoice %s is not shown", payment.status, payment.invoice_id)
            return  # unspecified, or a state a newer payments service knows
        async with self.sessions() as session, session.begin():
            invoice = await stored(session, event.organization_id, payment.invoice_id, field="invoice_id", lock=True)
            before = (invoice.status, payment_status(invoice), invoice.payment_url)
            newer = payment.version > invoice.payment_version or payment.version == invoice.payment_version == 0
            if newer:
                invoice.payment_status, invoice.payment_url = status, payment.payment_url
                invoice.payment_version = payment.version
            if payment.status in COLLECTED and invoice.status == FINALIZED:
                invoice.status = PAID
            elif payment.status in COLLECTED and invoice.void_time is not None:  # voiding closes the payment first
                log.warning("invoice %s is voided, yet its payment says money was collected", invoice.id)
            if (invoice.status, payment_status(invoice), invoice.payment_url) == before:
                return  # older, repeated, or changing nothing shown
            await self._announce(session, invoice)
        self.relay.wake()
