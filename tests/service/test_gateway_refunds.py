"""Refunds end to end, and payments read over HTTP: an invoice charged at
localstripe, refund credit notes issued through the gateway, the stack's
refunder giving the money back at Stripe once per credit note, and
`GET /v1/payments`, `GET /v1/payments/{id}`, `GET /v1/invoices/{id}/payments`."""

from __future__ import annotations

from tests import stripe_events
from tests.conftest import Stack, Tenant, eventually
from tests.service.test_gateway_charge import issued, payment_methods_saved
from tests.service.test_invoicing_on_request import issue
from tests.stripe import LocalStripe


async def charged(stack: Stack, tenant: Tenant, localstripe: LocalStripe) -> tuple[dict, dict]:
    """An issued invoice of 47.50 USD, charged and paid: (invoice, ABAXUS's charge answer)."""
    invoice = await issued(tenant, localstripe)
    await payment_methods_saved(stack, tenant)
    answer = await tenant.http.post(f"/v1/invoices/{invoice['id']}/charge")
    assert answer.status_code == 200, answer.text

    async def paid():
        assert (await tenant.http.get(f"/v1/invoices/{invoice['id']}")).json()["status"] == "paid"

    await eventually(paid)
    return invoice, answer.json()


async def refunds_at_stripe(localstripe: LocalStripe, intent: str) -> list:
    page = await localstripe.client().v1.refunds.list_async(params={"payment_intent": intent, "limit": 100})
    return [refund async for refund in page.auto_paging_iter()]


async def test_refund_credit_notes_refund_at_stripe_once_each_and_read_over_http(
    stack: Stack, tenant: Tenant, localstripe: LocalStripe
):
    h = tenant.http
    invoice, answer = await charged(stack, tenant, localstripe)
    # ABAXUS's charge answer is as it was: collection's new payment fields stay on bxb's routes.
    assert set(answer) == {"id", "payment_id", "amount_cents", "currency", "payment_intent", "status"}
    intent = answer["payment_intent"]

    note = await h.post("/v1/credit_notes", json={"invoice_id": invoice["id"], "type": "refund", "amount_cents": 1425})
    assert note.status_code == 201, note.text

    async def refunded(count: int, status: str, amount: int) -> dict:
        listed = await h.get(f"/v1/invoices/{invoice['id']}/payments")
        assert listed.status_code == 200, listed.text
        body = listed.json()
        assert (body["payment"]["status"], body["payment"]["refunded_amount_cents"]) == (status, amount)
        assert len(await refunds_at_stripe(localstripe, intent)) == count
        # The invoice tells it too, from payment_updated.
        assert (await h.get(f"/v1/invoices/{invoice['id']}")).json()["payment_status"] == status
        return body

    body = await eventually(lambda: refunded(1, "partially_refunded", 1425))
    payment = body["payment"]
    assert (payment["id"], payment["invoice_id"], payment["amount_cents"]) == (
        answer["payment_id"],
        invoice["id"],
        4750,
    )
    assert (payment["provider_payment_id"], payment["attempt_count"], payment["next_attempt_time"]) == (intent, 1, None)
    [attempt] = body["attempts"]  # the charge, manual or automatic (whichever came first)
    assert (attempt["status"], attempt["provider_payment_id"], attempt["amount_cents"]) == ("succeeded", intent, 4750)
    assert (attempt["trigger"] in ("manual", "automatic"), attempt["payment_id"]) == (True, payment["id"])
    [refund] = body["refunds"]
    [at_stripe] = await refunds_at_stripe(localstripe, intent)
    assert (refund["status"], refund["amount_cents"], refund["provider_amount"]) == ("succeeded", 1425, 1425)
    assert (refund["credit_note_id"], refund["provider_refund_id"]) == (note.json()["id"], at_stripe.id)
    assert (at_stripe.amount, at_stripe.metadata["bxb_credit_note_id"]) == (1425, note.json()["id"])

    rest = await h.post("/v1/credit_notes", json={"invoice_id": invoice["id"], "type": "refund"})  # the rest
    assert (rest.status_code, rest.json()["amount_cents"]) == (201, 3325)
    body = await eventually(lambda: refunded(2, "refunded", 4750))
    assert [r["credit_note_id"] for r in body["refunds"]] == [rest.json()["id"], note.json()["id"]]  # newest first
    assert sorted(r.amount for r in await refunds_at_stripe(localstripe, intent)) == [1425, 3325]
    more = await h.post("/v1/credit_notes", json={"invoice_id": invoice["id"], "type": "refund", "amount_cents": 1})
    assert (more.status_code, more.json()["error"]["reason"]) == (409, "FULLY_CREDITED")

    one = await h.get(f"/v1/payments/{payment['id']}")
    assert one.status_code == 200, one.text
    assert (one.json()["status"], one.json()["refunded_amount_cents"], one.json()["version"]) == (
        "refunded",
        4750,
        body["payment"]["version"],
    )
    assert one.json()["update_time"]
    missing = await h.get("/v1/payments/pay_nope")
    assert (missing.status_code, missing.json()["error"]["reason"]) == (404, "NOT_FOUND")
    # An invoice payments has no payment for (not finalized, or no such invoice): an empty answer.
    assert (await h.get("/v1/invoices/inv_nope/payments")).json() == {
        "payment": None,
        "attempts": [],
        "refunds": [],
    }


async def test_payments_are_listed_by_status_customer_and_page(
    stack: Stack, tenant: Tenant, localstripe: LocalStripe, make_tenant
):
    h = tenant.http
    first, _ = await charged(stack, tenant, localstripe)
    # A customer without a card: its invoice stays to be paid.
    assert (await h.post("/v1/customers", json={"id": "cust_cash"})).status_code == 201
    sub = {"customer_id": "cust_cash", "plan_id": "plan_growth", "start_date": "2026-01-01T00:00:00Z"}
    assert (await h.post("/v1/subscriptions", json=sub)).status_code == 201
    event = {"idempotency_key": "e2", "customer_id": "cust_cash", "metric_key": "api_calls", "value": 10000}
    assert (await h.post("/v1/events", json={**event, "timestamp": "2026-03-10T00:00:00Z"})).status_code == 202
    second = await issue(tenant, "cust_cash", "2026-03-31T23:59:59Z")
    assert second["status"] == "issued"

    async def listed(**params) -> list[str]:
        answer = await h.get("/v1/payments", params=params)
        assert answer.status_code == 200, answer.text
        return [p["invoice_id"] for p in answer.json()["payments"]]

    async def both():
        assert sorted(await listed()) == sorted([first["id"], second["id"]])

    await eventually(both)
    assert await listed(status="succeeded") == [first["id"]]
    assert await listed(status="pending") == [second["id"]]
    assert await listed(status="refunded") == []
    assert await listed(customer_id="cust_cash") == [second["id"]]
    assert await listed(customer_id="cust_other") == []
    bad = await h.get("/v1/payments", params={"status": "bored"})
    assert (bad.status_code, bad.json()["error"]["field"]) == (400, "status")

    page = (await h.get("/v1/payments", params={"page_size": 1})).json()
    after = (await h.get("/v1/payments", params={"page_size": 1, "page_token": page["next_page_token"]})).json()
    assert [p["invoice_id"] for p in page["payments"] + after["payments"]] == [second["id"], first["id"]]
    assert after["next_page_token"] == ""

    other = await make_tenant()  # another organization sees none of them
    try:
        assert (await other.http.get("/v1/payments")).json()["payments"] == []
        assert (await other.http.get(f"/v1/invoices/{first['id']}/payments")).json()["payment"] is None
        payment_id = (await h.get(f"/v1/invoices/{first['id']}/payments")).json()["payment"]["id"]
        assert (await other.http.get(f"/v1/payments/{payment_id}")).status_code == 404
    finally:
        await other.http.aclose()


async def test_a_refund_made_at_stripe_reaches_the_payment_by_its_signed_webhook_and_only_there(
    stack: Stack, tenant: Tenant, localstripe: LocalStripe, make_tenant
):
    h = tenant.http
    invoice, answer = await charged(stack, tenant, localstripe)
    intent = await localstripe.intent(answer["payment_intent"])
    client = localstripe.client()
    made = await client.v1.refunds.create_async(params={"payment_intent": intent.id, "amount": 1000})  # the dashboard
    charge_id = getattr(intent.latest_charge, "id", intent.latest_charge)  # localstripe expands it
    charge = (await client.v1.charges.retrieve_async(charge_id)).to_dict()
    refunded = stripe_events.event("charge.refunded", stripe_events.charge_refunded(charge, [made.to_dict()]))

    other = await make_tenant()  # another organization's endpoint receives the same event: nothing of its own
    try:
        account = await other.connect_stripe()
        theirs = await stripe_events.deliver(
            other.http, f"/v1/webhooks/stripe/{other.organization_id}", refunded, account.webhook_secret
        )
        assert (theirs.status_code, theirs.json()["duplicate"]) == (200, False)
        assert (await other.http.get("/v1/payments")).json()["payments"] == []
    finally:
        await other.http.aclose()
    forged = await stripe_events.deliver(h, f"/v1/webhooks/stripe/{tenant.organization_id}", refunded, "whsec_nope")
    assert forged.status_code == 400
    listed = (await h.get(f"/v1/invoices/{invoice['id']}/payments")).json()
    assert (listed["payment"]["status"], listed["refunds"]) == ("succeeded", [])

    assert tenant.stripe is not None
    received = await stripe_events.deliver(
        h, f"/v1/webhooks/stripe/{tenant.organization_id}", refunded, tenant.stripe.webhook_secret
    )
    assert received.status_code == 200, received.text
    listed = (await h.get(f"/v1/invoices/{invoice['id']}/payments")).json()
    assert (listed["payment"]["status"], listed["payment"]["refunded_amount_cents"]) == ("partially_refunded", 1000)
    [refund] = listed["refunds"]
    assert (refund["credit_note_id"], refund["provider_refund_id"], refund["amount_cents"]) == ("", made.id, 1000)
    assert len(await refunds_at_stripe(localstripe, intent.id)) == 1  # bxb gave nothing back itself
