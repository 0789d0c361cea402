"""Payments' facts as public events, charged through the organization's own
Stripe account (the double in front of localstripe): a payment succeeding,
failing, refunded and disputed, once per payment version, with the invoice
paid or its payment failed, each as GET shows it."""

from __future__ import annotations

from bxb.payments.v1 import events_pb2, payments_pb2
from services.common import bus
from services.common.ids import new_id
from services.common.timestamps import to_proto, utcnow
from services.payments import announcements as handling
from services.payments.announcing import Announcer
from tests.conftest import Stack, Tenant, eventually
from tests.service.announcement_helpers import Announcements, event_id
from tests.service.test_gateway_charge import issued, payment_methods_saved
from tests.service.test_gateway_refunds import charged
from tests.service.test_payments_webhooks import send
from tests.stripe import AUTHENTICATED_CARD, DECLINED_CARD, LocalStripe
from tests.stripe_events import dispute

PAYMENTS = (bus.PAYMENTS, "payments-announcements-payments")


async def shown(tenant: Tenant, path: str) -> dict:
    response = await tenant.http.get(path)
    assert response.status_code == 200, response.text
    return response.json()


async def test_a_payment_succeeding_then_disputed_is_announced_with_the_invoice_paid(
    stack: Stack, stripe_tenant: Tenant, localstripe: LocalStripe, announcements: Announcements
):
    tenant, org = stripe_tenant, stripe_tenant.organization_id
    hooked = await announcements.endpoint(org, "payment.succeeded", "invoice.paid")
    invoice, answer = await charged(stack, tenant, localstripe)
    succeeded = await announcements.one(org, "payment.succeeded")
    payment = await shown(tenant, f"/v1/payments/{answer['payment_id']}")
    assert (succeeded.data, succeeded.customer_id) == ({"payment": payment}, "cust_acme")
    assert succeeded.source_key == f"payment.succeeded:{payment['id']}:{payment['version']}"
    paid = await announcements.one(org, "invoice.paid")
    assert paid.data == {"invoice": await shown(tenant, f"/v1/invoices/{invoice['id']}")}
    assert paid.data["invoice"]["status"] == "paid"
    for announced in (succeeded, paid):
        assert await announcements.deliveries(announced.id) == [(hooked, "cust_acme", "DELIVERY_STATUS_PENDING")]

    opened = dispute("ch_x", answer["payment_intent"], 4750, "usd")
    assert (await send(tenant, "charge.dispute.created", opened)).status_code == 200
    disputed = await announcements.one(org, "payment.disputed")
    assert disputed.data == {"payment": await shown(tenant, f"/v1/payments/{payment['id']}")}
    assert disputed.data["payment"]["status"] == "disputed"
    assert await announcements.deliveries(disputed.id) == []
    # The invoice stays paid (told once); a redelivered payment_updated announces nothing more.
    await announcements.redelivered_once(
        org, "", *PAYMENTS, "bxb.payments.v1.payment_updated", where=version_of(payment["id"], payment["version"])
    )
    assert len(await announcements.all(org, "invoice.paid")) == 1


async def test_a_refund_is_announced_with_its_credit_note(
    stack: Stack, stripe_tenant: Tenant, localstripe: LocalStripe, announcements: Announcements
):
    tenant, org = stripe_tenant, stripe_tenant.organization_id
    invoice, answer = await charged(stack, tenant, localstripe)
    body = {"invoice_id": invoice["id"], "type": "refund", "amount_cents": 1425}
    note = await tenant.http.post("/v1/credit_notes", json=body)
    assert note.status_code == 201, note.text
    credited = await announcements.one(org, "credit_note.created")
    assert credited.data == {"credit_note": await shown(tenant, f"/v1/credit_notes/{note.json()['id']}")}

    async def refunded():
        found = await announcements.one(org, "payment.refunded", timeout=0.5)
        assert found.data["payment"]["refunded_amount_cents"] == 1425
        return found

    announced = await eventually(refunded, timeout=20)
    assert announced.data == {"payment": await shown(tenant, f"/v1/payments/{answer['payment_id']}")}
    assert announced.data["payment"]["status"] == "partially_refunded"


async def test_a_declined_charge_is_a_failed_payment_and_invoice_payment(
    stack: Stack, stripe_tenant: Tenant, localstripe: LocalStripe, announcements: Announcements
):
    tenant, org = stripe_tenant, stripe_tenant.organization_id
    invoice = await issued(tenant, localstripe, card=DECLINED_CARD)
    await payment_methods_saved(stack, tenant)
    assert (await tenant.http.post(f"/v1/invoices/{invoice['id']}/charge")).status_code == 402
    failed = await announcements.one(org, "payment.failed")
    assert failed.data["payment"]["status"] == "failed"
    assert failed.data == {"payment": await shown(tenant, f"/v1/payments/{failed.data['payment']['id']}")}
    told = await announcements.one(org, "invoice.payment_failed")
    assert told.data == {"invoice": await shown(tenant, f"/v1/invoices/{invoice['id']}")}
    assert told.data["invoice"]["payment_status"] == "failed"
    invoices = (bus.INVOICING, "payments-announcements-invoicing", "bxb.invoicing.v1.invoice_updated")
    await announcements.redelivered_once(org, event_id(told), *invoices)
    payment = failed.data["payment"]
    where = version_of(payment["id"], payment["version"])
    await announcements.redelivered_once(org, "", *PAYMENTS, "bxb.payments.v1.payment_updated", where=where)


async def test_a_charge_waiting_for_the_customer_is_an_invoice_payment_requiring_action(
    stack: Stack, stripe_tenant: Tenant, localstripe: LocalStripe, announcements: Announcements
):
    tenant, org = stripe_tenant, stripe_tenant.organization_id
    invoice = await issued(tenant, localstripe, card=AUTHENTICATED_CARD)
    await payment_methods_saved(stack, tenant)
    await tenant.http.post(f"/v1/invoices/{invoice['id']}/charge")
    waiting = await announcements.one(org, "invoice.payment_requires_action")
    assert waiting.data == {"invoice": await shown(tenant, f"/v1/invoices/{invoice['id']}")}
    assert (waiting.customer_id, waiting.data["invoice"]["payment_status"]) == ("cust_acme", "requires_action")
    assert waiting.data["invoice"]["payment_url"]
    assert await announcements.all(org, "payment.succeeded") == []


async def test_payments_in_other_states_and_unknown_facts_announce_nothing(announcements: Announcements):
    org = new_id("org")
    woken = []
    handler = handling.Announcements(announcements.sessions, Announcer({}), lambda: woken.append(1))
    await announcements.endpoint(org)
    for status in (payments_pb2.PAYMENT_STATUS_PENDING, payments_pb2.PAYMENT_STATUS_REQUIRES_ACTION):
        payment = payments_pb2.Payment(id=new_id("pay"), customer_id="c1", status=status, version=1)
        event = events_pb2.PaymentUpdated(
            event_id=new_id("evt"), organization_id=org, occur_time=to_proto(utcnow()), payment=payment
        )
        await handler.handle("bxb.payments.v1.payment_updated", event.SerializeToString())
    await handler.handle("bxb.payments.v1.refund_updated", b"a fact of a newer payments service")
    succeeded = payments_pb2.Payment(id="pay_x", customer_id="c1", status=payments_pb2.PAYMENT_STATUS_SUCCEEDED)
    told = events_pb2.PaymentUpdated(event_id=new_id("evt"), organization_id=org, payment=succeeded)
    await handler.handle("bxb.payments.v1.payment_updated", told.SerializeToString())
    assert (await announcements.types(org), woken) == (["payment.succeeded"], [1])
    await handler.handle("bxb.payments.v1.payment_updated", told.SerializeToString())  # again: nothing more
    assert (len(await announcements.all(org)), woken) == (1, [1])


def version_of(payment_id: str, version: int):
    """Accepts the payment_updated of this payment at this version."""

    def accepts(data: bytes) -> bool:
        payment = events_pb2.PaymentUpdated.FromString(data).payment
        return (payment.id, payment.version) == (payment_id, version)

    return accepts
