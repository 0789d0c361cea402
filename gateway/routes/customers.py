"""/v1/customers."""

from __future__ import annotations

from starlette.routing import Route

from bxb.catalog.v1 import customers_pb2 as pb
from gateway import render
from gateway.call import Call, endpoint, json
from gateway.errors import invalid
from gateway.schema import Spec, array, obj, string

CREATE = obj(
    {
        "id": string(max_length=200),
        "external_id": string(max_length=200),
        "name": string(max_length=200),
        "email": string(max_length=320),
        "currency": string(max_length=3),
        "billing": obj({"provider": string(max_length=32), "provider_customer_id": string(max_length=200)}),
        "payment_method": obj(
            {
                "provider_customer_id": string(max_length=200),
                "provider_payment_method": string(required=True, max_length=200),
            }
        ),
        "tax_codes": array(string(max_length=100), max_items=10),
        "test_clock_id": string(max_length=64),
        "invoice_grace_period": Spec("integer", bits=32),
    }
)


def customer_json(customer: pb.Customer) -> dict:
    return {
        "id": customer.id,
        "external_id": customer.id,
        "name": customer.name,
        "email": customer.email,
        "currency": customer.currency or None,
        "billing": {
            "provider": customer.billing.provider or None,
            "provider_customer_id": customer.billing.provider_customer_id or None,
        },
        "tax_codes": list(customer.tax_codes),
        "test_clock_id": customer.test_clock_id or None,
        "invoice_grace_period": customer.invoice_grace_period_days,
        "created_at": render.time(customer, "create_time"),
    }


async def create(call: Call):
    body = call.body
    if body["id"] and body["external_id"] and body["id"] != body["external_id"]:
        raise invalid("id and external_id name the same thing and disagree", "external_id")
    billing = body["billing"] or {}
    customer = pb.Customer(
        id=body["id"] or body["external_id"] or "",
        name=body["name"] or "",
        email=body["email"] or "",
        currency=body["currency"] or "",
        billing=pb.BillingConfiguration(
            provider=billing.get("provider") or "", provider_customer_id=billing.get("provider_customer_id") or ""
        ),
        tax_codes=body["tax_codes"] or [],
        test_clock_id=body["test_clock_id"] or "",
        invoice_grace_period_days=body["invoice_grace_period"] or 0,
    )
    method = body["payment_method"]
    request = pb.CreateCustomerRequest(
        customer=customer,
        payment_method=pb.PaymentMethodDetails(
            provider_customer_id=method["provider_customer_id"] or "",
            provider_payment_method=method["provider_payment_method"],
        )
        if method
        else None,
    )
    created = await call.clients.customers.CreateCustomer(request, **call.options)
    return json(customer_json(created), 201)


async def get(call: Call):
    customer = await call.clients.customers.GetCustomer(
        pb.GetCustomerRequest(id=call.path("customer_id")), **call.options
    )
    return json(customer_json(customer))


async def list_(call: Call):
    reply = await call.clients.customers.ListCustomers(
        pb.ListCustomersRequest(page_size=call.query_int("page_size"), page_token=call.query("page_token")),
        **call.options,
    )
    return json({"customers": [customer_json(c) for c in reply.customers], "next_page_token": reply.next_page_token})


routes = [
    Route("/v1/customers", endpoint(create, CREATE), methods=["POST"]),
    Route("/v1/customers", endpoint(list_), methods=["GET"]),
    Route("/v1/customers/{customer_id}", endpoint(get), methods=["GET"]),
]
