"""/v1/plans: price plans, versioned."""

from __future__ import annotations

from collections.abc import Callable

from starlette.routing import Route

from bxb.catalog.v1 import plans_pb2 as pb
from gateway import render
from gateway.call import Call, endpoint, json
from gateway.errors import invalid
from gateway.schema import Spec, array, obj, string

INTERVALS = ("weekly", "monthly", "quarterly", "yearly")

# The properties a charge of each model has, in the order they render; any
# other property given is refused (by the catalog, or here; see charge_proto).
SHOWN = {
    "standard": ("amount",),
    "graduated": ("graduated_ranges",),
    "volume": ("volume_ranges",),
    "package": ("amount", "package_size", "free_units"),
    "percentage": (
        "rate",
        "fixed_amount",
        "free_units_per_events",
        "free_units_per_total_aggregation",
        "per_transaction_min_amount",
        "per_transaction_max_amount",
    ),
    "graduated_percentage": ("graduated_percentage_ranges",),
    "flat": ("amount",),
}


def ranges_spec(price: str) -> Spec:
    """Tiers with inclusive whole-unit bounds; `price` is per_unit or rate."""
    tier = obj(
        {
            "from": Spec("decimal", required=True),
            "to": Spec("decimal", nullable=True),
            price: Spec("decimal"),
            "flat_amount": Spec("decimal"),
        }
    )
    return array(tier, max_items=100)


PROPERTIES = obj(
    {
        "amount": Spec("decimal"),
        "graduated_ranges": ranges_spec("per_unit"),
        "volume_ranges": ranges_spec("per_unit"),
        "package_size": Spec("integer"),
        "free_units": Spec("integer"),
        "rate": Spec("decimal"),
        "fixed_amount": Spec("decimal"),
        "free_units_per_events": Spec("integer"),
        "free_units_per_total_aggregation": Spec("decimal"),
        "per_transaction_min_amount": Spec("decimal"),
        "per_transaction_max_amount": Spec("decimal"),
        "graduated_percentage_ranges": ranges_spec("rate"),
    },
    required=True,
)
DECIMALS = tuple(name for name, spec in PROPERTIES.fields.items() if spec.kind == "decimal")
INTEGERS = tuple(name for name, spec in PROPERTIES.fields.items() if spec.kind == "integer")
CHARGE = obj(
    {
        "billable_metric_code": string(required=True, max_length=100),
        "charge_model": string(required=True, choices=tuple(SHOWN)),
        "properties": PROPERTIES,
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


def _ranges_json(ranges, price: str, attribute: str) -> list[dict]:
    return [
        {
            "from": render.bound(r.from_value),
            "to": render.bound(r.to_value),
            price: getattr(r, attribute),
            "flat_amount": r.flat_amount,
        }
        for r in ranges
    ]


# How each property renders from the stored, canonical properties. An optional
# value that is not set renders as null.
PROPERTY_JSON = {
    "amount": lambda p: p.amount,
    "graduated_ranges": lambda p: _ranges_json(p.graduated_ranges, "per_unit", "per_unit_amount"),
    "volume_ranges": lambda p: _ranges_json(p.volume_ranges, "per_unit", "per_unit_amount"),
    "package_size": lambda p: p.package_size,
    "free_units": lambda p: p.free_units,
    "rate": lambda p: p.rate,
    "fixed_amount": lambda p: p.fixed_amount or None,
    "free_units_per_events": lambda p: p.free_units_per_events or None,
    "free_units_per_total_aggregation": lambda p: p.free_units_per_total_aggregation or None,
    "per_transaction_min_amount": lambda p: p.per_transaction_min_amount or None,
    "per_transaction_max_amount": lambda p: p.per_transaction_max_amount or None,
    "graduated_percentage_ranges": lambda p: _ranges_json(p.graduated_percentage_ranges, "rate", "rate"),
}


def charge_json(charge: pb.Charge) -> dict:
    model = render.enum(pb.ChargeModel, charge.charge_model, "CHARGE_MODEL_")
    return {
        "id": charge.id,
        "billable_metric_code": charge.billable_metric_code,
        "charge_model": model,
        "properties": {name: PROPERTY_JSON[name](charge.properties) for name in SHOWN[model]},
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


def _range_protos(ranges, message: type, price: str, attribute: str) -> list:
    return [
        message(
            from_value=r["from"],
            to_value=r["to"] or "",
            flat_amount=r["flat_amount"] or "",
            **{attribute: r[price] or ""},
        )
        for r in ranges or []
    ]


def charge_proto(charge: dict, path: str) -> pb.Charge:
    """The charge as the catalog takes it; the catalog validates it. An integer
    property given as 0 would read as not set in the proto, so one that the
    model does not have is refused here, as the catalog refuses any other."""
    props = charge["properties"]
    for name in INTEGERS:
        if props[name] is not None and name not in SHOWN[charge["charge_model"]]:
            field = f"{path}.properties.{name}"
            raise invalid(f"{field} does not apply to the {charge['charge_model']} model", field)
    return pb.Charge(
        billable_metric_code=charge["billable_metric_code"],
        charge_model=render.enum_value(pb.ChargeModel, charge["charge_model"], "CHARGE_MODEL_"),
        properties=pb.ChargeProperties(
            graduated_ranges=_range_protos(props["graduated_ranges"], pb.GraduatedRange, "per_unit", "per_unit_amount"),
            volume_ranges=_range_protos(props["volume_ranges"], pb.GraduatedRange, "per_unit", "per_unit_amount"),
            graduated_percentage_ranges=_range_protos(
                props["graduated_percentage_ranges"], pb.GraduatedPercentageRange, "rate", "rate"
            ),
            **{name: props[name] or "" for name in DECIMALS},
            **{name: props[name] or 0 for name in INTEGERS},
        ),
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
        charges=[charge_proto(c, f"charges[{i}]") for i, c in enumerate(body["charges"] or [])],
    )
    created = await call.clients.plans.CreatePlan(pb.CreatePlanRequest(plan=plan), **call.options)
    return json(plan_json(created), 201)


def read_routes(prefix: str, param: str, render: Callable[[pb.Plan], dict]) -> list[Route]:
    """GET one (`?version=N`), list, and versions of plans under `prefix`, in
    the JSON spelling `render` gives (bxb /v1/plans or ABAXUS /v1/price-plans)."""

    async def get(call: Call):
        plan = await call.clients.plans.GetPlan(
            pb.GetPlanRequest(code=call.path(param), version=call.query_int("version")), **call.options
        )
        return json(render(plan))

    async def list_(call: Call):
        reply = await call.clients.plans.ListPlans(
            pb.ListPlansRequest(page_size=call.query_int("page_size"), page_token=call.query("page_token")),
            **call.options,
        )
        return json({"plans": [render(p) for p in reply.plans], "next_page_token": reply.next_page_token})

    async def versions(call: Call):
        reply = await call.clients.plans.ListPlanVersions(
            pb.ListPlanVersionsRequest(
                code=call.path(param), page_size=call.query_int("page_size"), page_token=call.query("page_token")
            ),
            **call.options,
        )
        return json({"plans": [render(p) for p in reply.plans], "next_page_token": reply.next_page_token})

    return [
        Route(prefix, endpoint(list_), methods=["GET"]),
        Route(f"{prefix}/{{{param}}}", endpoint(get), methods=["GET"]),
        Route(f"{prefix}/{{{param}}}/versions", endpoint(versions), methods=["GET"]),
    ]


routes = [Route("/v1/plans", endpoint(create, CREATE), methods=["POST"]), *read_routes("/v1/plans", "code", plan_json)]
