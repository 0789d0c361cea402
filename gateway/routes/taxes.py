"""/v1/taxes: tax rates, in percent. An invoice carries its plan's taxes
(`tax_codes`), else its customer's, else those `applied_to_organization`."""

from __future__ import annotations

from starlette.routing import Route

from bxb.catalog.v1 import taxes_pb2 as pb
from gateway import render
from gateway.call import Call, endpoint, json
from gateway.schema import Spec, obj, string

CREATE = obj(
    {
        "code": string(required=True, max_length=100),
        "name": string(max_length=200),
        "rate": Spec("decimal", required=True),
        "description": string(max_length=2000),
        "applied_to_organization": Spec("boolean"),
    }
)


def tax_json(tax: pb.Tax) -> dict:
    return {
        "id": tax.id,
        "code": tax.code,
        "name": tax.name,
        "rate": tax.rate,
        "description": tax.description,
        "applied_to_organization": tax.applied_to_organization,
        "created_at": render.time(tax, "create_time"),
    }


async def create(call: Call):
    body = call.body
    tax = pb.Tax(
        code=body["code"],
        name=body["name"] or "",
        rate=body["rate"],
        description=body["description"] or "",
        applied_to_organization=bool(body["applied_to_organization"]),
    )
    created = await call.clients.taxes.CreateTax(pb.CreateTaxRequest(tax=tax), **call.options)
    return json(tax_json(created), 201)


async def get(call: Call):
    return json(tax_json(await call.clients.taxes.GetTax(pb.GetTaxRequest(code=call.path("code")), **call.options)))


async def list_(call: Call):
    reply = await call.clients.taxes.ListTaxes(
        pb.ListTaxesRequest(page_size=call.query_int("page_size"), page_token=call.query("page_token")),
        **call.options,
    )
    return json({"taxes": [tax_json(t) for t in reply.taxes], "next_page_token": reply.next_page_token})


routes = [
    Route("/v1/taxes", endpoint(create, CREATE), methods=["POST"]),
    Route("/v1/taxes", endpoint(list_), methods=["GET"]),
    Route("/v1/taxes/{code}", endpoint(get), methods=["GET"]),
]
