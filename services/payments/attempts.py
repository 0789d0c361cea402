"""Payment attempts: each charge of a payment at the provider, stored and
committed before the provider is called.

    in_flight --> succeeded | failed | rejected     final
              --> requires_action | unknown         open: may still move money
    open, and nobody talking to the provider --claim--> in_flight

At most one attempt of a payment is open (a unique partial index holds it),
and every change to a payment's attempts is made under the payment's row
lock. A claim (a token and its time) names who talks to the provider for an
in_flight attempt: only its holder records the outcome. A claim older than
the provider's deadline plus a margin was left by a process that died or
hung, and may be taken over, to look the attempt up at the provider.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.common.errors import FailedPrecondition
from services.common.ids import new_id
from services.common.timestamps import utcnow
from services.payments.models import (
    PAYMENT_FAILED,
    PAYMENT_REQUIRES_ACTION,
    PAYMENT_SUCCEEDED,
    Payment,
    PaymentAttempt,
    PaymentMethod,
)
from services.payments.stripe_amounts import stripe_amount
from services.payments.stripe_charges import FAILED, REQUIRES_ACTION, SUCCEEDED, UNKNOWN, IntentRequest, Outcome

IN_FLIGHT = "in_flight"
# Stripe's decline of an off-session charge the customer's bank wants authenticated (3-D Secure).
AUTHENTICATION_REQUIRED = "authentication_required"
OPEN = (IN_FLIGHT, UNKNOWN, REQUIRES_ACTION)
# What an attempt's outcome makes of its payment; other outcomes leave the payment as it was.
PAYMENT_STATUS = {SUCCEEDED: PAYMENT_SUCCEEDED, FAILED: PAYMENT_FAILED, REQUIRES_ACTION: PAYMENT_REQUIRES_ACTION}


@dataclass(frozen=True)
class Claim:
    """The right to talk to the provider about one attempt, and what to ask."""

    payment_id: str
    attempt_id: str
    token: str
    intent_id: str  # the provider's intent, when known
    sent: bool  # the attempt may have reached the provider before
    request: IntentRequest


def in_progress(invoice_id: str) -> FailedPrecondition:
    return FailedPrecondition(
        f"a charge of invoice {invoice_id!r} is under way at the payment provider; retry when it has ended",
        field="invoice_id",
        reason="PAYMENT_IN_PROGRESS",
    )


async def latest(session: AsyncSession, payment: Payment) -> PaymentAttempt | None:
    """The payment's newest attempt: the only one that can be open or succeeded."""
    query = (
        select(PaymentAttempt)
        .where(PaymentAttempt.payment_id == payment.id)
        .order_by(PaymentAttempt.create_time.desc(), PaymentAttempt.id.desc())
        .limit(1)
    )
    return (await session.execute(query)).scalar_one_or_none()


def claimable(attempt: PaymentAttempt, stale_after: timedelta) -> bool:
    """An open attempt nobody is talking to the provider about."""
    return attempt.status != IN_FLIGHT or attempt.claim_time < utcnow() - stale_after


def _claim(attempt: PaymentAttempt, sent: bool) -> Claim:
    attempt.status, attempt.claim_token, attempt.claim_time = IN_FLIGHT, secrets.token_hex(16), utcnow()
    request = IntentRequest(
        attempt_id=attempt.id,
        invoice_id=attempt.invoice_id,
        organization_id=attempt.organization_id,
        amount=attempt.provider_amount,
        currency=attempt.currency,
        customer=attempt.provider_customer_id,
        payment_method=attempt.provider_payment_method,
        idempotency_key=attempt.idempotency_key,
        since=attempt.create_time,
    )
    return Claim(attempt.payment_id, attempt.id, attempt.claim_token, attempt.provider_payment_id, sent, request)


def claim(attempt: PaymentAttempt) -> Claim:
    """Takes over an open attempt, which may have reached the provider."""
    return _claim(attempt, sent=True)


def _new(payment: Payment, trigger: str, customer: str, method: str, **state: object) -> PaymentAttempt:
    """The payment's next attempt: what it asks now, in the provider's units too."""
    attempt_id = new_id("att")
    payment.attempt_count += 1
    converted = stripe_amount(payment.amount_cents, payment.currency)
    return PaymentAttempt(
        id=attempt_id,
        organization_id=payment.organization_id,
        payment_id=payment.id,
        invoice_id=payment.invoice_id,
        idempotency_key=f"bxb-{attempt_id}",
        amount_cents=payment.amount_cents,
        provider_amount=converted.amount,
        uncharged_cents=converted.uncharged_cents,
        currency=payment.currency,
        provider_customer_id=customer,
        provider_payment_method=method,
        trigger=trigger,
        create_time=utcnow(),
        **state,
    )


def start(session: AsyncSession, payment: Payment, method: PaymentMethod, trigger: str) -> Claim:
    """A new attempt charging the payment's amount to `method`, claimed;
    `trigger` says why (a PaymentAttemptTrigger name)."""
    attempt = _new(payment, trigger, method.provider_customer_id, method.provider_payment_method)
    session.add(attempt)
    return _claim(attempt, sent=False)


def paid_elsewhere(payment: Payment, intent_id: str, trigger: str) -> PaymentAttempt:
    """An attempt for money the customer paid on their own (a payment link's
    intent), open until its success is recorded."""
    state = {"status": UNKNOWN, "provider_payment_id": intent_id, "claim_token": "", "claim_time": utcnow()}
    return _new(payment, trigger, "", "", **state)


def applies(attempt: PaymentAttempt, outcome: Outcome) -> bool:
    """Whether an outcome moves the attempt on, whatever order the provider's
    news arrive in: a success is final (money moved), a decline ends only an
    open attempt, and a wait for the customer only one not yet answered."""
    if attempt.status == SUCCEEDED:
        return False
    if outcome.status == SUCCEEDED:
        return True
    if outcome.status == REQUIRES_ACTION:
        return attempt.status in (IN_FLIGHT, UNKNOWN)
    return attempt.status in OPEN


def record(attempt: PaymentAttempt, payment: Payment, outcome: Outcome) -> bool:
    """Stores the outcome on the attempt and what it makes of the payment,
    when it applies; whether the payment changed."""
    if not applies(attempt, outcome):
        return False
    attempt.status = outcome.status
    attempt.provider_payment_id = outcome.provider_payment_id or attempt.provider_payment_id
    attempt.failure_reason, attempt.failure_message = outcome.reason[:100], outcome.message[:500]
    if outcome.status not in PAYMENT_STATUS:  # rejected or unknown: the customer's payment did not fail
        return False
    payment.status = PAYMENT_STATUS[outcome.status]
    if outcome.reason == AUTHENTICATION_REQUIRED:  # the bank wants the customer there: only they can pay it now
        payment.status = PAYMENT_REQUIRES_ACTION
    payment.provider_payment_id = outcome.provider_payment_id if outcome.status != FAILED else ""
    failed = outcome.status == FAILED
    payment.failure_message, payment.failure_reason = (
        (attempt.failure_message, attempt.failure_reason) if failed else ("", "")
    )
    payment.payment_url = outcome.action_url if outcome.status == REQUIRES_ACTION else ""
    return True


async def abandoned(sessions: async_sessionmaker[AsyncSession], stale_after: timedelta) -> list[str]:
    """Payments whose open attempt nobody has talked to the provider about
    for `stale_after`: left in flight by a process that died, or unknown."""
    query = select(PaymentAttempt.payment_id).where(
        PaymentAttempt.status.in_((IN_FLIGHT, UNKNOWN)), PaymentAttempt.claim_time < utcnow() - stale_after
    )
    async with sessions() as session:
        return list((await session.execute(query)).scalars())
