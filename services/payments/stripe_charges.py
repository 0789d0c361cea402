"""Charging a saved card through Stripe: one PaymentIntent, confirmed off
session, per attempt.

The provider's answer is one of three: succeeded (the intent's id); declined
or refused for this customer's card (a `Declined` with Stripe's message: the
customer must fix the card, a retry alone will not help); or Stripe could not
be reached or answered an error of its own (UNAVAILABLE: nothing happened
that bxb records, and retrying is safe, the idempotency key making a retry of
an attempt that did reach Stripe charge once).
"""

from __future__ import annotations

from dataclasses import dataclass

import stripe

from services.common.errors import Unavailable


@dataclass
class Charge:
    amount: int  # minor units
    currency: str
    customer: str  # the provider's customer id
    payment_method: str  # the provider's payment method id
    idempotency_key: str


class Declined(Exception):
    """The provider refused the charge; the message says why."""


class StripeCharges:
    def __init__(self, api_key: str, api_base: str = "", retries: int = 2):
        self.client = stripe.StripeClient(
            api_key,
            base_addresses={"api": api_base} if api_base else {},
            http_client=stripe.HTTPXClient(),
            max_network_retries=retries,  # network failures only, each with the attempt's idempotency key
        )

    async def charge(self, charge: Charge) -> str:
        """Charges the card; the PaymentIntent's id."""
        params = {
            "amount": charge.amount,
            "currency": charge.currency.lower(),
            "customer": charge.customer,
            "payment_method": charge.payment_method,
            "confirm": True,
            "off_session": True,
        }
        try:
            intent = await self.client.v1.payment_intents.create_async(
                params=params, options={"idempotency_key": charge.idempotency_key}
            )
        except (stripe.CardError, stripe.InvalidRequestError) as error:
            raise Declined(error.user_message or str(error)) from None
        except stripe.StripeError as error:
            raise Unavailable(f"the payment provider could not be reached: {error.user_message or error}") from None
        if intent.status != "succeeded":  # e.g. requires_action: the customer must authenticate
            raise Declined(f"the payment needs the customer ({intent.status})")
        return intent.id
