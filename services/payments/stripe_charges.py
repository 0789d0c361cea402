"""Charging a saved card through Stripe: one PaymentIntent per attempt,
created confirmed and off session, with the attempt's idempotency key and
its ids in the intent's metadata.

`settle` answers what became of an attempt, within one deadline for all its
requests, and creates an intent only when Stripe has none for it:

- an attempt that knows its intent reads it back by id;
- an attempt that may have reached Stripe before (its caller died or lost
  the answer) is first looked up. Stripe's search API is eventually
  consistent and localstripe has none, and localstripe's intent list takes
  no filter, so the lookup lists the customer's charges made since the
  attempt began (`customer`, `created[gt]`: strongly consistent, served by
  both) with their PaymentIntents expanded, and matches
  `metadata[bxb_attempt_id]`. An intent that never made a charge moved no
  money; creating again with the attempt's own key (identical request)
  makes real Stripe replay it within its 24 h key window all the same.

The SDK's own network retries are off: a blind retry is safe only where the
provider honours idempotency keys, and the caller reconciles instead.

Outcomes: succeeded; failed (a card decline, or an intent that ended
without payment: the customer must act); requires_action (the intent waits
for the customer, 3-D Secure); rejected (Stripe refused the request itself,
`InvalidRequestError` or bxb's key refused: not the card's fault); unknown (an intent still
processing). `Unreachable` when Stripe could not be reached, failed on its
side or did not answer in time: nothing is known.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import stripe
from stripe.params import ChargeListParams, PaymentIntentCreateParams

from services.payments.stripe_http import MeasuredHTTPXClient

SUCCEEDED, FAILED, REQUIRES_ACTION = "succeeded", "failed", "requires_action"
REJECTED, UNKNOWN = "rejected", "unknown"
# Stripe's clock and ours may differ: the lookup starts this much earlier.
CLOCK_SKEW_SECONDS = 300


@dataclass(frozen=True)
class IntentRequest:
    """What one attempt asks Stripe, the same on every request of the attempt."""

    attempt_id: str
    invoice_id: str
    organization_id: str
    amount: int  # in Stripe's units for the currency
    currency: str
    customer: str  # Stripe's customer id
    payment_method: str  # Stripe's payment method id
    idempotency_key: str
    since: datetime  # when the attempt began: its intent is no older


@dataclass(frozen=True)
class Outcome:
    status: str
    provider_payment_id: str = ""
    reason: str = ""  # Stripe's code
    message: str = ""
    action_url: str = ""  # where the customer authenticates, while requires_action


class Unreachable(Exception):
    """Stripe could not be reached or did not answer: the attempt's outcome is unknown."""


def action_url(intent: Any) -> str:
    """Where the customer authenticates an intent that requires action: Stripe's
    redirect_to_url (given when the intent was confirmed with a return_url)."""
    action = getattr(intent, "next_action", None)
    redirect = getattr(action, "redirect_to_url", None)
    return str(getattr(redirect, "url", None) or "")


def outcome_of(intent: stripe.PaymentIntent) -> Outcome:
    """What a PaymentIntent's status says of its attempt."""
    if intent.status == SUCCEEDED:
        return Outcome(SUCCEEDED, intent.id)
    if intent.status == REQUIRES_ACTION:
        return Outcome(REQUIRES_ACTION, intent.id, action_url=action_url(intent))
    if intent.status in ("requires_payment_method", "canceled"):
        error = intent.last_payment_error  # None, or a StripeObject (not a dict)
        message = getattr(error, "message", None) or f"the payment intent is {intent.status}"
        return Outcome(FAILED, intent.id, getattr(error, "code", None) or intent.status, message)
    return Outcome(UNKNOWN, intent.id, intent.status, f"the payment intent is {intent.status}")


class StripeCharges:
    def __init__(
        self,
        api_key: str,
        api_base: str = "",
        timeout: float = 20.0,
        http_client: stripe.HTTPClient | None = None,
        return_url: str = "",
    ):
        self.timeout = timeout  # seconds for one attempt's requests together, and for each
        # Where Stripe sends the customer back after 3-D Secure; with it, an
        # intent that requires action carries the page to send the customer to.
        self.return_url = return_url
        self.client = stripe.StripeClient(
            api_key,
            base_addresses={"api": api_base} if api_base else {},
            # One connection pool may serve many accounts' clients (accounts.py): it holds no key.
            http_client=http_client or MeasuredHTTPXClient(timeout=timeout),
            max_network_retries=0,
        )

    async def settle(self, request: IntentRequest, intent_id: str = "", sent: bool = False) -> Outcome:
        """The attempt's outcome: its intent read back (`intent_id`), else the
        one found for it when it may have been `sent` before, else a new one."""
        async with self.answering():
            if intent_id:
                return outcome_of(await self.client.v1.payment_intents.retrieve_async(intent_id))
            found = await self._find(request) if sent else None
            return found or await self._create(request)

    @contextlib.asynccontextmanager
    async def answering(self) -> AsyncIterator[None]:
        """Requests to Stripe within this account's one deadline: Stripe silent
        past it, unreachable or failing (an error the requests did not answer
        themselves) is Unreachable, their outcome unknown."""
        try:
            async with asyncio.timeout(self.timeout):
                yield
        except TimeoutError:
            raise Unreachable(f"Stripe did not answer within {self.timeout:g} s") from None
        except stripe.StripeError as error:
            raise Unreachable(f"Stripe could not be reached: {error.user_message or error}") from None

    async def _find(self, request: IntentRequest) -> Outcome | None:
        params: ChargeListParams = {
            "customer": request.customer,
            "created": {"gt": int(request.since.timestamp()) - CLOCK_SKEW_SECONDS},
            "limit": 100,
            "expand": ["data.payment_intent"],
        }
        page = await self.client.v1.charges.list_async(params=params)
        async for charge in page.auto_paging_iter():
            intent = charge.payment_intent
            if (
                intent
                and not isinstance(intent, str)
                and getattr(intent.metadata, "bxb_attempt_id", None) == request.attempt_id
            ):
                return outcome_of(intent)
        return None

    async def _create(self, request: IntentRequest) -> Outcome:
        params: PaymentIntentCreateParams = {
            "amount": request.amount,
            "currency": request.currency.lower(),
            "customer": request.customer,
            "payment_method": request.payment_method,
            "confirm": True,
            "off_session": True,
            "metadata": {
                "bxb_attempt_id": request.attempt_id,
                "bxb_invoice_id": request.invoice_id,
                "bxb_organization_id": request.organization_id,
            },
        }
        if self.return_url:
            params["return_url"] = self.return_url
        try:
            intent = await self.client.v1.payment_intents.create_async(
                params=params, options={"idempotency_key": request.idempotency_key}
            )
        except stripe.CardError as error:  # declined: the customer must fix the card, or be there to authenticate
            intent_id = getattr(getattr(getattr(error, "error", None), "payment_intent", None), "id", None) or ""
            reason = error.code or "card_error"
            return Outcome(FAILED, intent_id, reason, error.user_message or str(error))
        except (stripe.InvalidRequestError, stripe.AuthenticationError, stripe.PermissionError) as error:
            # Stripe refused the request itself (its parameters, bxb's key): not the card's fault.
            return Outcome(REJECTED, reason=error.code or "invalid_request", message=error.user_message or str(error))
        return outcome_of(intent)
