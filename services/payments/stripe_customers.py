"""Customers, payment methods and setup links at Stripe, through an
organization's client (StripeAccounts.charges): the calls the linker
(linking.py) and the payment method routes (methods.py) make.

Each call runs within the client's deadline and answers Stripe's object, or
raises what a caller can act on: `Missing` (no such object in this account:
404, or a deleted customer), `KeyRefused` (the organization's key is
refused: 401, 403), `Refused` (Stripe refused the request itself, with its
message), `Unreachable` (Stripe not reached, failed on its side, rate
limited or too slow: nothing is known, retry). Creations carry an
idempotency key derived from bxb's own ids, and metadata naming them; plain
updates (a default, a detach) carry none: repeating them is harmless, and a
derived key would replay a stale answer (default A, then B, then A again).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, cast

import stripe
from stripe.params import CustomerCreateParams, CustomerUpdateParams, SetupIntentCreateParams
from stripe.params.checkout import SessionCreateParams

from services.payments.stripe_charges import StripeCharges, Unreachable

# Stripe's longest idempotency key.
MAX_KEY = 255


class Missing(Exception):
    """No such object in the organization's Stripe account."""


class Refused(Exception):
    """Stripe refused the request; the message is Stripe's."""


class KeyRefused(Refused):
    """Stripe refused the organization's key (revoked, or not allowed this call)."""


@dataclass(frozen=True)
class Card:
    """What bxb shows of a payment method: a card's brand, last four digits and expiry."""

    brand: str = ""
    last4: str = ""
    exp_month: int = 0
    exp_year: int = 0


def card_of(method: stripe.PaymentMethod) -> Card:
    card = getattr(method, "card", None)
    if card is None:  # not a card (a SEPA debit, ...)
        return Card()
    return Card(card.brand or "", card.last4 or "", card.exp_month or 0, card.exp_year or 0)


def idempotency_key(*parts: str) -> str:
    """`bxb-<parts>`, or its digest when longer than Stripe takes (ids are up to 200 characters)."""
    key = "-".join(("bxb", *parts))
    return key if len(key) <= MAX_KEY else f"bxb-{parts[0]}-{hashlib.sha256(key.encode()).hexdigest()}"


def owner(method: stripe.PaymentMethod) -> str:
    """The Stripe customer a payment method is attached to, "" when none."""
    return str(getattr(method.customer, "id", method.customer) or "")  # an id, or an expanded customer


async def call[T](charges: StripeCharges, request: Awaitable[T]) -> T:
    """Stripe's answer to `request`, within the client's deadline, its errors as this module's."""
    try:
        async with asyncio.timeout(charges.timeout):
            return await request
    except TimeoutError:
        raise Unreachable(f"Stripe did not answer within {charges.timeout:g} s") from None
    except (stripe.APIConnectionError, stripe.APIError, stripe.RateLimitError) as error:
        raise Unreachable(f"Stripe could not be reached: {error.user_message or error}") from None
    except (stripe.AuthenticationError, stripe.PermissionError) as error:
        raise KeyRefused(error.user_message or str(error)) from None
    except stripe.InvalidRequestError as error:
        if error.http_status == 404:
            raise Missing(error.user_message or str(error)) from None
        raise Refused(error.user_message or str(error)) from None
    except stripe.StripeError as error:  # a card declined on attach, an idempotency key reused, ...
        raise Refused(error.user_message or str(error)) from None


async def account(charges: StripeCharges) -> stripe.Account:
    """The account the client's key belongs to (`GET /v1/account`)."""
    return await call(charges, charges.client.v1.accounts.retrieve_current_async())


async def create_customer(charges: StripeCharges, org: str, customer_id: str, email: str, name: str) -> str:
    """A new Stripe customer for a bxb customer, once: its id."""
    params: CustomerCreateParams = {"metadata": {"bxb_organization_id": org, "bxb_customer_id": customer_id}}
    if email:
        params["email"] = email
    if name:
        params["name"] = name
    key = idempotency_key("customer", org, customer_id)
    created = await call(charges, charges.client.v1.customers.create_async(params, {"idempotency_key": key}))
    return created.id


async def customer(charges: StripeCharges, customer_id: str) -> stripe.Customer:
    """A Stripe customer of the account; `Missing` when unknown or deleted."""
    found = await call(charges, charges.client.v1.customers.retrieve_async(customer_id))
    if getattr(found, "deleted", False):
        raise Missing(f"the Stripe customer {customer_id} was deleted")
    return found


async def payment_method(charges: StripeCharges, method_id: str) -> stripe.PaymentMethod:
    return await call(charges, charges.client.v1.payment_methods.retrieve_async(method_id))


async def attach(charges: StripeCharges, method_id: str, customer_id: str) -> stripe.PaymentMethod:
    """Attaches an unattached payment method to a customer (a card may be declined here)."""
    key = idempotency_key("attach", method_id, customer_id)
    request = charges.client.v1.payment_methods.attach_async(
        method_id, {"customer": customer_id}, {"idempotency_key": key}
    )
    return await call(charges, request)


async def detach(charges: StripeCharges, method_id: str) -> None:
    await call(charges, charges.client.v1.payment_methods.detach_async(method_id))


async def set_default(charges: StripeCharges, customer_id: str, method_id: str) -> None:
    """The method Stripe's own invoices would charge, kept as bxb's default."""
    params: CustomerUpdateParams = {"invoice_settings": {"default_payment_method": method_id}}
    await call(charges, charges.client.v1.customers.update_async(customer_id, params))


async def setup_intent(
    charges: StripeCharges, org: str, customer_id: str, stripe_customer: str, key: str
) -> stripe.SetupIntent:
    """A SetupIntent saving a card of the customer for charges made off session."""
    params: SetupIntentCreateParams = {
        "customer": stripe_customer,
        "usage": "off_session",
        "metadata": {"bxb_organization_id": org, "bxb_customer_id": customer_id},
    }
    request = charges.client.v1.setup_intents.create_async(params, {"idempotency_key": idempotency_key("setup", key)})
    return await call(charges, request)


async def setup_session(
    charges: StripeCharges,
    org: str,
    customer_id: str,
    stripe_customer: str,
    key: str,
    success_url: str,
    cancel_url: str,
) -> stripe.checkout.Session:
    """A hosted Checkout page in setup mode, where the end customer saves a card."""
    metadata = {"bxb_organization_id": org, "bxb_customer_id": customer_id}
    params: dict[str, Any] = {
        "mode": "setup",
        "customer": stripe_customer,
        # Setup mode needs the methods (or a currency): cards, by the name the
        # test double and Stripe's API reference take (the SDK types a later name).
        "payment_method_types": ["card"],
        "success_url": success_url,
        "setup_intent_data": {"metadata": metadata},
        "metadata": metadata,
    }
    if cancel_url:
        params["cancel_url"] = cancel_url
    request = charges.client.v1.checkout.sessions.create_async(
        cast(SessionCreateParams, params), {"idempotency_key": idempotency_key("checkout", key)}
    )
    return await call(charges, request)
