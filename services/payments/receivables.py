"""Records what each finalized invoice asks the customer to pay.

Fed by bxb.invoicing.v1.invoice_finalized; the unique (organization, invoice)
key makes a redelivered event a no-op.
"""

from __future__ import annotations

from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import async_sessionmaker

from bxb.invoicing.v1 import events_pb2
from services.common.ids import new_id
from services.payments.models import Payment

INVOICE_FINALIZED = "bxb.invoicing.v1.invoice_finalized"


class Receivables:
    def __init__(self, sessions: async_sessionmaker):
        self.sessions = sessions

    async def handle(self, subject: str, payload: bytes) -> None:
        if subject != INVOICE_FINALIZED:
            return  # a newer invoicing may announce facts this version ignores
        event = events_pb2.InvoiceFinalized.FromString(payload)
        invoice = event.invoice
        status = "PAYMENT_STATUS_PENDING" if invoice.total_amount_cents > 0 else "PAYMENT_STATUS_SUCCEEDED"
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
