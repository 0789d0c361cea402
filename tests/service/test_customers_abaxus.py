"""ABAXUS customers: POST /v1/customers with a billing configuration and a
payment method. The catalog keeps the billing on the customer and announces
the customer (bxb.catalog.v1.customer_created, through the outbox); the
payments service, once Stripe shows the payment method is the customer's in
the organization's own account, saves it as the customer's default, once
however often the event is delivered."""

from __future__ import annotations

import grpc
import pytest

from bxb.catalog.v1 import customers_pb2, customers_pb2_grpc, events_pb2
from bxb.payments.v1 import payments_pb2, payments_pb2_grpc
from services.catalog.customers import CUSTOMER_CREATED
from services.common import bus
from services.common.tenancy import metadata
from tests.conftest import Infra, Stack, Tenant, eventually, unique


async def payment_methods(stack: Stack, org: str, customer_id: str) -> list[payments_pb2.PaymentMethod]:
    async with stack.channel("payments") as channel:
        stub = payments_pb2_grpc.PaymentServiceStub(channel)
        request = payments_pb2.ListPaymentMethodsRequest(customer_id=customer_id)
        return list((await stub.ListPaymentMethods(request, metadata=metadata(org))).payment_methods)


async def saved_methods(stack: Stack, org: str, customer_id: str, count: int = 1) -> list[payments_pb2.PaymentMethod]:
    async def check():
        methods = await payment_methods(stack, org, customer_id)
        assert len(methods) == count, methods
        return methods

    return await eventually(check)


def seed_customer(customer_id: str, stripe_customer: str, method: str) -> dict:
    return {
        "id": customer_id,
        "name": "Acme Corp",
        "email": "billing@acme.test",
        "currency": "USD",
        "billing": {"provider": "stripe"},
        "payment_method": {"provider_customer_id": stripe_customer, "provider_payment_method": method},
    }


async def test_the_seed_customer_keeps_billing_and_its_payment_method_becomes_the_default(
    stripe_tenant: Tenant, stack: Stack
):
    tenant = stripe_tenant
    customer_id = unique("cust_acme")
    stripe_customer, card = await tenant.customer_with_card()
    response = await tenant.http.post("/v1/customers", json=seed_customer(customer_id, stripe_customer, card))
    assert response.status_code == 201, response.text
    customer = response.json()
    # the customer's id at the provider comes from the payment method when billing does not give it
    assert customer["billing"] == {"provider": "stripe", "provider_customer_id": stripe_customer, "auto_collect": None}
    assert (await tenant.http.get(f"/v1/customers/{customer_id}")).json() == customer
    [method] = await saved_methods(stack, tenant.organization_id, customer_id)
    assert (method.customer_id, method.provider, method.provider_customer_id, method.provider_payment_method) == (
        customer_id,
        "stripe",
        stripe_customer,
        card,
    )
    assert (method.is_default, method.card_brand, method.card_last4) == (True, "visa", "4242")


async def test_billing_alone_is_kept_and_saves_no_payment_method(stripe_tenant: Tenant, stack: Stack):
    tenant = stripe_tenant
    customer_id = unique("cust")
    stripe_customer, card = await tenant.customer_with_card()
    body = {"id": customer_id, "billing": {"provider": "stripe", "provider_customer_id": stripe_customer}}
    response = await tenant.http.post("/v1/customers", json=body)
    assert response.status_code == 201, response.text
    assert response.json()["billing"] == {
        "provider": "stripe",
        "provider_customer_id": stripe_customer,
        "auto_collect": None,
    }
    # a later customer with a method is saved; by then this one's event was handled too, saving nothing
    marker = unique("cust")
    await tenant.http.post("/v1/customers", json=seed_customer(marker, stripe_customer, card))
    await saved_methods(stack, tenant.organization_id, marker)
    assert await payment_methods(stack, tenant.organization_id, customer_id) == []


async def test_a_customer_without_billing_shows_null_billing(tenant: Tenant):
    response = await tenant.http.post("/v1/customers", json={"id": unique("cust")})
    assert response.status_code == 201
    assert response.json()["billing"] == {"provider": None, "provider_customer_id": None, "auto_collect": None}


async def test_a_payment_method_without_billing_is_saved_with_the_default_provider(stripe_tenant: Tenant, stack: Stack):
    tenant = stripe_tenant
    customer_id = unique("cust")
    stripe_customer, card = await tenant.customer_with_card()
    method = {"provider_customer_id": stripe_customer, "provider_payment_method": card}
    response = await tenant.http.post("/v1/customers", json={"id": customer_id, "payment_method": method})
    assert response.status_code == 201, response.text
    assert response.json()["billing"] == {
        "provider": None,
        "provider_customer_id": stripe_customer,
        "auto_collect": None,
    }
    [saved] = await saved_methods(stack, tenant.organization_id, customer_id)
    assert (saved.provider, saved.provider_payment_method) == ("stripe", card)


async def test_an_unknown_provider_is_refused(tenant: Tenant):
    customer_id = unique("cust")
    response = await tenant.http.post("/v1/customers", json={"id": customer_id, "billing": {"provider": "paypal"}})
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "billing.provider"
    assert (await tenant.http.get(f"/v1/customers/{customer_id}")).status_code == 404


async def test_a_payment_method_without_any_provider_customer_id_is_refused(tenant: Tenant):
    customer_id = unique("cust")
    body = {"id": customer_id, "payment_method": {"provider_payment_method": "pm_1"}}
    response = await tenant.http.post("/v1/customers", json=body)
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "payment_method.provider_customer_id"
    assert (await tenant.http.get(f"/v1/customers/{customer_id}")).status_code == 404


async def test_a_payment_method_needs_the_provider_payment_method(tenant: Tenant):
    body = {"id": unique("cust"), "payment_method": {"provider_customer_id": "cus_1"}}
    response = await tenant.http.post("/v1/customers", json=body)
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "payment_method.provider_payment_method"


@pytest.mark.parametrize(
    ("billing", "method", "field"),
    [
        ({}, {"provider_customer_id": "cus_1"}, "payment_method.provider_payment_method"),
        (
            {},
            {"provider_customer_id": "c" * 201, "provider_payment_method": "pm"},
            "payment_method.provider_customer_id",
        ),
        ({"provider_customer_id": "c" * 201}, None, "billing.provider_customer_id"),
    ],
)
async def test_the_catalog_refuses_incomplete_or_oversized_billing(
    tenant: Tenant, stack: Stack, billing: dict, method: dict | None, field: str
):
    customer_id = unique("cust")
    request = customers_pb2.CreateCustomerRequest(
        customer=customers_pb2.Customer(id=customer_id, billing=customers_pb2.BillingConfiguration(**billing)),
        payment_method=customers_pb2.PaymentMethodDetails(**method) if method is not None else None,
    )
    async with stack.channel("catalog") as channel:
        stub = customers_pb2_grpc.CustomerServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.CreateCustomer(request, metadata=metadata(tenant.organization_id))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"{field} " in raised.value.details()
    assert (await tenant.http.get(f"/v1/customers/{customer_id}")).status_code == 404


async def test_a_redelivered_customer_created_event_saves_the_method_once(
    stripe_tenant: Tenant, stack: Stack, infra: Infra
):
    tenant = stripe_tenant
    customer_id = unique("cust")
    stripe_customer, card = await tenant.customer_with_card()
    created = (await tenant.http.post("/v1/customers", json=seed_customer(customer_id, stripe_customer, card))).json()
    [first] = await saved_methods(stack, tenant.organization_id, customer_id)
    second_card = await tenant.stripe_client().v1.payment_methods.create_async(
        params={"type": "card", "card": {"number": "5555555555554444", "exp_month": 1, "exp_year": 2041, "cvc": "123"}}
    )
    event = events_pb2.CustomerCreated(
        event_id=unique("evt"),
        organization_id=tenant.organization_id,
        customer=customers_pb2.Customer(
            id=customer_id, billing=customers_pb2.BillingConfiguration(provider=created["billing"]["provider"])
        ),
        payment_method=customers_pb2.PaymentMethodDetails(
            provider_customer_id=stripe_customer, provider_payment_method=card
        ),
    )
    publisher = await bus.Bus.connect(infra.nats.url, "test-redelivery")
    try:
        await publisher.publish(CUSTOMER_CREATED, event.SerializeToString(), unique("msg"), tenant.organization_id)
        # a different method for the same customer, published after it, becomes the default
        newer = events_pb2.CustomerCreated()
        newer.CopyFrom(event)
        newer.payment_method.provider_payment_method = second_card.id  # unattached: attached to the customer
        await publisher.publish(CUSTOMER_CREATED, newer.SerializeToString(), unique("msg"), tenant.organization_id)
    finally:
        await publisher.close()
    methods = await saved_methods(stack, tenant.organization_id, customer_id, count=2)
    assert [(m.provider_payment_method, m.is_default) for m in methods] == [(second_card.id, True), (card, False)]
    attached = await tenant.stripe_client().v1.payment_methods.retrieve_async(second_card.id)
    assert (attached.customer, methods[0].card_last4, methods[0].card_exp_year) == (stripe_customer, "4444", 2041)
    assert methods[1].id == first.id


@pytest.mark.parametrize(("given", "shown"), [(False, False), (True, True), (None, None)])
async def test_auto_collect_is_read_and_shown_null_when_unset(tenant: Tenant, given: bool | None, shown: bool | None):
    customer_id = unique("cust")
    body = {"id": customer_id, "billing": {"provider": "stripe", "auto_collect": given}}
    response = await tenant.http.post("/v1/customers", json=body)
    assert response.status_code == 201, response.text
    billing = {"provider": "stripe", "provider_customer_id": None, "auto_collect": shown}
    assert response.json()["billing"] == billing
    assert (await tenant.http.get(f"/v1/customers/{customer_id}")).json()["billing"] == billing
    [listed] = [c for c in (await tenant.http.get("/v1/customers")).json()["customers"] if c["id"] == customer_id]
    assert listed["billing"] == billing


async def test_auto_collect_must_be_a_boolean(tenant: Tenant):
    body = {"id": unique("cust"), "billing": {"provider": "stripe", "auto_collect": "no"}}
    response = await tenant.http.post("/v1/customers", json=body)
    assert (response.status_code, response.json()["error"]["field"]) == (400, "billing.auto_collect")
