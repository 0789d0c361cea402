"""Refunds: a refund credit note recorded as money to give back, and what
Stripe's webhooks say of refunds, reconciled with the payment.

bxb.invoicing.v1.credit_note_created of kind REFUND records one `refunds`
row under the payment's row lock: PENDING and unsent, with its idempotency
key (`bxb-refund-{id}`) and the PaymentIntent that collected the money; the
refunder (refunder.py) sends it. No Stripe call is made here. A redelivered
event finds its row (one per credit note) and changes nothing. A refund with
nothing to give back at Stripe (the payment collected without a charge
there, or an amount below Stripe's smallest unit: see stripe_amounts.py) is
SUCCEEDED at once, with no provider refund: what bxb collected outside Stripe
is given back outside it too.

The payment's `refunded_amount_cents` is the sum of its SUCCEEDED refunds;
while it stands collected, its status follows: PARTIALLY_REFUNDED, then
REFUNDED once everything collected is given back. Each change is announced
(payment_updated) in the same transaction.

Webhooks (`handlers()`): a refund of one of the organization's charges is
found by its Stripe id or its `bxb_refund_id` metadata and moves forward only
(pending, succeeded, failed: Stripe may fail a refund that had succeeded,
never the reverse), so redelivered and out-of-order events change nothing.
A refund made at Stripe itself (its dashboard: no bxb metadata) is recorded
too, with no credit note, so the payment tells what Stripe gave back; the
invoice then disagrees with it, which is logged. A charge of another
organization, or unknown, changes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bxb.invoicing.v1 import credit_notes_pb2, events_pb2
from services.common import outbox
from services.common.ids import new_id
from services.common.timestamps import utcnow
from services.payments.charging import announce
from services.payments.intent_events import collected_status
from services.payments.models import (
    PAYMENT_PARTIALLY_REFUNDED,
    PAYMENT_REFUNDED,
    PAYMENT_SUCCEEDED,
    REFUND_FAILED,
    REFUND_PENDING,
    REFUND_SUCCEEDED,
    Payment,
    PaymentAttempt,
    Refund,
)
from services.payments.stripe_amounts import minor_units, stripe_amount
from services.payments.stripe_charges import SUCCEEDED

log = logging.getLogger("bxb.payments.refunds")

Handler = Callable[[str, dict[str, Any], int], Awaitable[None]]
CREDIT_NOTE_CREATED = "bxb.invoicing.v1.credit_note_created"
# A payment that collected: its status follows its refunds.
COLLECTED = (PAYMENT_SUCCEEDED, PAYMENT_PARTIALLY_REFUNDED, PAYMENT_REFUNDED)
# Stripe's refund statuses as ours (pending and requires_action: not finished).
STATUSES = {"succeeded": REFUND_SUCCEEDED, "failed": REFUND_FAILED, "canceled": REFUND_FAILED}
# How far along a refund is: it only moves forward.
RANK = {REFUND_PENDING: 0, REFUND_SUCCEEDED: 1, REFUND_FAILED: 2}


async def tally(session: AsyncSession, payment: Payment) -> None:
    """The payment's refunded amount and status from its refunds, announced
    when they changed; the caller holds the payment's row lock."""
    query = select(func.coalesce(func.sum(Refund.amount_cents), 0)).where(
        Refund.payment_id == payment.id, Refund.status == REFUND_SUCCEEDED
    )
    before = (payment.refunded_amount_cents, payment.status)
    payment.refunded_amount_cents = int((await session.execute(query)).scalar_one())
    if payment.status in COLLECTED:  # not while disputed, say: a dispute won restores it (collected_status)
        payment.status = collected_status(payment)
    if (payment.refunded_amount_cents, payment.status) != before:
        await announce(session, payment)


async def charged(session: AsyncSession, org: str, intent: str) -> Payment | None:
    """The organization's payment that a succeeded charge (`intent`) collected, locked."""
    query = select(PaymentAttempt.payment_id).where(
        PaymentAttempt.organization_id == org,
        PaymentAttempt.provider_payment_id == intent,
        PaymentAttempt.status == SUCCEEDED,
    )
    payment_id = (await session.execute(query)).scalar_one_or_none() if intent else None
    if payment_id is None:
        return None
    return await session.get_one(Payment, payment_id, with_for_update=True)


def _id(value: Any) -> str:
    """A Stripe reference as its id, whether expanded (an object) or not."""
    if isinstance(value, dict):
        return str(value.get("id") or "")
    return str(value or "")


class Refunds:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], relay: outbox.OutboxRelay, wake: Callable[[], None]):
        self.sessions = sessions
        self.relay = relay  # publishes payment_updated
        self.wake = wake  # the refunder: a refund is due

    async def created(self, event: events_pb2.CreditNoteCreated) -> None:
        """A refund credit note recorded as a refund to send (or given back at once)."""
        note, org = event.credit_note, event.organization_id
        if note.kind != credit_notes_pb2.CREDIT_NOTE_KIND_REFUND or note.amount_cents <= 0:
            return
        async with self.sessions() as session, session.begin():
            query = select(Payment).where(Payment.organization_id == org, Payment.invoice_id == note.invoice_id)
            payment = (await session.execute(query.with_for_update())).scalar_one_or_none()
            if payment is None:  # invoicing pays an invoice only once payments says so
                log.warning("refund credit note %s: invoice %s has no payment here", note.id, note.invoice_id)
                return
            known = select(Refund.id).where(Refund.organization_id == org, Refund.credit_note_id == note.id)
            if (await session.execute(known)).first() is not None:
                return  # redelivered
            refund = self._refund(payment, note, await self._charge(session, payment))
            session.add(refund)
            if refund.status == REFUND_SUCCEEDED:
                await tally(session, payment)
        self.relay.wake()
        self.wake()

    @staticmethod
    async def _charge(session: AsyncSession, payment: Payment) -> str:
        """The PaymentIntent that collected the payment; "" when none did."""
        query = select(PaymentAttempt.provider_payment_id).where(
            PaymentAttempt.payment_id == payment.id, PaymentAttempt.status == SUCCEEDED
        )
        return (await session.execute(query.limit(1))).scalar_one_or_none() or ""

    @staticmethod
    def _refund(payment: Payment, note: credit_notes_pb2.CreditNote, intent: str) -> Refund:
        refund_id = new_id("rfd")
        amount = stripe_amount(note.amount_cents, payment.currency).amount
        at_stripe = bool(intent) and amount > 0
        return Refund(
            id=refund_id,
            organization_id=payment.organization_id,
            payment_id=payment.id,
            invoice_id=payment.invoice_id,
            credit_note_id=note.id,
            idempotency_key=f"bxb-refund-{refund_id}",
            amount_cents=note.amount_cents,
            provider_amount=amount,
            currency=payment.currency,
            provider_payment_id=intent,
            status=REFUND_PENDING if at_stripe else REFUND_SUCCEEDED,
            sent=False,
            next_attempt_time=utcnow() if at_stripe else None,
        )

    def handlers(self) -> dict[str, Handler]:
        """Stripe webhook handlers by event type, for the dispatcher (webhooks.py)."""
        return {
            "charge.refunded": self.charge_refunded,
            "charge.refund.updated": self.refund_updated,
            "refund.created": self.refund_updated,
            "refund.updated": self.refund_updated,
            "refund.failed": self.refund_updated,
        }

    async def charge_refunded(self, org: str, obj: dict[str, Any], created: int) -> None:
        """A Charge whose refunds changed: each of those it lists reconciled.
        (Stripe lists them from API version 2022-11-15 only when expanded;
        the refund.* events carry each one then.)"""
        intent = _id(obj.get("payment_intent"))
        for refund in (obj.get("refunds") or {}).get("data") or []:
            await self.reconcile(org, intent, refund)

    async def refund_updated(self, org: str, obj: dict[str, Any], created: int) -> None:
        """A Refund created or changed at Stripe."""
        await self.reconcile(org, _id(obj.get("payment_intent")), obj)

    async def reconcile(self, org: str, intent: str, stripe_refund: dict[str, Any]) -> None:
        """What Stripe says of one refund of `intent`, applied to the
        organization's record of it (made when it has none)."""
        refund_id = str(stripe_refund.get("id") or "")
        bxb_id = str((stripe_refund.get("metadata") or {}).get("bxb_refund_id") or "")
        status = STATUSES.get(str(stripe_refund.get("status")), REFUND_PENDING)
        async with self.sessions() as session, session.begin():
            payment = await charged(session, org, intent)
            if payment is None or not refund_id:
                log.info("refund %s: no charge %r of organization %s; nothing changes", refund_id, intent, org)
                return
            query = select(Refund).where(
                Refund.payment_id == payment.id,
                or_(Refund.provider_refund_id == refund_id, Refund.id == bxb_id),
            )
            refund = (await session.execute(query)).scalars().first()
            if refund is None and bxb_id:
                log.warning("refund %s names bxb refund %s, unknown to organization %s", refund_id, bxb_id, org)
                return
            if refund is None:
                session.add(self._external(payment, intent, refund_id, status, stripe_refund))
            elif RANK[status] > RANK[refund.status]:
                refund.status, refund.provider_refund_id = status, refund_id
                refund.next_attempt_time = None
                refund.failure_message = str(stripe_refund.get("failure_reason") or "")[:500]
            elif not refund.provider_refund_id:  # sent, its answer lost: Stripe's id at least
                refund.provider_refund_id = refund_id
            await tally(session, payment)
        self.relay.wake()

    @staticmethod
    def _external(payment: Payment, intent: str, refund_id: str, status: str, stripe_refund: dict[str, Any]) -> Refund:
        """A refund made at Stripe without bxb, to record: no credit note."""
        amount = int(stripe_refund.get("amount") or 0)
        log.warning(
            "refund %s of invoice %s was made at Stripe, not by a credit note: the invoice does not show it",
            refund_id,
            payment.invoice_id,
        )
        return Refund(
            id=new_id("rfd"),
            organization_id=payment.organization_id,
            payment_id=payment.id,
            invoice_id=payment.invoice_id,
            credit_note_id="",
            idempotency_key=f"stripe-{refund_id}",
            amount_cents=minor_units(amount, payment.currency),
            provider_amount=amount,
            currency=payment.currency,
            provider_payment_id=intent,
            status=status,
            sent=True,
            provider_refund_id=refund_id,
            failure_message=str(stripe_refund.get("failure_reason") or "")[:500],
        )
