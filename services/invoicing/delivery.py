"""Invoices leave the service: as a PDF, and by email with the PDF attached.

An email goes to the addresses given, else to the customer's email address
as the catalog knows it. Only finalized invoices (with a number) are
rendered: a draft, computed or stored in its grace period, still changes.
"""

from __future__ import annotations

import asyncio
import re

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bxb.catalog.v1 import customers_pb2
from bxb.invoicing.v1 import invoices_pb2 as pb
from services.common import peers
from services.common.errors import FailedPrecondition, InvalidArgument
from services.invoicing import documents
from services.invoicing.documents import money
from services.invoicing.invoice_view import invoice_proto, stored
from services.invoicing.lifecycle import invalid_transition
from services.invoicing.mailer import Attachment, Mailer

# One address: no spaces, no line breaks (no header injection), one "@" inside.
ADDRESS = re.compile(r"[^\s@,;<>]+@[^\s@,;<>]+\.[^\s@,;<>]+")
MAX_RECIPIENTS = 10


class Delivery:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], mailer: Mailer, catalog: peers.Catalog):
        self.sessions = sessions
        self.mailer = mailer
        self.catalog = catalog

    async def invoice(self, org: str, invoice_id: str) -> pb.Invoice:
        async with self.sessions() as session:
            invoice = await stored(session, org, invoice_id)
        if invoice.status == "INVOICE_STATUS_DRAFT":
            raise invalid_transition(invoice_id, invoice.status, "it is rendered once finalized")
        return invoice_proto(invoice)

    async def pdf(self, org: str, invoice_id: str) -> pb.InvoicePdf:
        return await self._render(await self.invoice(org, invoice_id))

    @staticmethod
    async def _render(invoice: pb.Invoice) -> pb.InvoicePdf:
        content = await asyncio.to_thread(documents.render, invoice)  # CPU work off the event loop
        return pb.InvoicePdf(filename=f"{invoice.number}.pdf", content=content)

    async def _customer_email(self, org: str, customer_id: str) -> str:
        customer = await self.catalog.get_customer(org, customers_pb2.GetCustomerRequest(id=customer_id))
        return customer.email

    async def email(self, org: str, request: pb.SendInvoiceEmailRequest) -> pb.SendInvoiceEmailResponse:
        for index, address in enumerate(request.to):
            if not ADDRESS.fullmatch(address):
                raise InvalidArgument(f"{address!r} is not an email address", field=f"to[{index}]")
        invoice = await self.invoice(org, request.id)
        rendered = await self._render(invoice)
        to = list(request.to) or [await self._customer_email(org, invoice.customer_id)]
        if not to[0]:
            raise FailedPrecondition(
                f"customer {invoice.customer_id!r} has no email address: give `to`", field="to", reason="NO_RECIPIENT"
            )
        body = (
            f"Invoice {invoice.number} for {invoice.customer_id}\n"
            f"Total due: {money(invoice.total_amount_cents, invoice.currency)}\n\n"
            "The invoice is attached as a PDF.\n"
        )
        message_id = await self.mailer.send(
            to, f"Invoice {invoice.number}", body, Attachment(rendered.filename, rendered.content)
        )
        return pb.SendInvoiceEmailResponse(to=to, message_id=message_id)
