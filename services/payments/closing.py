"""Closing an invoice's payment to charges when the invoice is voided
(PaymentService.CancelInvoicePayment, asked by invoicing before it voids).

Under the payment's row lock, as charging's first step takes it: either a
charge already started, and the close is refused (PAYMENT_IN_PROGRESS while
its attempt is open, PAYMENT_SUCCEEDED once it collected), or the payment is
canceled first and no charge can start after it. So a void never leaves
money taken with nothing owed. A payment settled without collecting
anything (a zero total) stays as it is.

invoice_updated (voided) closes it the same way, for an invoice voided
without asking (an older invoicing); refusals are then only logged.
"""

from __future__ import annotations

import logging

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bxb.invoicing.v1 import invoices_pb2
from services.common.errors import FailedPrecondition
from services.payments import attempts
from services.payments.charging import receivable
from services.payments.models import PAYMENT_CANCELED, PAYMENT_FAILED, PAYMENT_PENDING, Payment
from services.payments.stripe_charges import SUCCEEDED

log = logging.getLogger("bxb.payments.closing")


class Closing:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]):
        self.sessions = sessions

    async def cancel(self, org: str, invoice: invoices_pb2.Invoice) -> Payment:
        """The invoice's payment, canceled; recorded so when there was none yet."""
        async with self.sessions() as session, session.begin():
            payment = await receivable(session, org, invoice, status=PAYMENT_CANCELED)
            attempt = await attempts.latest(session, payment)
            if attempt is not None and attempt.status in attempts.OPEN:
                raise attempts.in_progress(invoice.id)
            if attempt is not None and attempt.status == SUCCEEDED:
                raise FailedPrecondition(
                    f"invoice {invoice.id!r} is paid: a charge collected it",
                    field="invoice_id",
                    reason="PAYMENT_SUCCEEDED",
                )
            if payment.status in (PAYMENT_PENDING, PAYMENT_FAILED):
                payment.status = PAYMENT_CANCELED
        return payment

    async def voided(self, org: str, invoice: invoices_pb2.Invoice) -> None:
        """invoice_updated's voided invoice: its payment closed, as invoicing asked before voiding."""
        try:
            await self.cancel(org, invoice)
        except FailedPrecondition as refused:
            log.warning("voided invoice %s keeps its payment: %s", invoice.id, refused)
