"""Giving money back through Stripe: one Refund of a PaymentIntent per bxb
refund, with the refund's idempotency key and its ids in the metadata.

`settle_refund` answers what became of a refund, within the account's
deadline for all its requests (StripeCharges.timeout), and creates one only
when Stripe has none for it, as StripeCharges.settle does for a charge:

- a refund that knows its Stripe id reads it back;
- a refund that may have reached Stripe before (its caller died or lost the
  answer) is first looked up among the PaymentIntent's refunds
  (`GET /v1/refunds?payment_intent=`), by `metadata[bxb_refund_id]`;
- otherwise it is created, with its own key: real Stripe replays a repeated
  creation within its 24 h key window all the same.

Outcomes: succeeded; failed (Stripe's refund failed or was canceled, or
Stripe refused the request itself: `InvalidRequestError`, or bxb's key
refused, as `settle` classifies them); pending (Stripe has it and has not
finished: its webhook, or a later look, tells). `Unreachable` when Stripe
could not be reached, failed on its side or did not answer in time.
"""

from __future__ import annotations

from dataclasses import dataclass

import stripe
from stripe.params import RefundCreateParams, RefundListParams

from services.payments.stripe_charges import StripeCharges

SUCCEEDED, FAILED, PENDING = "succeeded", "failed", "pending"


@dataclass(frozen=True)
class RefundRequest:
    """What one refund asks Stripe, the same on every request of it."""

    refund_id: str
    organization_id: str
    invoice_id: str
    credit_note_id: str
    payment_intent: str  # the PaymentIntent that collected the money
    amount: int  # in Stripe's units for the currency
    idempotency_key: str


@dataclass(frozen=True)
class RefundOutcome:
    status: str
    provider_refund_id: str = ""
    message: str = ""


def refund_outcome(refund: stripe.Refund) -> RefundOutcome:
    """What a Stripe Refund's status says of it."""
    if refund.status == SUCCEEDED:
        return RefundOutcome(SUCCEEDED, refund.id)
    if refund.status in (FAILED, "canceled"):
        reason = getattr(refund, "failure_reason", None)  # absent from some answers (and localstripe's)
        return RefundOutcome(FAILED, refund.id, reason or f"the refund is {refund.status}")
    return RefundOutcome(PENDING, refund.id)  # pending, requires_action


async def settle_refund(
    account: StripeCharges, request: RefundRequest, refund_id: str = "", sent: bool = False
) -> RefundOutcome:
    """The refund's outcome: its Stripe refund read back (`refund_id`), else
    the one found for it when it may have been `sent` before, else a new one."""
    async with account.answering():  # Unreachable when Stripe is silent, unreached or failing
        if refund_id:
            return refund_outcome(await account.client.v1.refunds.retrieve_async(refund_id))
        found = await _find(account, request) if sent else None
        return found or await _create(account, request)


async def _find(account: StripeCharges, request: RefundRequest) -> RefundOutcome | None:
    params: RefundListParams = {"payment_intent": request.payment_intent, "limit": 100}
    page = await account.client.v1.refunds.list_async(params=params)
    async for refund in page.auto_paging_iter():
        if getattr(refund.metadata, "bxb_refund_id", None) == request.refund_id:
            return refund_outcome(refund)
    return None


async def _create(account: StripeCharges, request: RefundRequest) -> RefundOutcome:
    params: RefundCreateParams = {
        "payment_intent": request.payment_intent,
        "amount": request.amount,
        "metadata": {
            "bxb_organization_id": request.organization_id,
            "bxb_refund_id": request.refund_id,
            "bxb_credit_note_id": request.credit_note_id,
            "bxb_invoice_id": request.invoice_id,
        },
    }
    try:
        refund = await account.client.v1.refunds.create_async(
            params=params, options={"idempotency_key": request.idempotency_key}
        )
    except (stripe.InvalidRequestError, stripe.AuthenticationError, stripe.PermissionError) as error:
        # Stripe refused the request itself (more than is left, a disputed charge, bxb's key).
        return RefundOutcome(FAILED, message=error.user_message or str(error))
    return refund_outcome(refund)
