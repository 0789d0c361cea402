"""/v1/plans: price plans, versioned."""

from __future__ import annotations

from starlette.routing import Route

from bxb.catalog.v1 import plans_pb2 as pb
from gateway import render
from gateway.call import Call, endpoint, json
from gateway.errors import invalid
from gateway.schema import Spec, array, obj, string

INTERVALS = ("weekly", "monthly", "quarterly", "yearly")
MODELS = ("standard", "graduated")

RANGE = obj(
    {
        "from": Spec("decimal", required=True),
        "to": Spec("decimal", nullable=True),
        "per_unit": Spec("decimal"),
        "flat_amount": Spec("decimal"),
    }
)
CHARGE = obj(
    {
        "billable_metric_code": string(required=True, max_length=100),
        "charge_model": string(required=True, choices=MODELS),
        "properties": obj({"amount": Spec("decimal"), "graduated_ranges": array(RANGE, max_items=100)}, required=True),
    }
)
CREATE = obj(
    {
        "name": string(max_length=200),
        "code": string(required=True, max_length=100),
        "description": string(max_length=2000),
        "interval": string(required=True, choices=INTERVALS),
        "amount_cents": Spec("integer"),
        "amount_currency": string(max_length=3),
        "currency": string(max_length=3),
        "charges": array(CHARGE, max_items=100),
    }
)


def charge_json(charge: pb.Charge) -> dict:
    props = charge.properties
    if charge.charge_model == pb.CHARGE_MODEL_STANDARD:
        properties: dict = {"amount": props.amount}
    else:
        properties = {
            "graduated_ranges": [
                {
                    "from": render.bound(r.from_value),
                    "to": render.bound(r.to_value),
                    "per_unit": r.per_unit_amount,
                    "flat_amount": r.flat_amount,
                }
                for r in props.graduated_ranges
            ]
        }
    return {
        "id": charge.id,
        "billable_metric_code": charge.billable_metric_code,
        "charge_model": render.enum(pb.ChargeModel, charge.charge_model, "CHARGE_MODEL_"),
        "properties": properties,
    }


def plan_json(plan: pb.Plan) -> dict:
    return {
        "id": plan.id,
        "code": plan.code,
        "name": plan.name,
        "description": plan.description,
        "version": plan.version,
        "interval": render.enum(pb.PlanInterval, plan.interval, "PLAN_INTERVAL_"),
        "amount_cents": plan.amount_cents,
        "currency": plan.currency,
        "charges": [charge_json(c) for c in plan.charges],
        "created_at": render.time(plan, "create_time"),
    }


def charge_proto(charge: dict) -> pb.Charge:
    props = charge["properties"]
    ranges = [
        pb.GraduatedRange(
            from_value=r["from"],
            to_value=r["to"] or "",
            per_unit_amount=r["per_unit"] or "",
            flat_amount=r["flat_amount"] or "",
        )
        for r in props["graduated_ranges"] or []
    ]
    return pb.Charge(
        billable_metric_code=charge["billable_metric_code"],
        charge_model=render.enum_value(pb.ChargeModel, charge["charge_model"], "CHARGE_MODEL_"),
        properties=pb.ChargeProperties(amount=props["amount"] or "", graduated_ranges=ranges),
    )


async def create(call: Call):
    body = call.body
    if body["currency"] and body["amount_currency"] and body["currency"] != body["amount_currency"]:
        raise invalid("currency and amount_currency disagree", "amount_currency")
    plan = pb.Plan(
        code=body["code"],
        name=body["name"] or "",
        description=body["description"] or "",
        interval=render.enum_value(pb.PlanInterval, body["interval"], "PLAN_INTERVAL_"),
        amount_cents=body["amount_cents"] or 0,
        currency=body["currency"] or body["amount_currency"] or "",
        charges=[charge_proto(c) for c in body["charges"] or []],
    )
    created = await call.clients.plans.CreatePlan(pb.CreatePlanRequest(plan=plan), **call.options)
    return json(plan_json(created), 201)


async def get(call: Call):
    plan = await call.clients.plans.GetPlan(
        pb.GetPlanRequest(code=call.path("code"), version=call.query_int("version")), **call.options
    )
    return json(plan_json(plan))


async def list_(call: Call):
    reply = await call.clients.plans.ListPlans(
        pb.ListPlansRequest(page_size=call.query_int("page_size"), page_token=call.query("page_token")), **call.options
    )
    return json({"plans": [plan_json(p) for p in reply.plans], "next_page_token": reply.next_page_token})


routes = [
    Route("/v1/plans", endpoint(create, CREATE), methods=["POST"]),
    Route("/v1/plans", endpoint(list_), methods=["GET"]),
    Route("/v1/plans/{code}", endpoint(get), methods=["GET"]),
]
