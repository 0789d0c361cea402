"""The issue's acceptance: two organizations with two Stripe accounts (two
localstripe processes behind the test double) never see or charge each
other's customers, even when one names the other's Stripe ids."""

from __future__ import annotations

import time

from services.common import db
from services.payments.accounts import StripeAccounts
from services.payments.method_events import MethodEvents
from tests.conftest import Infra, Stack, Tenant
from tests.service.test_gateway_charge import issued, payment_methods_saved
from tests.service.test_invoicing_on_request import issue
from tests.service.test_payments_linking import provider_customer
from tests.stripe import LocalStripe


async def methods_of(tenant: Tenant, customer_id: str) -> list[str]:
    answer = await tenant.http.get(f"/v1/customers/{customer_id}/payment_methods")
    assert answer.status_code == 200, answer.text
    return [m["provider_payment_method"] for m in answer.json()["payment_methods"]]


async def test_two_organizations_with_two_stripe_accounts_never_see_or_charge_each_other_s_customers(
    make_tenant, stack: Stack, infra: Infra, localstripe: LocalStripe, other_localstripe: LocalStripe
):
    a, b = await make_tenant(), await make_tenant()
    await a.connect_stripe(stack.stripe.add_account(localstripe))
    await b.connect_stripe(stack.stripe.add_account(other_localstripe))
    # Each bills its own "cust_acme", with a card in its own Stripe account.
    invoice_a, invoice_b = await issued(a, localstripe), await issued(b, other_localstripe)
    await payment_methods_saved(stack, a)
    await payment_methods_saved(stack, b)
    cus_a = (await provider_customer(a, "cust_acme"))["provider_customer_id"]
    cus_b = (await provider_customer(b, "cust_acme"))["provider_customer_id"]
    [pm_a], [pm_b] = await methods_of(a, "cust_acme"), await methods_of(b, "cust_acme")

    # A names B's Stripe customer and card for a customer of its own: checked with A's key, it fails.
    stolen = {
        "id": "cust_steal",
        "billing": {"provider": "stripe", "provider_customer_id": cus_b},
        "payment_method": {"provider_payment_method": pm_b},
    }
    assert (await a.http.post("/v1/customers", json=stolen)).status_code == 201
    failed = await provider_customer(a, "cust_steal", "failed")
    assert failed["failure_message"] == f"the Stripe customer {cus_b} is not in the organization's Stripe account"
    assert await methods_of(a, "cust_steal") == []
    # Nor are B's ids taken over HTTP: not B's customer, nor B's card for A's own customer.
    for body, field in (
        ({"provider_customer_id": cus_b, "provider_payment_method": pm_b}, "provider_customer_id"),
        ({"provider_customer_id": cus_a, "provider_payment_method": pm_b}, "provider_payment_method"),
    ):
        customer = "cust_other" if field == "provider_customer_id" else "cust_acme"
        refused = await a.http.post(f"/v1/customers/{customer}/payment_methods", json=body)
        assert refused.status_code == 400, refused.text
        assert (refused.json()["error"]["field"], refused.json()["error"]["reason"]) == (
            field,  # as the body spells it
            "NOT_IN_PROVIDER_ACCOUNT",
        )
    # Each sees only its own.
    assert (await methods_of(a, "cust_acme"), await methods_of(b, "cust_acme")) == ([pm_a], [pm_b])
    assert await methods_of(b, "cust_steal") == []
    assert (await b.http.get("/v1/customers/cust_steal/provider_customer")).status_code == 404
    # B's webhook naming A's Stripe customer changes nothing of A's.
    engine = db.create_engine(infra.postgres.url("payments"), pool_size=2)
    sessions = db.sessions(engine)
    handlers = MethodEvents(sessions, StripeAccounts(sessions, stack.stripe.url)).handlers()
    await handlers["customer.deleted"](b.organization_id, {"id": cus_a, "object": "customer"}, int(time.time()))
    await handlers["payment_method.detached"](b.organization_id, {"id": pm_a}, int(time.time()))
    await engine.dispose()
    assert (await provider_customer(a, "cust_acme"))["status"] == "linked"
    assert await methods_of(a, "cust_acme") == [pm_a]

    # Each charge lands in its own organization's account, once.
    for tenant, invoice in ((a, invoice_a), (b, invoice_b)):
        charged = await tenant.http.post(f"/v1/invoices/{invoice['id']}/charge")
        assert (charged.status_code, charged.json()["status"]) == (200, "paid"), charged.text
    [intent_a], [intent_b] = await localstripe.intents_of(cus_a), await other_localstripe.intents_of(cus_b)
    assert (intent_a.metadata["bxb_organization_id"], intent_a.payment_method) == (a.organization_id, pm_a)
    assert (intent_b.metadata["bxb_organization_id"], intent_b.payment_method) == (b.organization_id, pm_b)
    everything_b = await other_localstripe.client().v1.payment_intents.list_async(params={"limit": 100})
    assert all(
        [
            intent.metadata.to_dict().get("bxb_organization_id") != a.organization_id
            async for intent in everything_b.auto_paging_iter()
        ]
    )
    # A's customer naming B's Stripe customer is billed, and never charged.
    sub = {"customer_id": "cust_steal", "plan_id": "plan_growth", "start_date": "2026-01-01T00:00:00Z"}
    assert (await a.http.post("/v1/subscriptions", json=sub)).status_code == 201
    event = {"idempotency_key": "e_steal", "customer_id": "cust_steal", "metric_key": "api_calls", "value": 85000}
    assert (await a.http.post("/v1/events", json={**event, "timestamp": "2026-03-05T00:00:00Z"})).status_code == 202
    steal_invoice = await issue(a, "cust_steal", "2026-03-31T23:59:59Z")
    refused = await a.http.post(f"/v1/invoices/{steal_invoice['id']}/charge")
    assert (refused.status_code, refused.json()["error"]["reason"]) == (409, "PROVIDER_CUSTOMER_FAILED")
    assert [i.id for i in await other_localstripe.intents_of(cus_b)] == [intent_b.id]
    for tenant in (a, b):
        await tenant.http.aclose()
