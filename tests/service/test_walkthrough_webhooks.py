"""Walkthrough "Tell the world" (README) as written, through the gateway and
the real services: an endpoint registered for invoices (its secret shown
once) receives a test event, then, as a test clock's month passes for a
customer with a card, the signed invoice.finalized and invoice.paid webhooks,
each verified by the `standardwebhooks` verifier with that secret; ChartMogul
(the fake) connected before the month holds the customer, the plan, the
subscription made from the invoice's line, the invoice and its payment."""

from __future__ import annotations

from tests.conftest import Stack, Tenant, eventually
from tests.service.test_walkthrough_bill_by_subscription import METRIC, PLAN
from tests.service.test_walkthrough_collect import Walkthrough
from tests.stripe import GOOD_CARD
from tests.stripe_double import StripeDouble
from tests.webhook_receiver import Receiver


async def test_walkthrough_signed_invoice_webhooks_and_chartmogul_sync(
    stack: Stack, tenant: Tenant, stripe_double: StripeDouble
):
    h = tenant.http
    await tenant.connect_stripe()  # as in "Collect the money"
    async with Receiver() as receiver:
        # 1. An endpoint for invoices: its signing secret is shown once.
        body = {"url": receiver.url, "event_types": ["invoice.finalized", "invoice.paid"]}
        made = await h.post("/v1/webhook_endpoints", json=body)
        assert made.status_code == 201, made.text
        endpoint, secret = made.json()["id"], made.json()["secret"]
        assert secret.startswith("whsec_") and made.json()["enabled"] is True
        assert (await h.get(f"/v1/webhook_endpoints/{endpoint}")).json()["secret"] in ("", None)  # never again
        receiver.secrets.append(secret)
        tested = await h.post(f"/v1/webhook_endpoints/{endpoint}/test", json={})
        assert tested.status_code == 200, tested.text
        assert (tested.json()["event_type"], tested.json()["status"]) == ("webhook.test", "pending")

        async def arrived(kinds: list[str]) -> None:
            assert [r.json["type"] for r in receiver.received] == kinds
            assert receiver.verified(secret)

        await eventually(lambda: arrived(["webhook.test"]))

        # 2. ChartMogul connected: what happens from now on follows there.
        key = stack.chartmogul.add_account()
        connected = await h.post("/v1/integrations/chartmogul", json={"api_key": key})
        assert connected.status_code == 200, connected.text
        assert connected.json()["data_source_id"].startswith("ds_")

        # 3. A customer on a test clock with a card, subscribed to the plan of walkthrough 02.
        assert (await h.post("/v1/billable_metrics", json=METRIC)).status_code == 201
        assert (await h.post("/v1/plans", json=PLAN)).status_code == 201
        clock = (await h.post("/v1/test_clocks", json={"frozen_time": "2025-01-01T00:00:00Z"})).json()["id"]
        walk = Walkthrough(tenant, stripe_double, clock)
        await walk.customer_with_card("cus_good", GOOD_CARD)

        # 4. The month passes: the invoice is finalized, then paid; both announced, signed, in that order.
        await walk.advance("2025-02-01T00:00:00Z")
        paid = await walk.january("cus_good", status="paid", payment_status="succeeded")
        await eventually(lambda: arrived(["webhook.test", "invoice.finalized", "invoice.paid"]), timeout=30)
        finalized, settled = (r.json for r in receiver.received[1:])
        assert finalized["data"]["invoice"]["id"] == settled["data"]["invoice"]["id"] == paid["id"]
        assert (finalized["data"]["invoice"]["status"], settled["data"]["invoice"]["status"]) == ("finalized", "paid")
        assert settled["data"]["invoice"]["total_amount_cents"] == 4900
        assert len(set(receiver.ids())) == 3  # a webhook-id each
        listed = (await h.get(f"/v1/webhook_endpoints/{endpoint}/deliveries")).json()["deliveries"]
        assert [(d["event_type"], d["status"], d["last_status_code"]) for d in listed] == [
            ("invoice.paid", "succeeded", 200),
            ("invoice.finalized", "succeeded", 200),
            ("webhook.test", "succeeded", 200),
        ]

    # 5. ChartMogul holds the customer, the plan, the subscription, the invoice and its payment.
    store = stack.chartmogul.store(key)

    async def synced() -> dict:
        status = (await h.get("/v1/integrations/chartmogul")).json()
        assert (status["pending_count"], status["failed_count"]) == (0, 0), status
        [invoice] = store.invoices.values()
        assert [t["type"] for t in invoice["transactions"]] == ["payment"]
        return status

    status = await eventually(synced, timeout=30)
    # customer.created, subscription.started, invoice.finalized, payment.succeeded
    assert status["synced_count"] == 4 and status["last_sync_time"] is not None
    assert [c["external_id"] for c in store.customers.values()] == ["cus_good"]
    assert [p["external_id"] for p in store.plans.values()] == ["pro:v1"]
    [subscription] = store.subscriptions.values()
    [invoice] = store.invoices.values()
    assert invoice["external_id"] == paid["id"]
    # The base fee as the subscription's line; the usage charge (nothing used) as a one-time line of 0.
    assert [(line["type"], line["amount_in_cents"]) for line in invoice["line_items"]] == [
        ("subscription", 4900),
        ("one_time", 0),
    ]
    assert subscription["plan_uuid"] == invoice["line_items"][0]["plan_uuid"]
