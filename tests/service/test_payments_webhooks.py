"""Stripe's webhooks in: POST /v1/webhooks/stripe/{organization_id}, outside
API-key auth, signed with the organization's secret.

Events are built from what localstripe (behind the test double) holds and
signed by the test (tests/stripe_events.py), as Stripe would send them;
what is asserted is what bxb stores and answers, and the PaymentIntents at
Stripe (never more than one per charge)."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from sqlalchemy import select

from bxb.payments.v1 import stripe_webhooks_pb2 as webhooks_pb
from bxb.payments.v1 import stripe_webhooks_pb2_grpc
from services.common.tenancy import metadata
from services.payments.accounts import StripeAccounts
from services.payments.models import ProviderEvent
from services.payments.webhooks import StripeWebhookServicer
from tests.conftest import Stack, Tenant, eventually
from tests.service.payments_helpers import PaymentsDb
from tests.service.test_gateway_charge import payments
from tests.service.test_payments_faults import customer_invoice
from tests.stripe import AUTHENTICATED_CARD, LocalStripe
from tests.stripe_double import StripeDouble
from tests.stripe_events import deliver, dispute, encode, event, sign


def url(tenant: Tenant) -> str:
    return f"/v1/webhooks/stripe/{tenant.organization_id}"


def secret(tenant: Tenant) -> str:
    """The signing secret of the organization's own Stripe account's webhooks."""
    assert tenant.stripe is not None
    return tenant.stripe.webhook_secret


async def send(tenant: Tenant, kind: str, obj: dict, **options):
    """A signed event delivered to the tenant's webhook URL, without its API key."""
    answer = await deliver(tenant.http, url(tenant), event(kind, obj, **options), secret(tenant))
    return answer


async def intent_of(localstripe: LocalStripe, intent_id: str) -> dict:
    return (await localstripe.intent(intent_id)).to_dict()


async def invoice_status(tenant: Tenant, invoice_id: str) -> str:
    return (await tenant.http.get(f"/v1/invoices/{invoice_id}")).json()["status"]


async def events_of(payments_db: PaymentsDb, tenant: Tenant) -> list[str]:
    async with payments_db.sessions() as session:
        query = select(ProviderEvent.type).where(ProviderEvent.organization_id == tenant.organization_id)
        return list((await session.execute(query)).scalars())


async def test_a_3d_secure_charge_waits_for_the_customer_then_the_signed_webhook_pays_it(
    stack: Stack, tenant: Tenant, localstripe: LocalStripe, stripe_double: StripeDouble, payments_db: PaymentsDb
):
    h = tenant.http
    stripe_customer, invoice = await customer_invoice(stack, tenant, localstripe, card=AUTHENTICATED_CARD)
    waiting = await h.post(f"/v1/invoices/{invoice['id']}/charge")
    assert (waiting.status_code, waiting.json()["error"]["reason"]) == (402, "PAYMENT_REQUIRES_ACTION")
    payment = await payments_db.payment(invoice["id"])
    assert payment.status == "PAYMENT_STATUS_REQUIRES_ACTION"
    # The page the customer must visit: Stripe's redirect for the intent's 3-D Secure.
    assert payment.payment_url.startswith(f"{stripe_double.url}/3ds/{payment.provider_payment_id}")
    await stripe_double.authenticate(payment.provider_payment_id, succeed=True)
    intent = await intent_of(localstripe, payment.provider_payment_id)
    assert intent["status"] == "succeeded"

    received = await send(tenant, "payment_intent.succeeded", intent, event_id="evt_3ds_paid")
    assert (received.status_code, received.json()) == (
        200,
        {"received": True, "event_id": "evt_3ds_paid", "type": "payment_intent.succeeded", "duplicate": False},
    )

    async def paid():
        assert await invoice_status(tenant, invoice["id"]) == "paid"

    await eventually(paid)
    payment = await payments_db.payment(invoice["id"])
    assert (payment.status, payment.payment_url, payment.provider_payment_id) == (
        "PAYMENT_STATUS_SUCCEEDED",
        "",
        intent["id"],
    )
    # Stripe delivering it again changes nothing.
    again = await send(tenant, "payment_intent.succeeded", intent, event_id="evt_3ds_paid")
    assert (again.status_code, again.json()["duplicate"]) == (200, True)
    assert [a.status for a in await payments_db.attempts(invoice["id"])] == ["succeeded"]
    assert len(await localstripe.intents_of(stripe_customer)) == 1
    assert await events_of(payments_db, tenant) == ["payment_intent.succeeded"]


async def test_a_failed_3d_secure_declines_the_payment_whatever_order_the_events_come_in(
    stack: Stack, tenant: Tenant, localstripe: LocalStripe, stripe_double: StripeDouble, payments_db: PaymentsDb
):
    _, invoice = await customer_invoice(stack, tenant, localstripe, card=AUTHENTICATED_CARD)
    assert (await tenant.http.post(f"/v1/invoices/{invoice['id']}/charge")).status_code == 402
    waiting = await payments_db.payment(invoice["id"])
    requires_action = await intent_of(localstripe, waiting.provider_payment_id)
    await stripe_double.authenticate(waiting.provider_payment_id, succeed=False)
    failed = await intent_of(localstripe, waiting.provider_payment_id)
    later = int(time.time())
    assert (await send(tenant, "payment_intent.payment_failed", failed, created=later)).status_code == 200
    # The older news of the wait arriving after the decline moves nothing back.
    assert (await send(tenant, "payment_intent.requires_action", requires_action, created=later - 5)).status_code == 200
    payment = await payments_db.payment(invoice["id"])
    assert (payment.status, payment.failure_reason) == (
        "PAYMENT_STATUS_FAILED",
        "payment_intent_authentication_failure",
    )
    assert [a.status for a in await payments_db.attempts(invoice["id"])] == ["failed"]
    assert await invoice_status(tenant, invoice["id"]) == "issued"


async def test_a_charge_whose_answer_was_lost_is_settled_by_the_webhook_and_never_made_again(
    stack: Stack, tenant: Tenant, localstripe: LocalStripe, stripe_double: StripeDouble, payments_db: PaymentsDb
):
    h = tenant.http
    stripe_customer, invoice = await customer_invoice(stack, tenant, localstripe)
    stripe_double.mode = "drop"  # Stripe charges; its answer never comes back
    lost = await h.post(f"/v1/invoices/{invoice['id']}/charge")
    assert lost.status_code == 503, lost.text
    [intent] = await localstripe.intents_of(stripe_customer)
    [attempt] = await payments_db.attempts(invoice["id"])
    assert (attempt.status, attempt.provider_payment_id) == ("unknown", "")
    # The webhook names the attempt in the intent's metadata: it is found before its id is known.
    assert (await send(tenant, "payment_intent.succeeded", intent.to_dict())).status_code == 200
    [attempt] = await payments_db.attempts(invoice["id"])
    assert (attempt.status, attempt.provider_payment_id) == ("succeeded", intent.id)
    again = await h.post(f"/v1/invoices/{invoice['id']}/charge")
    assert (again.status_code, again.json()["payment_intent"]) == (200, intent.id)
    assert len(await localstripe.intents_of(stripe_customer)) == 1


async def test_a_webhook_racing_the_charge_s_own_answer_leaves_one_success(
    stack: Stack, tenant: Tenant, localstripe: LocalStripe, stripe_double: StripeDouble, payments_db: PaymentsDb
):
    h = tenant.http
    stripe_customer, invoice = await customer_invoice(stack, tenant, localstripe)
    stripe_double.mode = "hold"  # the charge waits at Stripe's door
    charging = asyncio.create_task(h.post(f"/v1/invoices/{invoice['id']}/charge"))
    await asyncio.wait_for(stripe_double.arrived.wait(), 10)
    stripe_double.arrived.clear()
    stripe_double.mode = "pass"
    stripe_double.release.set()
    answer = await charging
    stripe_double.release.clear()
    assert answer.status_code == 200, answer.text
    [intent] = await localstripe.intents_of(stripe_customer)
    # The webhook of the same success arriving after the answer, and a late
    # decline of it, change nothing.
    assert (await send(tenant, "payment_intent.succeeded", intent.to_dict())).status_code == 200
    assert (await send(tenant, "payment_intent.payment_failed", intent.to_dict())).status_code == 200
    assert await payments(stack, tenant, invoice["id"]) == [("PAYMENT_STATUS_SUCCEEDED", 4750)]
    [attempt] = await payments_db.attempts(invoice["id"])
    assert attempt.status == "succeeded"


async def test_a_bad_signature_is_a_400_and_changes_nothing(
    stack: Stack, tenant: Tenant, localstripe: LocalStripe, payments_db: PaymentsDb
):
    _, invoice = await customer_invoice(stack, tenant, localstripe, card=AUTHENTICATED_CARD)
    assert (await tenant.http.post(f"/v1/invoices/{invoice['id']}/charge")).status_code == 402
    waiting = await payments_db.payment(invoice["id"])
    intent = await intent_of(localstripe, waiting.provider_payment_id)
    intent["status"] = "succeeded"  # forged
    payload = encode(event("payment_intent.succeeded", intent))
    cases = [
        (sign(payload, "whsec_someone_else"), "signature", "INVALID_SIGNATURE"),
        (sign(payload, secret(tenant), timestamp=int(time.time()) - 3600), "signature", "INVALID_SIGNATURE"),
        ("t=1,v1=00", "signature", "INVALID_SIGNATURE"),
        (None, "Stripe-Signature", "MISSING_FIELD"),
    ]
    for signature, field, reason in cases:
        headers = {"Stripe-Signature": signature} if signature else {}
        # No API key is needed, and a wrong one changes nothing either.
        answer = await tenant.http.post(url(tenant), content=payload, headers={**headers, "Authorization": "Bearer x"})
        assert answer.status_code == 400, answer.text
        error = answer.json()["error"]
        assert (error["field"], error["reason"]) == (field, reason)
    not_utf8 = b"\xff\xfe"
    answer = await tenant.http.post(
        url(tenant), content=not_utf8, headers={"Stripe-Signature": sign(not_utf8, secret(tenant))}
    )
    assert (answer.status_code, answer.json()["error"]["field"]) == (400, "payload")
    not_json = b"{not json"
    answer = await tenant.http.post(
        url(tenant), content=not_json, headers={"Stripe-Signature": sign(not_json, secret(tenant))}
    )
    assert (answer.status_code, answer.json()["error"]["field"]) == (400, "payload")
    not_an_event = encode({"id": "evt_x", "type": "payment_intent.succeeded", "data": {"object": "pi_x"}})
    answer = await tenant.http.post(
        url(tenant), content=not_an_event, headers={"Stripe-Signature": sign(not_an_event, secret(tenant))}
    )
    assert (answer.status_code, answer.json()["error"]["field"]) == (400, "payload")
    assert (await payments_db.payment(invoice["id"])).status == "PAYMENT_STATUS_REQUIRES_ACTION"
    assert await events_of(payments_db, tenant) == []


async def test_an_event_of_another_organization_or_unknown_object_changes_nothing(
    stack: Stack, tenant: Tenant, make_tenant, localstripe: LocalStripe, stripe_double: StripeDouble, payments_db
):
    await tenant.connect_stripe()
    other = await make_tenant()
    _, invoice = await customer_invoice(stack, other, localstripe, card=AUTHENTICATED_CARD)
    assert (await other.http.post(f"/v1/invoices/{invoice['id']}/charge")).status_code == 402
    waiting = await payments_db.payment(invoice["id"])
    await stripe_double.authenticate(waiting.provider_payment_id, succeed=True)
    intent = await intent_of(localstripe, waiting.provider_payment_id)
    # Sent to this tenant's URL (signed with its secret): the intent is the other's.
    assert (await send(tenant, "payment_intent.succeeded", intent)).status_code == 200
    stripped = {**intent, "metadata": {}}
    assert (await send(tenant, "payment_intent.succeeded", stripped)).status_code == 200
    assert (await send(tenant, "charge.dispute.created", dispute("ch_x", intent["id"], 4750, "usd"))).status_code == 200
    unknown = {**intent, "id": "pi_unknown", "metadata": {"bxb_organization_id": tenant.organization_id}}
    assert (await send(tenant, "payment_intent.succeeded", unknown)).status_code == 200
    linked = {
        "id": "cs_x",
        "object": "checkout.session",
        "payment_intent": "pi_y",
        "metadata": {"bxb_payment_id": waiting.id},
    }
    assert (await send(tenant, "checkout.session.completed", linked)).status_code == 200
    assert (await send(tenant, "checkout.session.completed", {**linked, "metadata": {}})).status_code == 200
    assert (
        await send(tenant, "payment_intent.succeeded", {**unknown, "metadata": {"bxb_payment_id": waiting.id}})
    ).status_code == 200
    assert (await send(tenant, "charge.dispute.created", {"id": "dp_x", "payment_intent": None})).status_code == 200
    # A type bxb has no use for is received and ignored.
    assert (await send(tenant, "customer.updated", {"id": "cus_x"})).status_code == 200
    assert (await payments_db.payment(invoice["id"])).status == "PAYMENT_STATUS_REQUIRES_ACTION"
    assert await invoice_status(other, invoice["id"]) == "issued"
    await other.http.aclose()


async def test_a_dispute_takes_the_payment_out_of_collection_until_it_is_won(
    stack: Stack, tenant: Tenant, localstripe: LocalStripe, payments_db: PaymentsDb
):
    _, invoice = await customer_invoice(stack, tenant, localstripe)
    paid = (await tenant.http.post(f"/v1/invoices/{invoice['id']}/charge")).json()
    opened = dispute("ch_x", paid["payment_intent"], 4750, "usd")
    assert (await send(tenant, "charge.dispute.created", opened)).status_code == 200
    payment = await payments_db.payment(invoice["id"])
    assert (payment.status, payment.failure_reason) == ("PAYMENT_STATUS_DISPUTED", "fraudulent")
    # A late word of an undecided dispute closing keeps it disputed; a won one gives it back.
    assert (await send(tenant, "charge.dispute.closed", {**opened, "status": "lost"})).status_code == 200
    assert (await payments_db.payment(invoice["id"])).status == "PAYMENT_STATUS_DISPUTED"
    assert (await send(tenant, "charge.dispute.closed", {**opened, "status": "won"})).status_code == 200
    payment = await payments_db.payment(invoice["id"])
    assert (payment.status, payment.failure_message) == ("PAYMENT_STATUS_SUCCEEDED", "")
    assert (await send(tenant, "charge.dispute.closed", {**opened, "status": "won"})).status_code == 200
    assert (await payments_db.payment(invoice["id"])).status == "PAYMENT_STATUS_SUCCEEDED"


async def test_the_service_refuses_an_organization_without_a_secret_or_another_s_url(
    stack: Stack, tenant: Tenant, payments_db: PaymentsDb
):
    async with stack.channel("payments") as channel:
        stub = stripe_webhooks_pb2_grpc.StripeWebhookServiceStub(channel)
        request = webhooks_pb.ReceiveStripeEventRequest(organization_id="org_other", payload=b"{}", signature="t=1")
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.ReceiveStripeEvent(request, metadata=metadata(tenant.organization_id))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    servicer = StripeWebhookServicer(payments_db.sessions, StripeAccounts(), {})
    with pytest.raises(Exception, match="no Stripe webhook signing secret"):
        await servicer._verified("org_x", webhooks_pb.ReceiveStripeEventRequest(payload=b"{}", signature="t=1"))


async def test_a_url_naming_no_organization_is_a_400(tenant: Tenant):
    for named in ("org%C2%89", "o" * 65, "org.default"):
        answer = await tenant.http.post(
            f"/v1/webhooks/stripe/{named}", content=b"{}", headers={"Stripe-Signature": "t=1"}
        )
        assert (answer.status_code, answer.json()["error"]["field"]) == (400, "organization_id"), named
