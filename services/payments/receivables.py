"""Records what each finalized invoice asks the customer to pay, and cancels
it when the invoice is voided (closing.py: as invoicing asked before voiding);
refund credit notes go to refunds.py.

A finalized invoice with an amount due is scheduled for automatic
collection at once (its customer's time) when its customer collects
automatically: payments knows it at the provider and auto_collect is not
off; the collector (collection.py) charges it, or drops it when the
customer has no payment method. Fed by bxb.invoicing.v1.invoice_finalized
and invoice_updated; the unique (organization, invoice) key makes a
redelivered event a no-op.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bxb.invoicing.v1 import events_pb2, invoices_pb2
from services.common.timestamps import from_proto, utcnow
from services.payments.charging import receivable
from services.payments.closing import Closing
from services.payments.models import PAYMENT_PENDING, ProviderCustomer
from services.payments.refunds import CREDIT_NOTE_CREATED, Refunds

INVOICE_FINALIZED = "bxb.invoicing.v1.invoice_finalized"
INVOICE_UPDATED = "bxb.invoicing.v1.invoice_updated"


class Receivables:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], wake: Callable[[], None], refunds: Refunds):
        self.sessions = sessions
        self.closing = Closing(sessions)
        self.wake = wake  # the collector's: a payment is due
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
        invoice, org = event.invoice, event.organization_id
        async with self.sessions() as session, session.begin():
            payment = await receivable(session, org, invoice)
            fresh = payment.status == PAYMENT_PENDING and payment.attempt_count == 0
            if fresh and payment.next_attempt_time is None and await self._collects(session, org, invoice.customer_id):
                issued = from_proto(invoice.issue_time) if invoice.HasField("issue_time") else utcnow()
                payment.next_attempt_time = issued
        if fresh and payment.next_attempt_time is not None:
            self.wake()

    @staticmethod
    async def _collects(session: AsyncSession, org: str, customer_id: str) -> bool:
        """Whether the customer's invoices are charged automatically."""
        query = select(ProviderCustomer.auto_collect).where(
            ProviderCustomer.organization_id == org, ProviderCustomer.customer_id == customer_id
        )
        found = (await session.execute(query)).one_or_none()
        return found is not None and found.auto_collect is not False

    async def updated(self, event: events_pb2.InvoiceUpdated) -> None:
        """A voided invoice owes nothing: what it asked is cancelled, unless a charge took it."""
        if event.invoice.status == invoices_pb2.INVOICE_STATUS_VOIDED:
            await self.closing.voided(event.organization_id, event.invoice)
