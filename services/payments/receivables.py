"""Records what each finalized invoice asks the customer to pay, and cancels
it when the invoice is voided (closing.py: as invoicing asked before voiding);
refund credit notes go to refunds.py.

Fed by bxb.invoicing.v1.invoice_finalized and invoice_updated; the unique
(organization, invoice) key makes a redelivered event a no-op.
"""

from __future__ import annotations

from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bxb.invoicing.v1 import events_pb2, invoices_pb2
from services.common.ids import new_id
from services.payments.closing import Closing
from services.payments.models import PAYMENT_PENDING, PAYMENT_SUCCEEDED, Payment
from services.payments.refunds import CREDIT_NOTE_CREATED, Refunds

INVOICE_FINALIZED = "bxb.invoicing.v1.invoice_finalized"
INVOICE_UPDATED = "bxb.invoicing.v1.invoice_updated"


class Receivables:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], refunds: Refunds):
        self.sessions = sessions
        self.closing = Closing(sessions)
        self.refunds = refunds  # records refund credit notes

    async def handle(self, subject: str, payload: bytes) -> None:
        if subject == INVOICE_FINALIZED:
            await self.finalized(events_pb2.InvoiceFinalized.FromString(payload))
        elif subject == INVOICE_UPDATED:
            await self.updated(events_pb2.InvoiceUpdated.FromString(payload))
        elif subject == CREDIT_NOTE_CREATED:
            await self.refunds.created(events_pb2.CreditNoteCreated.FromString(payload))
        # any other subject: a newer invoicing may announce facts this version ignores

    async def finalized(self, event: events_pb2.InvoiceFinalized) -> None:
        invoice = event.invoice
        status = PAYMENT_PENDING if invoice.total_amount_cents > 0 else PAYMENT_SUCCEEDED
        async with self.sessions() as session, session.begin():
            await session.execute(
                insert(Payment)
                .values(
                    id=new_id("pay"),
                    organization_id=event.organization_id,
                    invoice_id=invoice.id,
                    customer_id=invoice.customer_id,
                    amount_cents=invoice.total_amount_cents,
                    currency=invoice.currency,
                    status=status,
                )
                .on_conflict_do_nothing()
            )

    async def updated(self, event: events_pb2.InvoiceUpdated) -> None:
        """A voided invoice owes nothing: what it asked is cancelled, unless a charge took it."""
        if event.invoice.status == invoices_pb2.INVOICE_STATUS_VOIDED:
            await self.closing.voided(event.organization_id, event.invoice)
