"""ABAXUS step D: charging an issued invoice through Stripe (localstripe, a
real HTTP fake of Stripe's API), and the invoice becoming paid."""

from __future__ import annotations

import grpc
import pytest

from bxb.payments.v1 import events_pb2 as payments_events_pb2
from bxb.payments.v1 import payments_pb2 as pb
from bxb.payments.v1 import payments_pb2_grpc
from deploy.embedded import free_port
from services.common import peers
from services.common.errors import NotFound, Unavailable, error_info
from services.common.tenancy import metadata
from services.common.timestamps import utcnow
from services.invoicing.lifecycle import Lifecycle
from services.payments.accounts import StripeAccounts
from services.payments.charging import Charging
from services.payments.stripe_charges import IntentRequest, StripeCharges, Unreachable
from tests.conftest import Stack, Tenant, eventually
from tests.service.invoicing_helpers import InvoicingDb
from tests.service.test_invoicing_on_request import GROWTH, issue
from tests.stripe import DECLINED_CARD, LocalStripe


async def issued(
    tenant: Tenant,
    localstripe: LocalStripe,
    card: str = "4242424242424242",
    currency: str = "USD",
    calls: int = 85000,
    connect: bool = True,
    **customer,
) -> dict:
    """The seed's setup (the organization's own Stripe account connected, unless
    not to `connect`, a customer with a saved card there) and an invoice
    issued on request: 47.50 in `currency` for the seed's 85,000 calls."""
    h = tenant.http
    if connect and tenant.stripe is None:
        await tenant.connect_stripe()
    metric = {"key": "api_calls", "aggregation_type": "sum", "value_type": "integer"}
    assert (await h.post("/v1/metrics", json=metric)).status_code == 201
    assert (await h.post("/v1/price-plans", json={**GROWTH, "currency": currency})).status_code == 201
    if card:
        stripe_customer, method = await localstripe.customer_with_card(card)
        customer["billing"] = {"provider": "stripe", "auto_collect": False}  # charged on request
        customer["payment_method"] = {"provider_customer_id": stripe_customer, "provider_payment_method": method}
    assert (await h.post("/v1/customers", json={"id": "cust_acme", **customer})).status_code == 201
    sub = {"customer_id": "cust_acme", "plan_id": "plan_growth", "start_date": "2026-01-01T00:00:00Z"}
    assert (await h.post("/v1/subscriptions", json=sub)).status_code == 201
    event = {
        "idempotency_key": "e1",
        "customer_id": "cust_acme",
        "metric_key": "api_calls",
        "value": calls,
        "timestamp": "2026-03-05T00:00:00Z",
    }
    assert (await h.post("/v1/events", json=event)).status_code == 202
    return await issue(tenant, "cust_acme", "2026-03-31T23:59:59Z")


async def payment_methods_saved(stack: Stack, tenant: Tenant) -> None:
    """The card given with the customer reaches the payments service through
    catalog events, and is saved once checked at Stripe."""

    async def saved():
        async with stack.channel("payments") as channel:
            request = pb.ListPaymentMethodsRequest(customer_id="cust_acme")
            stub = payments_pb2_grpc.PaymentServiceStub(channel)
            return (await stub.ListPaymentMethods(request, metadata=metadata(tenant.organization_id))).payment_methods

    await eventually(saved)


async def payments(stack: Stack, tenant: Tenant, invoice_id: str) -> list[tuple[str, int]]:
    async with stack.channel("payments") as channel:
        stub = payments_pb2_grpc.PaymentServiceStub(channel)
        request = pb.ListPaymentsRequest(invoice_id=invoice_id)
        listed = await stub.ListPayments(request, metadata=metadata(tenant.organization_id))
    return [(pb.PaymentStatus.Name(p.status), p.amount_cents) for p in listed.payments]


async def test_charging_an_issued_invoice_pays_it_with_a_payment_intent(
    stack: Stack, tenant: Tenant, localstripe: LocalStripe
):
    h = tenant.http
    invoice = await issued(tenant, localstripe)
    assert (invoice["status"], invoice["total_amount_cents"]) == ("issued", 4750)
    await payment_methods_saved(stack, tenant)

    charged = await h.post(f"/v1/invoices/{invoice['id']}/charge")
    assert charged.status_code == 200, charged.text
    body = charged.json()
    assert (body["id"], body["status"], body["amount_cents"], body["currency"]) == (invoice["id"], "paid", 4750, "USD")
    assert body["payment_intent"].startswith("pi_")
    intent = await localstripe.intent(body["payment_intent"])
    assert (intent.status, intent.amount, intent.currency) == ("succeeded", 4750, "usd")

    async def paid():
        return (await h.get(f"/v1/invoices/{invoice['id']}")).json()["status"] == "paid"

    await eventually(paid)
    # Charging again charges nothing more: the same payment answers.
    again = await h.post(f"/v1/invoices/{invoice['id']}/charge")
    assert (again.json()["payment_intent"], again.json()["payment_id"]) == (body["payment_intent"], body["payment_id"])
    assert await payments(stack, tenant, invoice["id"]) == [("PAYMENT_STATUS_SUCCEEDED", 4750)]
    # A paid invoice is no longer voided; it can be archived.
    assert (await h.post(f"/v1/invoices/{invoice['id']}/void")).status_code == 409
    assert (await h.post(f"/v1/invoices/{invoice['id']}/archive")).json()["status"] == "archived"


async def test_a_declined_card_is_a_402_and_the_invoice_stays_issued(
    stack: Stack, tenant: Tenant, localstripe: LocalStripe
):
    h = tenant.http
    invoice = await issued(tenant, localstripe, card=DECLINED_CARD)
    await payment_methods_saved(stack, tenant)
    declined = await h.post(f"/v1/invoices/{invoice['id']}/charge")
    assert declined.status_code == 402, declined.text
    assert (declined.json()["error"]["reason"], declined.json()["error"]["field"]) == (
        "PAYMENT_FAILED",
        "payment_method",
    )
    assert "declined" in declined.json()["error"]["message"]
    assert await payments(stack, tenant, invoice["id"]) == [("PAYMENT_STATUS_FAILED", 4750)]
    assert (await h.get(f"/v1/invoices/{invoice['id']}")).json()["status"] == "issued"


async def test_what_cannot_be_charged_is_refused_with_its_reason(
    stack: Stack, tenant: Tenant, localstripe: LocalStripe
):
    h = tenant.http
    invoice = await issued(tenant, localstripe, card="")
    no_card = await h.post(f"/v1/invoices/{invoice['id']}/charge")
    assert (no_card.status_code, no_card.json()["error"]["reason"]) == (409, "NO_PAYMENT_METHOD")
    assert no_card.json()["error"]["field"] == "customer_id"
    assert (await h.post("/v1/invoices/inv_nope/charge")).status_code == 404
    assert (await h.post(f"/v1/invoices/{invoice['id']}/void")).status_code == 200
    voided = await h.post(f"/v1/invoices/{invoice['id']}/charge")
    assert (voided.status_code, voided.json()["error"]["reason"]) == (409, "INVALID_TRANSITION")
    assert "is voided" in voided.json()["error"]["message"]

    async def cancelled():  # what it asked is no longer owed
        assert await payments(stack, tenant, invoice["id"]) == [("PAYMENT_STATUS_CANCELED", 4750)]

    await eventually(cancelled)


async def test_an_invoice_credited_in_full_is_paid_without_a_charge(
    stack: Stack, tenant: Tenant, localstripe: LocalStripe
):
    h = tenant.http
    invoice = await issued(tenant, localstripe)
    credited = await h.post("/v1/credit_notes", json={"invoice_id": invoice["id"]})
    assert credited.status_code == 201, credited.text
    charged = await h.post(f"/v1/invoices/{invoice['id']}/charge")
    assert charged.status_code == 200, charged.text
    assert (charged.json()["status"], charged.json()["amount_cents"], charged.json()["payment_intent"]) == (
        "paid",
        0,
        None,
    )
    assert await payments(stack, tenant, invoice["id"]) == [("PAYMENT_STATUS_SUCCEEDED", 0)]


async def test_without_a_connected_stripe_account_nothing_is_charged(
    stack: Stack, tenant: Tenant, localstripe: LocalStripe
):
    invoice = await issued(tenant, localstripe)
    await payment_methods_saved(stack, tenant)
    # The organization disconnects its Stripe account: its customers are no longer charged.
    assert (await tenant.http.delete("/v1/payment_providers/stripe")).status_code == 204
    async with stack.channel("payments") as channel:
        stub = payments_pb2_grpc.PaymentServiceStub(channel)
        md = metadata(tenant.organization_id)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.ChargeInvoice(pb.ChargeInvoiceRequest(invoice_id=invoice["id"]), metadata=md)
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert error_info(refused.value).reason == "PAYMENTS_NOT_CONFIGURED"
        with pytest.raises(grpc.aio.AioRpcError) as blank:
            await stub.ChargeInvoice(pb.ChargeInvoiceRequest(), metadata=md)
        assert (blank.value.code(), error_info(blank.value).metadata["field"]) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            "invoice_id",
        )

    async def owed():  # the invoice still asks to be paid: the refused charge changed nothing
        assert await payments(stack, tenant, invoice["id"]) == [("PAYMENT_STATUS_PENDING", 4750)]

    await eventually(owed)


async def test_an_unreachable_invoicing_or_stripe_is_unavailable():
    closed = f"127.0.0.1:{free_port()}"
    invoicing = peers.Invoicing(closed, timeout=0.5)
    with pytest.raises(Unavailable, match="invoicing could not be reached"):
        await Charging(None, None, invoicing, StripeAccounts()).charge("org_x", "inv_x")
    await invoicing.close()
    nowhere = StripeCharges(LocalStripe.api_key, f"http://{closed}")
    request = IntentRequest("att_x", "inv_x", "org_x", 100, "USD", "cus_x", "pm_x", "key", utcnow())
    with pytest.raises(Unreachable, match="Stripe could not be reached"):
        await nowhere.settle(request)


async def test_invoicing_ignores_payment_news_that_pays_nothing(invoicing_db: InvoicingDb):
    lifecycle = Lifecycle(invoicing_db.sessions, relay=None, payments=peers.Payments("127.0.0.1:1"))  # never asked
    await lifecycle.paid("bxb.payments.v1.something_new", b"\xff")  # a newer fact, not even decoded
    for status in (pb.PAYMENT_STATUS_FAILED, pb.PAYMENT_STATUS_SUCCEEDED):
        news = payments_events_pb2.PaymentUpdated(
            organization_id="org_x", payment=pb.Payment(invoice_id="inv_unknown", status=status)
        )
        with pytest.raises(NotFound):  # news of a payment must find its invoice: redelivered until it does
            await lifecycle.paid("bxb.payments.v1.payment_updated", news.SerializeToString())
