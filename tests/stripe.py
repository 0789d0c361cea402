"""Stripe for tests: localstripe (a fake of Stripe's API) in its own process,
and helpers that make a customer with a card there, as a user's Stripe
account would have it. localstripe is GPL: it only ever runs as a separate
process, never imported.

What localstripe lacks (accounts, idempotency keys, 3-D Secure redirects,
Checkout) the test double in tests/stripe_double.py adds in front of it;
signed webhook events a test sends itself are in tests/stripe_events.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import stripe

from deploy.embedded import free_port, wait_for_port

# localstripe's test cards: one that is charged, one whose charges are
# declined, one whose charges need the holder (3-D Secure).
GOOD_CARD, DECLINED_CARD, AUTHENTICATED_CARD = "4242424242424242", "4000000000000341", "4000002760003184"


async def customer_with_card(client: stripe.StripeClient, number: str = GOOD_CARD) -> tuple[str, str]:
    """A customer with a saved card in the account `client` calls, as its staff would make one: (cus_..., pm_...)."""
    customer = await client.v1.customers.create_async(params={"email": "billing@acme.test"})
    card = {"number": number, "exp_month": 12, "exp_year": 2040, "cvc": "123"}
    method = await client.v1.payment_methods.create_async(params={"type": "card", "card": card})
    await client.v1.payment_methods.attach_async(method.id, params={"customer": customer.id})
    return customer.id, method.id


class LocalStripe:
    api_key = "sk_test_bxb_localstripe"

    def __init__(self):
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> LocalStripe:
        program = Path(sys.executable).parent / "localstripe"
        self.process = subprocess.Popen(
            # --from-scratch: not the state another instance left in the file
            # every instance shares (/tmp/localstripe.pickle), half written
            # when two test workers run one each.
            [str(program), "--port", str(self.port), "--from-scratch"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port, timeout=30, process=self.process)
        return self

    def __exit__(self, *exc) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)

    def client(self) -> stripe.StripeClient:
        return stripe.StripeClient(self.api_key, base_addresses={"api": self.url}, http_client=stripe.HTTPXClient())

    async def customer_with_card(self, number: str = GOOD_CARD) -> tuple[str, str]:
        """A Stripe customer with a saved card: (cus_..., pm_...)."""
        return await customer_with_card(self.client(), number)

    async def intent(self, intent_id: str):
        return await self.client().v1.payment_intents.retrieve_async(intent_id)

    async def intents_of(self, customer: str) -> list:
        """Every PaymentIntent of a Stripe customer (localstripe lists them all, unfiltered)."""
        page = await self.client().v1.payment_intents.list_async(params={"limit": 100})
        return [intent async for intent in page.auto_paging_iter() if intent.customer == customer]


def __getattr__(name: str) -> object:
    """`StripeDouble`, `StripeProxy`, `Account` live in tests/stripe_double.py
    (which imports this module), and are found here too."""
    if name in ("StripeDouble", "StripeProxy", "Account"):
        from tests import stripe_double

        return getattr(stripe_double, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
