"""Setup links (a SetupIntent's client secret, and a hosted Checkout page in
setup mode) where the end customer saves a card, and the Stripe webhooks
about customers and methods (method_events.py): the card saved as the
default by setup_intent.succeeded, forgotten on payment_method.detached,
the customer failed on customer.deleted; each within its organization,
twice or out of order without harm."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from sqlalchemy import select

from services.common import db
from services.payments.accounts import StripeAccounts
from services.payments.method_events import MethodEvents
from services.payments.models import PaymentMethod, ProviderCustomer, ProviderEvent
from tests.conftest import Infra, Stack, Tenant, unique
from tests.service.test_payments_linking import provider_customer
from tests.stripe import GOOD_CARD


class Events:
    """The handlers as the webhook dispatcher runs them, on the payments database."""

    def __init__(self, infra: Infra, stack: Stack):
        self.engine = db.create_engine(infra.postgres.url("payments"), pool_size=2)
        self.sessions = db.sessions(self.engine)
        self.stripe_url = stack.stripe.url

    def handlers(self, stripe_url: str = "") -> dict:
        return MethodEvents(self.sessions, StripeAccounts(self.sessions, stripe_url or self.stripe_url)).handlers()

    async def received(self, org: str, type: str, object_id: str, created: int) -> None:
        """An event the dispatcher recorded (provider_events), as it records each."""
        async with self.sessions() as session, session.begin():
            session.add(
                ProviderEvent(
                    organization_id=org,
                    event_id=unique("evt"),
                    provider="stripe",
                    type=type,
                    object_id=object_id,
                    created=created,
                )
            )

    async def methods(self, org: str) -> list[PaymentMethod]:
        async with self.sessions() as session:
            query = select(PaymentMethod).where(PaymentMethod.organization_id == org)
            return list((await session.execute(query.order_by(PaymentMethod.create_time))).scalars())


@pytest.fixture
async def events(infra: Infra, stack: Stack) -> AsyncIterator[Events]:
    handle = Events(infra, stack)
    yield handle
    await handle.engine.dispose()


async def linked_customer(tenant: Tenant, customer_id: str = "cus_setup", card: bool = False) -> tuple[str, str]:
    """A customer of the tenant linked to Stripe, with a saved card when `card`: (cus_..., pm_... or "")."""
    body: dict[str, Any] = {"id": customer_id, "email": "setup@acme.test", "billing": {"provider": "stripe"}}
    method = ""
    if card:
        stripe_customer, method = await tenant.customer_with_card()
        body["payment_method"] = {"provider_customer_id": stripe_customer, "provider_payment_method": method}
    assert (await tenant.http.post("/v1/customers", json=body)).status_code == 201
    linked = await provider_customer(tenant, customer_id)
    return linked["provider_customer_id"], method


async def listed(tenant: Tenant, customer_id: str = "cus_setup") -> list[tuple[str, bool]]:
    answer = await tenant.http.get(f"/v1/customers/{customer_id}/payment_methods")
    return [(m["provider_payment_method"], m["is_default"]) for m in answer.json()["payment_methods"]]


async def test_a_setup_link_is_a_setup_intent_for_off_session_charges(stripe_tenant: Tenant):
    tenant = stripe_tenant
    stripe_customer, _ = await linked_customer(tenant)
    made = await tenant.http.post("/v1/customers/cus_setup/payment_methods/setup_link", json={})
    assert made.status_code == 201, made.text
    link = made.json()
    assert (link["customer_id"], link["provider_customer_id"], link["url"]) == ("cus_setup", stripe_customer, None)
    assert link["setup_intent_id"].startswith("seti_") and link["client_secret"].startswith(link["setup_intent_id"])
    intent = await tenant.stripe_client().v1.setup_intents.retrieve_async(link["setup_intent_id"])
    assert (intent.customer, intent.usage) == (stripe_customer, "off_session")
    assert intent.metadata.to_dict() == {"bxb_organization_id": tenant.organization_id, "bxb_customer_id": "cus_setup"}


async def test_the_hosted_page_saves_a_card_that_setup_intent_succeeded_makes_the_default(
    stripe_tenant: Tenant, stack: Stack, events: Events
):
    tenant = stripe_tenant
    stripe_customer, first = await linked_customer(tenant, card=True)
    made = await tenant.http.post(
        "/v1/customers/cus_setup/payment_methods/setup_link",
        json={"success_url": "https://acme.test/saved", "cancel_url": "https://acme.test/cancel"},
    )
    assert made.status_code == 201, made.text
    url = made.json()["url"]
    assert url.startswith(stack.stripe.url)
    session_id = urlsplit(url).path.removeprefix("/pay/")
    session = await tenant.stripe_client().v1.checkout.sessions.retrieve_async(session_id)
    assert (session.mode, session.customer, session.success_url, session.cancel_url) == (
        "setup",
        stripe_customer,
        "https://acme.test/saved",
        "https://acme.test/cancel",
    )
    # The end customer completes the page with a card (the double acts as their browser).
    done = await stack.stripe.complete_checkout(session_id, GOOD_CARD)
    setup = await tenant.stripe_client().v1.setup_intents.retrieve_async(done["setup_intent"])
    assert setup.status == "succeeded"
    handle = events.handlers()["setup_intent.succeeded"]
    for _ in range(2):  # delivered twice: saved once
        await handle(tenant.organization_id, setup.to_dict(), int(time.time()))
    assert await listed(tenant) == [(setup.payment_method, True), (first, False)]
    [saved] = [
        m for m in await events.methods(tenant.organization_id) if m.provider_payment_method == setup.payment_method
    ]
    assert (saved.card_brand, saved.card_last4, saved.provider_customer_id) == ("visa", "4242", stripe_customer)


async def test_setup_intent_succeeded_saves_only_a_method_still_the_customer_s_in_its_organization(
    stripe_tenant: Tenant, make_tenant, events: Events
):
    tenant = stripe_tenant
    stripe_customer, _ = await linked_customer(tenant)
    client = tenant.stripe_client()
    handle = events.handlers()["setup_intent.succeeded"]
    card = {"number": GOOD_CARD, "exp_month": 12, "exp_year": 2040, "cvc": "123"}
    method = await client.v1.payment_methods.create_async(params={"type": "card", "card": card})
    await client.v1.payment_methods.attach_async(method.id, params={"customer": stripe_customer})
    obj = {"id": "seti_x", "object": "setup_intent", "customer": stripe_customer, "payment_method": method.id}
    other = await make_tenant()
    await handle(other.organization_id, obj, int(time.time()))  # another organization's: nothing
    await handle(tenant.organization_id, {**obj, "customer": None}, int(time.time()))  # no customer: nothing
    await handle(tenant.organization_id, {**obj, "customer": "cus_unknown"}, int(time.time()))  # unknown: nothing
    # Detached since at Stripe (its payment_method.detached still on its way): not saved.
    await client.v1.payment_methods.detach_async(method.id)
    await handle(tenant.organization_id, obj, int(time.time()))
    assert await listed(tenant) == []
    # An expanded method names its id too.
    again = await client.v1.payment_methods.create_async(params={"type": "card", "card": card})
    await client.v1.payment_methods.attach_async(again.id, params={"customer": stripe_customer})
    await handle(tenant.organization_id, {**obj, "payment_method": {"id": again.id}}, int(time.time()))
    assert await listed(tenant) == [(again.id, True)]
    await other.http.aclose()


async def test_when_stripe_cannot_say_the_signed_event_is_trusted_unless_a_later_detach_arrived_first(
    stripe_tenant: Tenant, events: Events
):
    tenant = stripe_tenant
    stripe_customer, _ = await linked_customer(tenant)
    nowhere = events.handlers("http://127.0.0.1:9")["setup_intent.succeeded"]
    now = int(time.time())
    obj = {"id": "seti_y", "object": "setup_intent", "customer": stripe_customer, "payment_method": "pm_detached"}
    await events.received(tenant.organization_id, "payment_method.detached", "pm_detached", now + 5)
    await nowhere(tenant.organization_id, obj, now)  # older than the detach already applied: nothing
    assert await listed(tenant) == []
    saved = {**obj, "payment_method": "pm_unreadable"}
    await nowhere(tenant.organization_id, saved, now)
    assert await listed(tenant) == [("pm_unreadable", True)]
    [method] = await events.methods(tenant.organization_id)
    assert (method.card_brand, method.card_last4) == ("", "")  # its card is not known
    # Stripe reachable again, and the method not there: nothing is saved; deleting the saved one forgets it.
    await events.handlers()["setup_intent.succeeded"](
        tenant.organization_id, {**obj, "payment_method": "pm_not_in_the_account"}, now
    )
    assert await listed(tenant) == [("pm_unreadable", True)]
    deleted = await tenant.http.delete(f"/v1/customers/cus_setup/payment_methods/{method.id}")
    assert deleted.status_code == 204, deleted.text
    assert await listed(tenant) == []


async def test_payment_method_detached_forgets_it_and_the_default_moves(stripe_tenant: Tenant, events: Events):
    tenant = stripe_tenant
    stripe_customer, first = await linked_customer(tenant, card=True)
    second_card = {"number": GOOD_CARD, "exp_month": 1, "exp_year": 2041, "cvc": "123"}
    client = tenant.stripe_client()
    second = (await client.v1.payment_methods.create_async(params={"type": "card", "card": second_card})).id
    body = {"provider_customer_id": stripe_customer, "provider_payment_method": second}
    assert (await tenant.http.post("/v1/customers/cus_setup/payment_methods", json=body)).status_code == 201
    assert await listed(tenant) == [(second, True), (first, False)]
    detached = events.handlers()["payment_method.detached"]
    obj = {"id": second, "object": "payment_method", "customer": None}
    await detached(unique("org"), obj, int(time.time()))  # another organization's event: nothing
    assert await listed(tenant) == [(second, True), (first, False)]
    for _ in range(2):
        await detached(tenant.organization_id, obj, int(time.time()))
    assert await listed(tenant) == [(first, True)]


async def test_customer_deleted_fails_the_customer_and_forgets_its_methods(
    stripe_tenant: Tenant, stack: Stack, events: Events
):
    tenant = stripe_tenant
    stripe_customer, card = await linked_customer(tenant, card=True)
    deleted = events.handlers()["customer.deleted"]
    obj = {"id": stripe_customer, "object": "customer", "deleted": True}
    await deleted(unique("org"), obj, int(time.time()))  # another organization's: nothing
    assert await listed(tenant) == [(card, True)]
    for _ in range(2):
        await deleted(tenant.organization_id, obj, int(time.time()))
    failed = await provider_customer(tenant, "cus_setup", "failed")
    assert failed["failure_message"] == f"{stripe_customer} was deleted at Stripe"
    assert await listed(tenant) == []
    # A terminal state: a later setup_intent.succeeded saves nothing, and nothing is charged.
    obj = {"id": "seti_z", "customer": stripe_customer, "payment_method": card}
    await events.handlers()["setup_intent.succeeded"](tenant.organization_id, obj, int(time.time()))
    assert await listed(tenant) == []
    async with events.sessions() as session:
        recorded = await session.get(ProviderCustomer, (tenant.organization_id, "cus_setup"))
    assert recorded.status == "PROVIDER_CUSTOMER_STATUS_FAILED"
    refused = await tenant.http.post("/v1/customers/cus_setup/payment_methods/setup_link", json={})
    assert (refused.status_code, refused.json()["error"]["reason"]) == (409, "PROVIDER_CUSTOMER_FAILED")


async def test_a_setup_link_needs_a_customer_linked_to_stripe(stripe_tenant: Tenant, localstripe):
    tenant = stripe_tenant
    missing = await tenant.http.post("/v1/customers/cus_nobody/payment_methods/setup_link", json={})
    assert (missing.status_code, missing.json()["error"]["field"]) == (404, "customer_id")
    # Its Stripe customer deleted at Stripe behind bxb's back: Stripe refuses the hosted page.
    stripe_customer, _ = await linked_customer(tenant)
    await localstripe.client().v1.customers.delete_async(stripe_customer)
    refused = await tenant.http.post(
        "/v1/customers/cus_setup/payment_methods/setup_link", json={"success_url": "https://acme.test/ok"}
    )
    assert refused.status_code == 400, refused.text
    assert (refused.json()["error"]["field"], refused.json()["error"]["reason"]) == ("customer_id", "PROVIDER_REFUSED")
