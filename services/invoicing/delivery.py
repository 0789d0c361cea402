"""Invoices leave the service: as a PDF, and by email with the PDF attached.

An email goes to the addresses given, else to the customer's email address
as the catalog knows it. Only finalized invoices (with a number) are
rendered: a draft, computed or stored in its grace period, still changes.

Besides the invoice itself, an email may be about its payment (`kind`; the
payments service's dunning sends these): a declined charge or one awaiting
the customer's authentication gives the page to pay or authenticate at
(payment_url, required for those two), and which attempt of how many it was;
the last says dunning gave up. A payment email is for an invoice still owed
(finalized): once paid, voided or archived there is nothing to ask for.
"""

from __future__ import annotations

import asyncio
import re
from urllib.parse import urlsplit

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
FAILED, ACTION = pb.INVOICE_EMAIL_KIND_PAYMENT_FAILED, pb.INVOICE_EMAIL_KIND_PAYMENT_REQUIRES_ACTION
UNCOLLECTIBLE = pb.INVOICE_EMAIL_KIND_PAYMENT_UNCOLLECTIBLE
# Each payment email's subject, by kind ({} is the invoice's number).
SUBJECTS = {
    FAILED: "Payment failed for invoice {}",
    ACTION: "Action required to pay invoice {}",
    UNCOLLECTIBLE: "Payment could not be collected for invoice {}",
}
# What each payment email says first, and what its link is for.
OPENINGS = {
    FAILED: ("We could not collect the payment of invoice {}.", "Pay here"),
    ACTION: ("Your bank asks you to confirm the payment of invoice {}.", "Confirm it here"),
    UNCOLLECTIBLE: ("We could not collect the payment of invoice {} and will not try again.", "Pay here"),
}


def payment_link(request: pb.SendInvoiceEmailRequest) -> str:
    """The payment email's link, checked: an http(s) URL without spaces,
    given for a declined charge or one awaiting authentication."""
    url = request.payment_url
    if not url:
        if request.kind != UNCOLLECTIBLE:
            kind = pb.InvoiceEmailKind.Name(request.kind).removeprefix("INVOICE_EMAIL_KIND_").lower()
            raise InvalidArgument(f"payment_url is required for a {kind} email", field="payment_url")
        return ""
    parts = urlsplit(url)
    if (
        parts.scheme not in ("https", "http")
        or not parts.netloc
        or any(c.isspace() or not c.isprintable() for c in url)
    ):
        raise InvalidArgument("payment_url must be an http(s) URL", field="payment_url")
    return url


def payment_text(invoice: pb.Invoice, request: pb.SendInvoiceEmailRequest, url: str) -> str:
    """The body of a payment email: what happened, what is due, which
    attempt of how many (when said), and the link (when there is one)."""
    opening, action = OPENINGS[request.kind]
    lines = [opening.format(invoice.number), f"Amount due: {money(invoice.amount_due_cents, invoice.currency)}"]
    if request.attempt:
        of = f" of {request.max_attempts}" if request.max_attempts else ""
        lines.append(f"This was attempt {request.attempt}{of}.")
    if url:
        lines += ["", f"{action}: {url}"]
    return "\n".join([*lines, "", "The invoice is attached as a PDF.", ""])


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
        if request.attempt and request.max_attempts and request.attempt > request.max_attempts:
            raise InvalidArgument("attempt must not be more than max_attempts", field="attempt")
        url = payment_link(request) if request.kind else ""
        invoice = await self.invoice(org, request.id)
        if request.kind and invoice.status != pb.INVOICE_STATUS_FINALIZED:
            status = pb.InvoiceStatus.Name(invoice.status)
            raise invalid_transition(request.id, status, "there is no payment to ask for")
        rendered = await self._render(invoice)
        to = list(request.to) or [await self._customer_email(org, invoice.customer_id)]
        if not to[0]:
            raise FailedPrecondition(
                f"customer {invoice.customer_id!r} has no email address: give `to`", field="to", reason="NO_RECIPIENT"
            )
        if request.kind:
            subject, body = SUBJECTS[request.kind].format(invoice.number), payment_text(invoice, request, url)
        else:
            subject = f"Invoice {invoice.number}"
            body = (
                f"Invoice {invoice.number} for {invoice.customer_id}\n"
                f"Total due: {money(invoice.total_amount_cents, invoice.currency)}\n\n"
                "The invoice is attached as a PDF.\n"
            )
        message_id = await self.mailer.send(to, subject, body, Attachment(rendered.filename, rendered.content))
        return pb.SendInvoiceEmailResponse(to=to, message_id=message_id)
