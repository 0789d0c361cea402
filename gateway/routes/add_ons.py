"""/v1/add_ons and /v1/applied_add_ons: one-off charges, each invoiced at once
when applied to a customer (`amount_cents` and `amount_currency` override the
add-on's price for that customer)."""

from __future__ import annotations

import grpc
from starlette.routing import Route

from bxb.catalog.v1 import add_ons_pb2 as pb
from gateway import render
from gateway.call import Call, endpoint, json
from gateway.errors import respelled
from gateway.schema import Spec, array, obj, one_of, string

CREATE = obj(
    {
        "code": string(required=True, max_length=100),
        "name": string(max_length=200),
        "description": string(max_length=2000),
        "amount_cents": Spec("integer", required=True),
        "amount_currency": string(max_length=3),
        "tax_codes": array(string(max_length=100), max_items=10),
    }
)
APPLY = obj(
    {
        "customer_id": string(max_length=200),
        "external_customer_id": string(max_length=200),
        "add_on_code": string(required=True, max_length=100),
        "amount_cents": Spec("integer"),
        "amount_currency": string(max_length=3),
    }
)


SPELLED = {"currency": "amount_currency"}  # the catalog's field names as this API spells them


def add_on_json(add_on: pb.AddOn) -> dict:
    return {
        "id": add_on.id,
        "code": add_on.code,
        "name": add_on.name,
        "description": add_on.description,
        "amount_cents": add_on.amount_cents,
        "amount_currency": add_on.currency,
        "tax_codes": list(add_on.tax_codes),
        "created_at": render.time(add_on, "create_time"),
    }


def applied_json(applied: pb.AppliedAddOn) -> dict:
    return {
        "id": applied.id,
        "customer_id": applied.customer_id,
        "add_on_code": applied.add_on.code,
        "amount_cents": applied.amount_cents,
        "amount_currency": applied.currency,
        "add_on": add_on_json(applied.add_on),
        "created_at": render.time(applied, "create_time"),
    }


async def create(call: Call):
    body = call.body
    add_on = pb.AddOn(
        code=body["code"],
        name=body["name"] or "",
        description=body["description"] or "",
        amount_cents=body["amount_cents"],
        currency=body["amount_currency"] or "",
        tax_codes=body["tax_codes"] or [],
    )
    try:
        created = await call.clients.add_ons.CreateAddOn(pb.CreateAddOnRequest(add_on=add_on), **call.options)
    except grpc.aio.AioRpcError as error:
        return respelled(error, SPELLED)
    return json(add_on_json(created), 201)


async def get(call: Call):
    add_on = await call.clients.add_ons.GetAddOn(pb.GetAddOnRequest(code=call.path("code")), **call.options)
    return json(add_on_json(add_on))


async def list_(call: Call):
    reply = await call.clients.add_ons.ListAddOns(
        pb.ListAddOnsRequest(page_size=call.query_int("page_size"), page_token=call.query("page_token")),
        **call.options,
    )
    return json({"add_ons": [add_on_json(a) for a in reply.add_ons], "next_page_token": reply.next_page_token})


async def apply(call: Call):
    body = call.body
    customer_id, _ = one_of(body, ("customer_id", "external_customer_id"))
    request = pb.ApplyAddOnRequest(
        customer_id=customer_id,
        add_on_code=body["add_on_code"],
        amount_cents=body["amount_cents"] or 0,
        currency=body["amount_currency"] or "",
    )
    try:
        applied = await call.clients.add_ons.ApplyAddOn(request, **call.options)
    except grpc.aio.AioRpcError as error:
        return respelled(error, SPELLED)
    return json(applied_json(applied), 201)


async def list_applied(call: Call):
    reply = await call.clients.add_ons.ListAppliedAddOns(
        pb.ListAppliedAddOnsRequest(
            customer_id=call.query("customer_id"),
            page_size=call.query_int("page_size"),
            page_token=call.query("page_token"),
        ),
        **call.options,
    )
    return json(
        {"applied_add_ons": [applied_json(a) for a in reply.applied_add_ons], "next_page_token": reply.next_page_token}
    )


routes = [
    Route("/v1/add_ons", endpoint(create, CREATE), methods=["POST"]),
    Route("/v1/add_ons", endpoint(list_), methods=["GET"]),
    Route("/v1/add_ons/{code}", endpoint(get), methods=["GET"]),
    Route("/v1/applied_add_ons", endpoint(apply, APPLY), methods=["POST"]),
    Route("/v1/applied_add_ons", endpoint(list_applied), methods=["GET"]),
]
