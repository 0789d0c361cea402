"""Emails to the customer about its payment, for organizations whose
dunning campaign sends them: each decline (with the invoice PDF and a
payment link), a charge waiting for 3-D Secure (with its page), and giving
up (UNCOLLECTIBLE). Invoicing writes and sends them (SendInvoiceEmail, with
the PDF it renders).

Fed by payments' own payment_updated (a durable consumer, so a notice
survives a restart and is retried); an announcement of a state the payment
has since left is skipped (the newer state has its own). A notice is
recorded once sent (payment_notices: payment, charge count, kind); a
process dying between the two sends it again: at least once.

The payment link is made here, before the email: a Checkout Session for
what the invoice still asks, stored on the payment only while it is
declined (or declined for want of the customer's authentication: real
Stripe's answer to an off-session charge needing 3-D Secure) with no charge
open (links.py says why that keeps exactly one
collection); a session made too late is expired at once.
"""

from __future__ import annotations

import logging

import grpc
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bxb.invoicing.v1 import invoices_pb2
from bxb.payments.v1 import events_pb2
from bxb.payments.v1 import payments_pb2 as pb
from services.common import peers
from services.common.errors import Unavailable
from services.common.outbox import OutboxRelay
from services.payments import attempts, dunning
from services.payments.charging import PAYMENT_UPDATED, announce
from services.payments.links import LinkRequest, PaymentLinks
from services.payments.models import PAYMENT_FAILED, PAYMENT_REQUIRES_ACTION, Payment, PaymentNotice
from services.payments.stripe_amounts import stripe_amount

log = logging.getLogger("bxb.payments.notices")
# Payments a link is made for: declined, or declined for want of the customer's authentication.
WITH_LINK = (PAYMENT_FAILED, PAYMENT_REQUIRES_ACTION)

KINDS = {
    pb.PAYMENT_STATUS_FAILED: invoices_pb2.INVOICE_EMAIL_KIND_PAYMENT_FAILED,
    pb.PAYMENT_STATUS_REQUIRES_ACTION: invoices_pb2.INVOICE_EMAIL_KIND_PAYMENT_REQUIRES_ACTION,
    pb.PAYMENT_STATUS_UNCOLLECTIBLE: invoices_pb2.INVOICE_EMAIL_KIND_PAYMENT_UNCOLLECTIBLE,
}


class Notices:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        relay: OutboxRelay,
        invoicing: peers.Invoicing,
        links: PaymentLinks,
        return_url: str,
    ):
        self.sessions = sessions
        self.relay = relay
        self.invoicing = invoicing
        self.links = links
        self.return_url = return_url  # where a payment link sends the customer back; no links without one

    async def handle(self, subject: str, payload: bytes) -> None:
        if subject != PAYMENT_UPDATED:
            return
        event = events_pb2.PaymentUpdated.FromString(payload)
        kind = KINDS.get(event.payment.status)
        if kind is None:
            return
        org = event.organization_id
        async with self.sessions() as session:
            payment = await session.get(Payment, event.payment.id)
            if payment is None or payment.organization_id != org or payment.version != event.payment.version:
                return  # not this organization's, or moved on since: its newer state has its own announcement
            campaign = await dunning.campaign_of(session, payment)
            if campaign is None or not campaign.send_emails:
                return
            kind_name = invoices_pb2.InvoiceEmailKind.Name(kind)
            if await session.get(PaymentNotice, (payment.id, payment.attempt_count, kind_name)) is not None:
                return
            latest = await attempts.latest(session, payment)
        url = payment.payment_url
        if payment.status in WITH_LINK and not url and latest is not None and self.return_url:
            url = await self._link(payment, latest.provider_customer_id)
        if not url and kind != invoices_pb2.INVOICE_EMAIL_KIND_PAYMENT_UNCOLLECTIBLE:
            log.info("payment %s: no payment link to email (set BXB_PAYMENT_RETURN_URL)", payment.id)
            return
        request = invoices_pb2.SendInvoiceEmailRequest(
            id=payment.invoice_id,
            kind=kind,
            payment_url=url,
            attempt=payment.attempt_count,
            max_attempts=dunning.most_attempts(campaign),
        )
        try:
            await self.invoicing.send_invoice_email(org, request)
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.FAILED_PRECONDITION:
                raise Unavailable(f"invoicing could not send the payment email: {error.code().name}") from None
            log.info("payment %s: its invoice takes no payment email now: %s", payment.id, error.details())
        async with self.sessions() as session, session.begin():
            await session.execute(
                insert(PaymentNotice)
                .values(payment_id=payment.id, attempt_count=payment.attempt_count, kind=kind_name, organization_id=org)
                .on_conflict_do_nothing()
            )

    async def _link(self, payment: Payment, customer: str) -> str:
        """A payment link for the declined payment, stored on it; "" when the payment moved on meanwhile."""
        request = LinkRequest(
            organization_id=payment.organization_id,
            payment_id=payment.id,
            invoice_id=payment.invoice_id,
            attempt_count=payment.attempt_count,
            amount=stripe_amount(payment.amount_cents, payment.currency).amount,
            currency=payment.currency,
            customer=customer,
            return_url=self.return_url,
        )
        link_id, url = await self.links.create(request)
        async with self.sessions() as session, session.begin():
            current = await session.get_one(Payment, payment.id, with_for_update=True)
            latest = await attempts.latest(session, current)
            still = current.status in WITH_LINK and current.attempt_count == payment.attempt_count
            if still and not current.payment_link_id and (latest is None or latest.status not in attempts.OPEN):
                current.payment_link_id, current.payment_url = link_id, url
                await announce(session, current)
                stored = True
            else:
                stored = False
        if not stored:
            await self.links.close(payment.organization_id, link_id)  # nobody has seen it: no one can have paid
            return ""
        self.relay.wake()
        return url
