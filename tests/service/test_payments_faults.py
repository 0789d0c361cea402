"""Charging under faults: Stripe answering late, never, or after the caller
is gone; concurrent charges; amounts in Stripe's units; Stripe's refusals.

Stripe is localstripe (a separate process), behind `StripeProxy` on
127.0.0.1 where a test needs a fault; what is asserted is what localstripe
holds (exactly one PaymentIntent per invoice, its amount) and what bxb
answers and stores."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import grpc
import pytest

from bxb.payments.v1 import payments_pb2 as pb
from bxb.payments.v1 import payments_pb2_grpc
from services.common import grpc_server
from services.common.errors import error_info
from services.common.tenancy import metadata
from services.payments import server as payments_server
from tests.conftest import Infra, Stack, Tenant, start
from tests.service.test_gateway_charge import issued, payment_methods_saved, payments
from tests.stripe import AUTHENTICATED_CARD, GOOD_CARD, LocalStripe, StripeProxy


async def customer_invoice(
    stack: Stack, tenant: Tenant, localstripe: LocalStripe, card: str = GOOD_CARD, **invoice
) -> tuple[str, dict]:
    """A Stripe customer with a saved card, and an invoice issued to them: (cus_..., invoice)."""
    stripe_customer, method = await localstripe.customer_with_card(card)
    saved = {"provider_customer_id": stripe_customer, "provider_payment_method": method}
    invoice = await issued(
        tenant,
        localstripe,
        card="",
        billing={"provider": "stripe", "auto_collect": False},
        payment_method=saved,
        **invoice,
    )
    await payment_methods_saved(stack, tenant)
    return stripe_customer, invoice


@asynccontextmanager
async def payments_through(
    stack: Stack, infra: Infra, proxy: StripeProxy, **settings
) -> AsyncIterator[payments_pb2_grpc.PaymentServiceStub]:
    """A second payments process on the stack's database, calling Stripe
    through the proxy (which serves the accounts of the stack's Stripe)."""
    proxy.accounts.update(stack.stripe.accounts)
    service = payments_server.build(
        payments_server.Settings(
            "",
            infra.postgres.url("payments"),
            infra.nats.url,
            stack.invoicing,
            stripe_api_base=proxy.url,
            **settings,
        )
    )
    server, address = await start(service)
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            yield payments_pb2_grpc.PaymentServiceStub(channel)
    finally:
        await grpc_server.stop(service, server, grace=1)


async def charge(stub: payments_pb2_grpc.PaymentServiceStub, tenant: Tenant, invoice: dict) -> pb.Payment:
    request = pb.ChargeInvoiceRequest(invoice_id=invoice["id"])
    return await stub.ChargeInvoice(request, metadata=metadata(tenant.organization_id), timeout=10)


async def refused(stub, tenant: Tenant, invoice: dict) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await charge(stub, tenant, invoice)
    return raised.value


async def test_concurrent_charges_of_one_invoice_create_one_payment_intent(
    stack: Stack, tenant: Tenant, localstripe: LocalStripe
):
    stripe_customer, invoice = await customer_invoice(stack, tenant, localstripe)
    answers = await asyncio.gather(*(tenant.http.post(f"/v1/invoices/{invoice['id']}/charge") for _ in range(6)))
    [intent] = await localstripe.intents_of(stripe_customer)
    assert (intent.status, intent.amount) == ("succeeded", 4750)
    for answer in answers:  # each either got the payment or was told a charge is under way
        if answer.status_code == 200:
            assert answer.json()["payment_intent"] == intent.id
        else:
            assert (answer.status_code, answer.json()["error"]["reason"]) == (409, "PAYMENT_IN_PROGRESS")
    assert any(answer.status_code == 200 for answer in answers)


async def test_a_charge_waiting_on_stripe_holds_no_lock_and_a_second_one_is_refused(
    stack: Stack, infra: Infra, tenant: Tenant, localstripe: LocalStripe
):
    stripe_customer, invoice = await customer_invoice(stack, tenant, localstripe)
    async with StripeProxy(localstripe) as proxy, payments_through(stack, infra, proxy) as stub:
        proxy.mode = "hold"
        first = asyncio.create_task(charge(stub, tenant, invoice))
        await asyncio.wait_for(proxy.arrived.wait(), 10)
        # The first charge is at Stripe: a second one is answered at once, not queued behind it.
        second = await asyncio.wait_for(refused(stub, tenant, invoice), 5)
        assert second.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert error_info(second).reason == "PAYMENT_IN_PROGRESS"
        proxy.release.set()
        paid = await first
    [intent] = await localstripe.intents_of(stripe_customer)
    assert (paid.status, paid.provider_payment_id) == (pb.PAYMENT_STATUS_SUCCEEDED, intent.id)


async def test_an_answer_lost_after_stripe_charged_is_reconciled_never_charged_twice(
    stack: Stack, infra: Infra, tenant: Tenant, localstripe: LocalStripe
):
    stripe_customer, invoice = await customer_invoice(stack, tenant, localstripe)
    async with StripeProxy(localstripe) as proxy, payments_through(stack, infra, proxy) as stub:
        proxy.mode = "drop"  # Stripe charges, the answer never comes back
        lost = await refused(stub, tenant, invoice)
        assert lost.code() == grpc.StatusCode.UNAVAILABLE
        assert proxy.forwarded >= 1  # Stripe charged; the recovery sweep may already have asked again
        paid = await charge(stub, tenant, invoice)  # the retry finds the charge instead of making another
    [intent] = await localstripe.intents_of(stripe_customer)
    assert (intent.status, paid.status, paid.provider_payment_id) == (
        "succeeded",
        pb.PAYMENT_STATUS_SUCCEEDED,
        intent.id,
    )
    assert len(proxy.idempotency_keys("/v1/payment_intents")) == 1  # however often asked, one charge


async def test_stripe_not_answering_is_unavailable_within_the_deadline(
    stack: Stack, infra: Infra, tenant: Tenant, localstripe: LocalStripe
):
    stripe_customer, invoice = await customer_invoice(stack, tenant, localstripe)
    async with StripeProxy(localstripe) as proxy, payments_through(stack, infra, proxy, stripe_timeout=0.5) as stub:
        proxy.mode = "stall"
        started = asyncio.get_running_loop().time()
        stalled = await refused(stub, tenant, invoice)
        assert stalled.code() == grpc.StatusCode.UNAVAILABLE
        assert asyncio.get_running_loop().time() - started < 5
        proxy.mode = "error"  # Stripe's own failure: the outcome is just as unknown
        failed = await refused(stub, tenant, invoice)
        assert failed.code() == grpc.StatusCode.UNAVAILABLE
        assert await localstripe.intents_of(stripe_customer) == []
        proxy.mode = "pass"
        paid = await charge(stub, tenant, invoice)
    [intent] = await localstripe.intents_of(stripe_customer)
    assert (paid.status, paid.provider_payment_id) == (pb.PAYMENT_STATUS_SUCCEEDED, intent.id)


@pytest.mark.parametrize(
    ("currency", "calls", "amount_cents", "stripe_amount"),
    [
        ("USD", 85000, 4750, 4750),  # two decimals both ways
        ("JPY", 85000, 48, 48),  # zero-decimal both ways
        ("ISK", 85000, 48, 4800),  # zero-decimal in ISO 4217, two decimals (whole kronur) at Stripe
        ("KWD", 85010, 47505, 47500),  # three decimals, Stripe's last digit 0: never more than owed
    ],
)
async def test_amounts_reach_stripe_in_its_units_for_the_currency(
    stack: Stack, tenant: Tenant, localstripe: LocalStripe, currency, calls, amount_cents, stripe_amount
):
    stripe_customer, invoice = await customer_invoice(stack, tenant, localstripe, currency=currency, calls=calls)
    assert (invoice["currency"], invoice["total_amount_cents"]) == (currency, amount_cents)
    charged = await tenant.http.post(f"/v1/invoices/{invoice['id']}/charge")
    assert charged.status_code == 200, charged.text
    assert (charged.json()["amount_cents"], charged.json()["currency"]) == (amount_cents, currency)
    [intent] = await localstripe.intents_of(stripe_customer)
    assert (intent.amount, intent.currency, intent.status) == (stripe_amount, currency.lower(), "succeeded")


async def deleted_at_stripe(stack: Stack, tenant: Tenant, localstripe: LocalStripe) -> tuple[str, dict]:
    """A customer whose Stripe customer was deleted at Stripe behind bxb's
    back (its customer.deleted webhook never came), and an invoice issued to
    it: (cus_..., invoice)."""
    stripe_customer, invoice = await customer_invoice(stack, tenant, localstripe)
    await localstripe.client().v1.customers.delete_async(stripe_customer)
    return stripe_customer, invoice


async def test_a_request_stripe_refuses_is_not_a_card_decline(stack: Stack, tenant: Tenant, localstripe: LocalStripe):
    stripe_customer, invoice = await deleted_at_stripe(stack, tenant, localstripe)
    answer = await tenant.http.post(f"/v1/invoices/{invoice['id']}/charge")
    assert answer.status_code == 409, answer.text
    assert (answer.json()["error"]["code"], answer.json()["error"]["reason"]) == (
        "FAILED_PRECONDITION",
        "PROVIDER_REJECTED",
    )
    assert "Not Found" in answer.json()["error"]["message"]  # localstripe's words for an unknown customer
    # The customer's card did not fail: the invoice is still owed, and nothing was charged.
    assert await payments(stack, tenant, invoice["id"]) == [("PAYMENT_STATUS_PENDING", 4750)]
    assert await localstripe.intents_of(stripe_customer) == []


async def test_a_payment_that_needs_the_customer_is_recorded_as_such_and_not_charged_again(
    stack: Stack, tenant: Tenant, localstripe: LocalStripe
):
    stripe_customer, invoice = await customer_invoice(stack, tenant, localstripe, card=AUTHENTICATED_CARD)
    for _ in range(2):  # charging again looks at the intent waiting for the customer: no second one
        answer = await tenant.http.post(f"/v1/invoices/{invoice['id']}/charge")
        assert (answer.status_code, answer.json()["error"]["reason"]) == (402, "PAYMENT_REQUIRES_ACTION")
    [intent] = await localstripe.intents_of(stripe_customer)
    assert intent.status == "requires_action"
    assert intent.id in answer.json()["error"]["message"]
    assert await payments(stack, tenant, invoice["id"]) == [("PAYMENT_STATUS_REQUIRES_ACTION", 4750)]
