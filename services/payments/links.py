"""Payment links: a Stripe Checkout Session (payment mode) for what a
declined invoice still asks, sent to the customer in the dunning email.

A link and a charge must never both collect. A link is stored on its
payment (payment_link_id) only while the payment is declined with no
charge open, under the payment's lock; before any new charge of the
payment starts, the link is expired at Stripe (an expired session cannot
be paid) and, if the customer paid it first, that payment is recorded
instead of charging (charging.Charging._run). A session made but not stored
(the payment moved on meanwhile) is expired at once, before anyone saw it.
"""

from __future__ import annotations

from dataclasses import dataclass

import stripe
from stripe.params.checkout import SessionCreateParams

from services.common.errors import Unavailable
from services.payments.accounts import StripeAccounts
from services.payments.stripe_charges import Unreachable

COMPLETE = "complete"


@dataclass(frozen=True)
class LinkRequest:
    """One link: for which payment and charge, how much, where the customer goes back."""

    organization_id: str
    payment_id: str
    invoice_id: str
    attempt_count: int  # the charges made when it was asked: one link per decline
    amount: int  # in Stripe's units for the currency
    currency: str
    customer: str  # Stripe's customer id
    return_url: str


class PaymentLinks:
    def __init__(self, accounts: StripeAccounts):
        self.accounts = accounts

    async def create(self, request: LinkRequest) -> tuple[str, str]:
        """A new Checkout Session for the payment: (its id, its URL)."""
        ids = {
            "bxb_organization_id": request.organization_id,
            "bxb_payment_id": request.payment_id,
            "bxb_invoice_id": request.invoice_id,
        }
        params: SessionCreateParams = {
            "mode": "payment",
            "customer": request.customer,
            "line_items": [
                {
                    "quantity": 1,
                    "price_data": {
                        "currency": request.currency.lower(),
                        "unit_amount": request.amount,
                        "product_data": {"name": f"Invoice {request.invoice_id}"},
                    },
                }
            ],
            "payment_intent_data": {"metadata": ids},
            "metadata": ids,
            "success_url": request.return_url,
            "cancel_url": request.return_url,
        }
        key = f"bxb-link-{request.payment_id}-{request.attempt_count}"
        charges = await self.accounts.charges(request.organization_id)
        try:
            async with charges.answering():
                session = await charges.client.v1.checkout.sessions.create_async(
                    params=params, options={"idempotency_key": key}
                )
        except Unreachable as error:
            raise Unavailable(f"Stripe could not make the payment link: {error}") from None
        return session.id, str(session.url or "")

    async def close(self, org: str, link_id: str) -> str:
        """Expires the link at Stripe; the PaymentIntent it collected with
        when the customer paid it first, else ""."""
        charges = await self.accounts.charges(org)
        sessions = charges.client.v1.checkout.sessions
        try:
            async with charges.answering():
                try:
                    await sessions.expire_async(link_id)
                    return ""
                except stripe.InvalidRequestError:  # not open: paid, or expired before
                    found = await sessions.retrieve_async(link_id)
        except Unreachable as error:
            raise Unavailable(f"the payment link could not be closed at Stripe: {error}") from None
        intent = found.payment_intent
        if found.status != COMPLETE or intent is None:
            return ""
        return intent if isinstance(intent, str) else intent.id
