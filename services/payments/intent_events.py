"""What Stripe's webhooks say of bxb's charges: PaymentIntents settling
after the call that made them (3-D Secure completed or failed, a late
decline, an answer that was lost), payment links paid, and disputes.

Each handler finds its payment within the calling organization only: by the
ids bxb put in the object's metadata (an attempt's intent may be announced
before the call that made it returns, with its id not yet recorded), else
by the intent's id. Metadata naming another organization, or an object
bxb does not know, changes nothing. Outcomes go through
charging.settle_outcome under the payment's lock, whose rules make any
delivery order safe: a success is final, a decline ends only an open
attempt, a wait for the customer only an unanswered one.

A dispute takes the payment out of collection (DISPUTED: no dunning for it,
and none for the customer's other invoices while it lasts); a dispute won
gives the payment back its collected state, a lost one stays DISPUTED.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.common.outbox import OutboxRelay
from services.payments.charging import announce, link_closed, paid_by_link, settle_outcome
from services.payments.models import (
    PAYMENT_DISPUTED,
    PAYMENT_PARTIALLY_REFUNDED,
    PAYMENT_REFUNDED,
    PAYMENT_SUCCEEDED,
    Payment,
    PaymentAttempt,
)
from services.payments.stripe_charges import FAILED, REQUIRES_ACTION, SUCCEEDED, Outcome
from services.payments.webhooks import Handler

log = logging.getLogger("bxb.payments.intent_events")
# Dispute statuses that leave the money with the merchant.
WON = ("won", "warning_closed")


def _metadata(obj: dict[str, Any]) -> dict[str, str]:
    found = obj.get("metadata")
    return found if isinstance(found, dict) else {}


def _theirs(org: str, obj: dict[str, Any]) -> bool:
    """Whether the object's metadata names another organization."""
    named = _metadata(obj).get("bxb_organization_id")
    return named is not None and named != org


def _intent_outcome(kind: str, intent: dict[str, Any]) -> Outcome:
    intent_id = str(intent.get("id", ""))
    if kind == SUCCEEDED:
        return Outcome(SUCCEEDED, intent_id)
    if kind == REQUIRES_ACTION:
        redirect = (intent.get("next_action") or {}).get("redirect_to_url") or {}
        return Outcome(REQUIRES_ACTION, intent_id, action_url=str(redirect.get("url") or ""))
    error = intent.get("last_payment_error") or {}
    reason = str(error.get("decline_code") or error.get("code") or "payment_failed")
    return Outcome(FAILED, intent_id, reason, str(error.get("message") or "the payment failed"))


class IntentEvents:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], relay: OutboxRelay, wake: Callable[[], None]):
        self.sessions = sessions
        self.relay = relay
        self.wake = wake  # the collector's: dunning may have fallen due

    def handlers(self) -> dict[str, Handler]:
        return {
            "payment_intent.succeeded": self.succeeded,
            "payment_intent.payment_failed": self.payment_failed,
            "payment_intent.requires_action": self.requires_action,
            "checkout.session.completed": self.checkout_completed,
            "charge.dispute.created": self.dispute_created,
            "charge.dispute.closed": self.dispute_closed,
        }

    async def succeeded(self, org: str, intent: dict[str, Any], created: int) -> None:
        await self._settle(org, intent, SUCCEEDED)

    async def payment_failed(self, org: str, intent: dict[str, Any], created: int) -> None:
        await self._settle(org, intent, FAILED)

    async def requires_action(self, org: str, intent: dict[str, Any], created: int) -> None:
        await self._settle(org, intent, REQUIRES_ACTION)

    async def _settle(self, org: str, intent: dict[str, Any], kind: str) -> None:
        if _theirs(org, intent):
            return
        metadata, intent_id = _metadata(intent), str(intent.get("id", ""))
        async with self.sessions() as session, session.begin():
            attempt = await self._attempt(session, org, metadata.get("bxb_attempt_id", ""), intent_id)
            if attempt is not None:
                payment = await session.get_one(Payment, attempt.payment_id, with_for_update=True)
                await session.refresh(attempt)  # as it stands under the payment's lock
                await settle_outcome(session, payment, attempt, _intent_outcome(kind, intent))
            elif kind == SUCCEEDED and metadata.get("bxb_payment_id"):  # a payment link's intent
                linked = await self._payment(session, org, metadata["bxb_payment_id"])
                if linked is None:
                    return
                await paid_by_link(session, linked, intent_id)
            else:
                log.info("stripe event for intent %s of no bxb attempt of %s: ignored", intent_id, org)
                return
        self.relay.wake()
        self.wake()

    @staticmethod
    async def _attempt(session: AsyncSession, org: str, attempt_id: str, intent_id: str) -> PaymentAttempt | None:
        found = or_(PaymentAttempt.id == attempt_id, PaymentAttempt.provider_payment_id == intent_id)
        query = select(PaymentAttempt).where(PaymentAttempt.organization_id == org, found).limit(1)
        return (await session.execute(query)).scalar_one_or_none() if intent_id else None

    @staticmethod
    async def _payment(session: AsyncSession, org: str, payment_id: str) -> Payment | None:
        query = select(Payment).where(Payment.organization_id == org, Payment.id == payment_id)
        return (await session.execute(query.with_for_update())).scalar_one_or_none()

    async def checkout_completed(self, org: str, checkout: dict[str, Any], created: int) -> None:
        """A payment link paid: its intent is the payment's success."""
        metadata, intent = _metadata(checkout), checkout.get("payment_intent")
        if _theirs(org, checkout) or not metadata.get("bxb_payment_id") or not isinstance(intent, str):
            return
        async with self.sessions() as session, session.begin():
            payment = await self._payment(session, org, metadata["bxb_payment_id"])
            if payment is None:
                return
            if payment.payment_link_id == checkout.get("id"):
                await link_closed(session, payment, intent)
            else:
                await paid_by_link(session, payment, intent)
        self.relay.wake()

    async def dispute_created(self, org: str, dispute: dict[str, Any], created: int) -> None:
        await self._disputed(org, dispute, closed=False)

    async def dispute_closed(self, org: str, dispute: dict[str, Any], created: int) -> None:
        await self._disputed(org, dispute, closed=True)

    async def _disputed(self, org: str, dispute: dict[str, Any], closed: bool) -> None:
        intent_id = dispute.get("payment_intent")
        if not isinstance(intent_id, str) or not intent_id:
            return
        async with self.sessions() as session, session.begin():
            query = select(Payment).where(Payment.organization_id == org, Payment.provider_payment_id == intent_id)
            payment = (await session.execute(query.with_for_update())).scalar_one_or_none()
            if payment is None:
                log.info("dispute %s of intent %s of no bxb payment of %s: ignored", dispute.get("id"), intent_id, org)
                return
            status = str(dispute.get("status", ""))
            if closed and status in WON:
                if payment.status != PAYMENT_DISPUTED:
                    return
                payment.status = collected_status(payment)
                payment.failure_message = payment.failure_reason = ""
            else:
                payment.status = PAYMENT_DISPUTED
                payment.next_attempt_time = None
                payment.failure_reason = str(dispute.get("reason") or "disputed")[:100]
                payment.failure_message = f"the customer disputed the charge ({status or 'open'})"[:500]
            await announce(session, payment)
        self.relay.wake()
        self.wake()


def collected_status(payment: Payment) -> str:
    """A collected payment's status by what refunds gave back."""
    if payment.refunded_amount_cents <= 0:
        return PAYMENT_SUCCEEDED
    return PAYMENT_REFUNDED if payment.refunded_amount_cents >= payment.amount_cents else PAYMENT_PARTIALLY_REFUNDED
