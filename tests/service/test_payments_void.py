"""Voiding an invoice against charging it: never money taken with nothing owed.

Invoicing's void first asks payments to close the invoice's payment to new
charges; payments refuses while a charge is at Stripe or once one succeeded."""

from __future__ import annotations

import asyncio
import logging

import grpc
import pytest

from bxb.invoicing.v1 import events_pb2, invoices_pb2
from bxb.payments.v1 import payments_pb2 as pb
from bxb.payments.v1 import payments_pb2_grpc
from deploy.embedded import free_port
from services.common import bus, peers
from services.common.errors import Unavailable, error_info
from services.common.ids import new_id
from services.common.tenancy import metadata
from services.invoicing.lifecycle import Lifecycle
from services.payments.receivables import INVOICE_UPDATED
from tests.conftest import Infra, Stack, Tenant, eventually, organization, unique
from tests.service.invoicing_helpers import InvoicingDb
from tests.service.test_gateway_charge import issued, payments
from tests.service.test_payments_faults import charge, customer_invoice, payments_through
from tests.stripe import LocalStripe, StripeProxy


async def test_voiding_an_invoice_whose_charge_is_at_stripe_is_refused(
    stack: Stack, infra: Infra, tenant: Tenant, localstripe: LocalStripe
):
    h = tenant.http
    stripe_customer, invoice = await customer_invoice(stack, tenant, localstripe)
    async with StripeProxy(localstripe) as proxy, payments_through(stack, infra, proxy) as stub:
        proxy.mode = "hold"
        charging = asyncio.create_task(charge(stub, tenant, invoice))
        await asyncio.wait_for(proxy.arrived.wait(), 10)
        void = await h.post(f"/v1/invoices/{invoice['id']}/void")
        assert (void.status_code, void.json()["error"]["reason"]) == (409, "PAYMENT_IN_PROGRESS"), void.text
        proxy.release.set()
        paid = await charging
    [intent] = await localstripe.intents_of(stripe_customer)
    assert (paid.status, paid.provider_payment_id) == (pb.PAYMENT_STATUS_SUCCEEDED, intent.id)

    async def is_paid():  # what was taken is what the invoice asked
        assert (await h.get(f"/v1/invoices/{invoice['id']}")).json()["status"] == "paid"

    await eventually(is_paid)
    again = await h.post(f"/v1/invoices/{invoice['id']}/void")
    assert (again.status_code, again.json()["error"]["reason"]) == (409, "INVALID_TRANSITION")


async def test_a_voided_invoice_is_closed_to_charges_at_once(stack: Stack, tenant: Tenant, localstripe: LocalStripe):
    h = tenant.http
    stripe_customer, invoice = await customer_invoice(stack, tenant, localstripe)
    void = await h.post(f"/v1/invoices/{invoice['id']}/void")
    assert void.status_code == 200, void.text
    # Closed by the void itself, not later by its event.
    assert await payments(stack, tenant, invoice["id"]) == [("PAYMENT_STATUS_CANCELED", 4750)]
    refused = await h.post(f"/v1/invoices/{invoice['id']}/charge")
    assert (refused.status_code, refused.json()["error"]["reason"]) == (409, "INVALID_TRANSITION")
    assert await localstripe.intents_of(stripe_customer) == []


async def test_a_charge_after_payments_closed_the_invoice_for_voiding_is_refused(
    stack: Stack, tenant: Tenant, localstripe: LocalStripe
):
    # The window between payments closing the payment and invoicing committing the void.
    stripe_customer, invoice = await customer_invoice(stack, tenant, localstripe)
    await cancel_payment(stack, tenant.organization_id, invoice["id"])
    refused = await tenant.http.post(f"/v1/invoices/{invoice['id']}/charge")
    assert (refused.status_code, refused.json()["error"]["reason"]) == (409, "PAYMENT_CANCELED")
    assert await localstripe.intents_of(stripe_customer) == []
    # Voiding (again) completes what was started.
    assert (await tenant.http.post(f"/v1/invoices/{invoice['id']}/void")).json()["status"] == "voided"


async def test_voiding_while_payments_is_unreachable_is_unavailable_and_changes_nothing(
    tenant: Tenant, invoicing_db: InvoicingDb, localstripe: LocalStripe
):
    invoice = await issued(tenant, localstripe)
    nowhere = peers.Payments(f"127.0.0.1:{free_port()}", timeout=0.5)
    lifecycle = Lifecycle(invoicing_db.sessions, relay=None, payments=nowhere)
    with pytest.raises(Unavailable, match="payments could not be reached"):
        await lifecycle.change(tenant.organization_id, invoice["id"], "void")
    await nowhere.close()
    assert (await tenant.http.get(f"/v1/invoices/{invoice['id']}")).json()["status"] == "issued"


async def cancel_payment(stack: Stack, org: str, invoice_id: str, **invoice) -> pb.Payment:
    async with stack.channel("payments") as channel:
        stub = payments_pb2_grpc.PaymentServiceStub(channel)
        request = pb.CancelInvoicePaymentRequest(invoice_id=invoice_id, **invoice)
        return await stub.CancelInvoicePayment(request, metadata=metadata(org))


async def test_closing_a_payment_before_its_invoice_is_known_records_it_canceled(stack: Stack, infra: Infra):
    org = await organization(stack, unique("org_close"))
    closed = await cancel_payment(stack, org, "inv_early", customer_id="cus_1", amount_cents=900, currency="EUR")
    assert (closed.invoice_id, closed.status, closed.amount_cents) == ("inv_early", pb.PAYMENT_STATUS_CANCELED, 900)
    assert (await cancel_payment(stack, org, "inv_early")).id == closed.id  # asking again answers it
    # invoice_finalized arriving later does not reopen it.
    publisher = await bus.Bus.connect(infra.nats.url, unique("test-invoicing"))
    try:
        invoice = invoices_pb2.Invoice(id="inv_early", customer_id="cus_1", total_amount_cents=900, currency="EUR")
        finalized = events_pb2.InvoiceFinalized(event_id=new_id("evt"), organization_id=org, invoice=invoice)
        await publisher.publish("bxb.invoicing.v1.invoice_finalized", finalized.SerializeToString(), unique("m"), org)
    finally:
        await publisher.close()
    async with stack.channel("payments") as channel:
        stub = payments_pb2_grpc.PaymentServiceStub(channel)
        listed = await stub.ListPayments(pb.ListPaymentsRequest(invoice_id="inv_early"), metadata=metadata(org))
    assert [p.status for p in listed.payments] == [pb.PAYMENT_STATUS_CANCELED]
    with pytest.raises(grpc.aio.AioRpcError) as blank:
        await cancel_payment(stack, org, "")
    assert (blank.value.code(), error_info(blank.value).metadata["field"]) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "invoice_id",
    )


async def test_a_paid_invoice_keeps_its_payment(
    stack: Stack, infra: Infra, tenant: Tenant, localstripe: LocalStripe, caplog
):
    _, invoice = await customer_invoice(stack, tenant, localstripe)
    assert (await tenant.http.post(f"/v1/invoices/{invoice['id']}/charge")).status_code == 200
    with pytest.raises(grpc.aio.AioRpcError) as paid:
        await cancel_payment(stack, tenant.organization_id, invoice["id"])
    assert (paid.value.code(), error_info(paid.value).reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "PAYMENT_SUCCEEDED",
    )
    # A voided invoice announced without asking first (an older invoicing) is only logged.
    publisher = await bus.Bus.connect(infra.nats.url, unique("test-invoicing"))
    try:
        voided = invoices_pb2.Invoice(
            id=invoice["id"], customer_id="cust_acme", status=invoices_pb2.INVOICE_STATUS_VOIDED, currency="USD"
        )
        event = events_pb2.InvoiceUpdated(
            event_id=new_id("evt"), organization_id=tenant.organization_id, invoice=voided
        )
        with caplog.at_level(logging.WARNING, logger="bxb.payments.closing"):
            await publisher.publish(INVOICE_UPDATED, event.SerializeToString(), unique("v"), tenant.organization_id)

            async def logged():
                assert "keeps its payment" in caplog.text

            await eventually(logged)
    finally:
        await publisher.close()
    assert await payments(stack, tenant, invoice["id"]) == [("PAYMENT_STATUS_SUCCEEDED", 4750)]
