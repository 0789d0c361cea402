"""Refunds end to end, and payments read over HTTP: an invoice charged at
localstripe, refund credit notes issued through the gateway, the stack's
refunder giving the money back at Stripe once per credit note, and
`GET /v1/payments`, `GET /v1/payments/{id}`, `GET /v1/invoices/{id}/payments`."""

from __future__ import annotations

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
        return body

    body = await eventually(lambda: refunded(1, "partially_refunded", 1425))
    payment = body["payment"]
    assert (payment["id"], payment["invoice_id"], payment["amount_cents"]) == (
        answer["payment_id"],
        invoice["id"],
        4750,
    )
    assert (payment["provider_payment_id"], payment["attempt_count"], payment["next_attempt_time"]) == (intent, 0, None)
    [attempt] = body["attempts"]
    assert (attempt["status"], attempt["provider_payment_id"], attempt["amount_cents"]) == ("succeeded", intent, 4750)
    assert (attempt["trigger"], attempt["payment_id"]) == ("manual", payment["id"])
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
    event = {"idempotency_key": "e2", "customer_id": "cust_acme", "metric_key": "api_calls", "value": 10000}
    assert (await h.post("/v1/events", json={**event, "timestamp": "2026-04-10T00:00:00Z"})).status_code == 202
    second = await issue(tenant, "cust_acme", "2026-04-30T23:59:59Z")  # issued, not charged
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
