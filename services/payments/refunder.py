"""The refunder: sends due refunds to Stripe, exactly once, as charging
sends a charge (charging.py), in three steps:

1. Claim: due PENDING refunds are taken with `FOR UPDATE SKIP LOCKED` (two
   refunders never take the same one), marked sent, and leased (their next
   time is pushed past the deadline plus a margin); committed.
2. Stripe is asked with no transaction open, within its deadline
   (stripe_refunds.settle_refund: one sent before is looked up before
   anything is created, and every creation carries the refund's key).
3. One transaction under the payment's row lock records the outcome and
   tallies the payment (refunds.tally), unless a webhook settled it first.

An unknown outcome (a timeout, Stripe's 5xx, a dropped connection, or no
Stripe account for the organization) is retried after `retry_after` with the
same key; a refund Stripe has not finished is read back after `pending_poll`
(its webhook usually tells first); a process that died after claiming leaves
the lease to expire, and the refund is taken over and looked up the same way.
The loop runs every `interval`, and at once when a refund is recorded (wake).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.common import outbox
from services.common.errors import DomainError
from services.common.timestamps import utcnow
from services.common.worker import Worker
from services.payments.accounts import StripeAccounts
from services.payments.models import REFUND_FAILED, REFUND_PENDING, REFUND_SUCCEEDED, Payment, Refund
from services.payments.refunds import tally
from services.payments.stripe_charges import Unreachable
from services.payments.stripe_refunds import FAILED, PENDING, SUCCEEDED, RefundOutcome, RefundRequest, settle_refund

log = logging.getLogger("bxb.payments.refunder")

UNKNOWN = "unknown"
STATUSES = {SUCCEEDED: REFUND_SUCCEEDED, FAILED: REFUND_FAILED}


@dataclass(frozen=True)
class RefundClaim:
    """The right to talk to Stripe about one refund until its lease ends, and what to ask."""

    payment_id: str
    provider_refund_id: str  # Stripe's refund, when known
    sent: bool  # it may have reached Stripe before
    request: RefundRequest


class Refunder(Worker):
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        relay: outbox.OutboxRelay,
        accounts: StripeAccounts,
        interval: float = 5.0,
        stale_after: float = 50.0,
        retry_after: float = 30.0,
        pending_poll: float = 3600.0,
        batch: int = 20,
    ):
        super().__init__("payments-refunder", interval, self._more, log, "refunder failed; retrying on the next tick")
        self.sessions = sessions
        self.relay = relay  # publishes payment_updated
        self.accounts = accounts  # each organization's Stripe account
        self.lease = timedelta(seconds=stale_after)  # Stripe's deadline plus a margin
        self.retry_after = timedelta(seconds=retry_after)
        self.pending_poll = timedelta(seconds=pending_poll)
        self.batch = batch  # refunds sent together

    async def _more(self) -> bool:
        """Sends one batch; whether it was full (more may be due)."""
        return await self.run_once() == self.batch

    async def run_once(self) -> int:
        """Sends the refunds due now (a batch of them, concurrently); how many."""
        claims = await self._claim()
        await asyncio.gather(*(self._send(claim) for claim in claims))
        return len(claims)

    async def _claim(self) -> list[RefundClaim]:
        now = utcnow()
        query = (
            select(Refund)
            .where(Refund.status == REFUND_PENDING, Refund.next_attempt_time <= now)
            .order_by(Refund.next_attempt_time)
            .limit(self.batch)
            .with_for_update(skip_locked=True)
        )
        claims = []
        async with self.sessions() as session, session.begin():
            for refund in (await session.execute(query)).scalars():
                request = RefundRequest(
                    refund_id=refund.id,
                    organization_id=refund.organization_id,
                    invoice_id=refund.invoice_id,
                    credit_note_id=refund.credit_note_id,
                    payment_intent=refund.provider_payment_id,
                    amount=refund.provider_amount,
                    idempotency_key=refund.idempotency_key,
                )
                claims.append(RefundClaim(refund.payment_id, refund.provider_refund_id, refund.sent, request))
                refund.sent, refund.next_attempt_time = True, now + self.lease
        return claims

    async def _send(self, claim: RefundClaim) -> None:
        request = claim.request
        try:
            account = await self.accounts.charges(request.organization_id)
            outcome = await settle_refund(account, request, claim.provider_refund_id, claim.sent)
        except (Unreachable, DomainError) as error:  # DomainError: no Stripe account for the organization
            log.warning("refund %s: its outcome is not known yet, retried later: %s", request.refund_id, error)
            outcome = RefundOutcome(UNKNOWN, claim.provider_refund_id)
        await self._record(claim, outcome)

    async def _record(self, claim: RefundClaim, outcome: RefundOutcome) -> None:
        async with self.sessions() as session, session.begin():
            payment = await session.get_one(Payment, claim.payment_id, with_for_update=True)
            refund = await session.get_one(Refund, claim.request.refund_id)
            if refund.status != REFUND_PENDING:
                return  # a webhook settled it meanwhile
            refund.provider_refund_id = outcome.provider_refund_id or refund.provider_refund_id
            if outcome.status in STATUSES:
                refund.status, refund.next_attempt_time = STATUSES[outcome.status], None
                refund.failure_message = outcome.message[:500]
                await tally(session, payment)
            else:
                wait = self.pending_poll if outcome.status == PENDING else self.retry_after
                refund.next_attempt_time = utcnow() + wait
        self.relay.wake()
