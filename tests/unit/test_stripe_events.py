"""tests/stripe_events.py: the webhooks a test signs itself are what the
stripe SDK's verifier (`stripe.Webhook.construct_event`, 300 s tolerance)
accepts, and only those; the objects built are Stripe's shapes."""

from __future__ import annotations

import json
import time

import httpx
import pytest
import stripe

from tests import stripe_events
from tests.stripe_events import charge_refunded, deliver, dispute, event, refund, sign

SECRET = "whsec_test_secret"


def test_a_signed_payload_is_what_the_sdk_verifies():
    body = event("payment_intent.succeeded", {"id": "pi_1", "object": "payment_intent"})
    payload = stripe_events.encode(body)
    verified = stripe.Webhook.construct_event(payload, sign(payload, SECRET), SECRET)
    assert (verified.id, verified.type, verified.data.object.id) == (body["id"], "payment_intent.succeeded", "pi_1")
    header = sign(payload, SECRET, timestamp=1700000000)
    assert header.startswith("t=1700000000,v1=") and len(header.split("v1=")[1]) == 64


def test_a_wrong_secret_a_changed_body_and_a_stale_signature_are_refused():
    payload = stripe_events.encode(event("customer.deleted", {"id": "cus_1", "object": "customer"}))
    with pytest.raises(stripe.SignatureVerificationError, match="expected signature"):
        stripe.Webhook.construct_event(payload, sign(payload, "whsec_other"), SECRET)
    with pytest.raises(stripe.SignatureVerificationError, match="expected signature"):
        stripe.Webhook.construct_event(payload + b" ", sign(payload, SECRET), SECRET)
    stale = sign(payload, SECRET, timestamp=int(time.time()) - 301)
    with pytest.raises(stripe.SignatureVerificationError, match="tolerance"):
        stripe.Webhook.construct_event(payload, stale, SECRET)
    recent = sign(payload, SECRET, timestamp=int(time.time()) - 290)
    assert stripe.Webhook.construct_event(payload, recent, SECRET).type == "customer.deleted"


def test_an_event_has_stripes_fields():
    body = event("charge.dispute.created", {"id": "dp_1"}, account="acct_1", created=1700000000, event_id="evt_1")
    assert body == {
        "id": "evt_1",
        "object": "event",
        "api_version": stripe.api_version,
        "created": 1700000000,
        "data": {"object": {"id": "dp_1"}},
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": "charge.dispute.created",
        "account": "acct_1",
    }
    fresh = event("ping", {})
    assert fresh["id"].startswith("evt_") and "account" not in fresh and abs(fresh["created"] - time.time()) < 5


def test_disputes_and_refunded_charges():
    lost = dispute("ch_1", "pi_1", 4750, "USD", status="lost")
    assert (lost["object"], lost["charge"], lost["payment_intent"], lost["amount"], lost["currency"]) == (
        "dispute",
        "ch_1",
        "pi_1",
        4750,
        "usd",
    )
    assert (lost["status"], lost["reason"], lost["id"][:3]) == ("lost", "fraudulent", "dp_")
    with pytest.raises(ValueError, match="not a dispute status"):
        dispute("ch_1", "pi_1", 1, "usd", status="pending")
    charge = {"id": "ch_1", "object": "charge", "amount": 4750, "refunded": False, "amount_refunded": 0}
    first, failed = refund("ch_1", "pi_1", 1000, "usd"), refund("ch_1", "pi_1", 3750, "usd", status="failed")
    partly = charge_refunded(charge, [first, failed])
    assert (partly["amount_refunded"], partly["refunded"], partly["refunds"]["total_count"]) == (1000, False, 2)
    whole = charge_refunded(charge, [first, refund("ch_1", "pi_1", 3750, "usd")])
    assert (whole["amount_refunded"], whole["refunded"], whole["refunds"]["url"]) == (
        4750,
        True,
        "/v1/charges/ch_1/refunds",
    )
    assert charge["refunded"] is False  # the charge given is left as it was


async def test_deliver_posts_the_signed_json_through_a_client():
    received: list[httpx.Request] = []

    def endpoint(request: httpx.Request) -> httpx.Response:
        received.append(request)
        return httpx.Response(200)

    body = event("charge.refunded", charge_refunded({"id": "ch_1", "amount": 100}, []))
    async with httpx.AsyncClient(transport=httpx.MockTransport(endpoint), base_url="http://bxb.test") as client:
        answer = await deliver(client, "/v1/webhooks/stripe", body, SECRET, timestamp=int(time.time()))
    assert answer.status_code == 200
    [request] = received
    assert (request.url.path, request.headers["content-type"]) == (
        "/v1/webhooks/stripe",
        "application/json; charset=utf-8",
    )
    verified = stripe.Webhook.construct_event(request.content, request.headers["stripe-signature"], SECRET)
    assert verified.id == body["id"] and json.loads(request.content) == body
