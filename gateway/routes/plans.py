"""/v1/plans: price plans, versioned.

Besides its model's properties a charge may have `filters` (a price per set
of event property values the metric declares: `{"values": {"region":
["us-east-1"]}, "properties": {...}, "invoice_display_name": "US East"}`),
`properties.grouped_by` (property keys splitting its usage into groups),
`min_amount_cents`, `pay_in_advance` (flat charges only) and
`invoice_display_name`. A plan may be billed in advance (`pay_in_advance`),
start with a trial (`trial_period_days`) and carry a `minimum_commitment`
(`{"amount_cents": N}`)."""

from __future__ import annotations

import re
from collections.abc import Callable

import grpc
from starlette.routing import Route

from bxb.catalog.v1 import billable_metrics_pb2 as metrics_pb
from bxb.catalog.v1 import plans_pb2 as pb
from gateway import render
from gateway.call import Call, endpoint, json
from gateway.errors import api_error, invalid
from gateway.schema import Spec, array, mapping, obj, string
from services.common.charge_fields import MODEL_FIELDS

INTERVALS = ("weekly", "monthly", "quarterly", "yearly")

# The properties a charge of each model has, in the order they render; any
# other property given is refused (by the catalog, or here; see charge_proto).
SHOWN = MODEL_FIELDS


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
        "grouped_by": array(string(required=True)),
    },
    required=True,
)
DECIMALS = tuple(name for name, spec in PROPERTIES.fields.items() if spec.kind == "decimal")
INTEGERS = tuple(name for name, spec in PROPERTIES.fields.items() if spec.kind == "integer")
# The event property values a filter matches: {"region": ["us-east-1"]}.
FILTER_VALUES = mapping(array(string(required=True), required=True), required=True)


def filter_spec(properties: Spec) -> Spec:
    return obj({"values": FILTER_VALUES, "properties": properties, "invoice_display_name": string()})


# The terms of a charge besides its metric, model and properties, spelled the same in both APIs.
CHARGE_TERMS = {
    "min_amount_cents": Spec("integer"),
    "pay_in_advance": Spec("boolean"),
    "invoice_display_name": string(),
}
CHARGE = obj(
    {
        "billable_metric_code": string(required=True, max_length=100),
        "charge_model": string(required=True, choices=tuple(SHOWN)),
        "properties": PROPERTIES,
        "filters": array(filter_spec(PROPERTIES)),
        **CHARGE_TERMS,
    }
)
# The terms of a plan besides its price and charges, spelled the same in both APIs.
PLAN_TERMS = {
    "pay_in_advance": Spec("boolean"),
    "trial_period_days": Spec("integer", bits=32),
    "minimum_commitment": obj({"amount_cents": Spec("integer", required=True)}, nullable=True),
    "tax_codes": array(string(max_length=100), max_items=10),
    "usage_thresholds": array(
        obj(
            {
                "amount_cents": Spec("integer", required=True),
                "threshold_display_name": string(max_length=200),
                "recurring": Spec("boolean"),
            }
        ),
    ),
}
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
        **PLAN_TERMS,
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


def properties_json(props: pb.ChargeProperties, model: str) -> dict:
    """The model's properties; grouped_by only when the charge is grouped."""
    shown = {name: PROPERTY_JSON[name](props) for name in SHOWN[model]}
    if props.grouped_by:
        shown["grouped_by"] = list(props.grouped_by)
    return shown


def filter_values_json(charge_filter: pb.ChargeFilter) -> dict:
    return {item.key: list(item.values) for item in charge_filter.values}


def charge_terms_json(charge: pb.Charge) -> dict:
    return {
        "invoice_display_name": charge.invoice_display_name or None,
        "pay_in_advance": charge.pay_in_advance,
        "min_amount_cents": charge.min_amount_cents,
    }


def charge_json(charge: pb.Charge) -> dict:
    model = render.enum(pb.ChargeModel, charge.charge_model, "CHARGE_MODEL_")
    return {
        "id": charge.id,
        "billable_metric_code": charge.billable_metric_code,
        "charge_model": model,
        **charge_terms_json(charge),
        "properties": properties_json(charge.properties, model),
        "filters": [
            {
                "values": filter_values_json(f),
                "properties": properties_json(f.properties, model),
                "invoice_display_name": f.invoice_display_name or None,
            }
            for f in charge.filters
        ],
    }


def plan_terms_json(plan: pb.Plan) -> dict:
    commitment = plan.minimum_commitment_cents
    return {
        "pay_in_advance": plan.pay_in_advance,
        "trial_period_days": plan.trial_period_days,
        "minimum_commitment": {"amount_cents": commitment} if commitment else None,
        "tax_codes": list(plan.tax_codes),
        "usage_thresholds": [
            {"amount_cents": t.amount_cents, "threshold_display_name": t.display_name or None, "recurring": t.recurring}
            for t in plan.usage_thresholds
        ],
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
        **plan_terms_json(plan),
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


def properties_proto(props: dict, model: str, where: str) -> pb.ChargeProperties:
    """Properties as the catalog takes them; the catalog validates them. An
    integer property given as 0 would read as not set in the proto, so one that
    the model does not have is refused here, as the catalog refuses any other."""
    for name in INTEGERS:
        if props[name] is not None and name not in SHOWN[model]:
            field = f"{where}.{name}"
            raise invalid(f"{field} does not apply to the {model} model", field)
    return pb.ChargeProperties(
        graduated_ranges=_range_protos(props["graduated_ranges"], pb.GraduatedRange, "per_unit", "per_unit_amount"),
        volume_ranges=_range_protos(props["volume_ranges"], pb.GraduatedRange, "per_unit", "per_unit_amount"),
        graduated_percentage_ranges=_range_protos(
            props["graduated_percentage_ranges"], pb.GraduatedPercentageRange, "rate", "rate"
        ),
        grouped_by=props["grouped_by"] or [],
        **{name: props[name] or "" for name in DECIMALS},
        **{name: props[name] or 0 for name in INTEGERS},
    )


def charge_proto(charge: dict, path: str) -> pb.Charge:
    """The charge as the catalog takes it (see properties_proto)."""
    model = charge["charge_model"]
    filters = [
        pb.ChargeFilter(
            values=[metrics_pb.PropertyValues(key=key, values=values) for key, values in f["values"].items()],
            properties=properties_proto(f["properties"], model, f"{path}.filters[{index}].properties"),
            invoice_display_name=f["invoice_display_name"] or "",
        )
        for index, f in enumerate(charge["filters"] or [])
    ]
    return pb.Charge(
        billable_metric_code=charge["billable_metric_code"],
        charge_model=render.enum_value(pb.ChargeModel, model, "CHARGE_MODEL_"),
        properties=properties_proto(charge["properties"], model, f"{path}.properties"),
        filters=filters,
        min_amount_cents=charge["min_amount_cents"] or 0,
        pay_in_advance=bool(charge["pay_in_advance"]),
        invoice_display_name=charge["invoice_display_name"] or "",
    )


def plan_terms(body: dict) -> dict:
    """The plan terms of a checked body as pb.Plan fields."""
    commitment = body["minimum_commitment"]
    return {
        "pay_in_advance": bool(body["pay_in_advance"]),
        "trial_period_days": body["trial_period_days"] or 0,
        "minimum_commitment_cents": commitment["amount_cents"] if commitment else 0,
        "tax_codes": body["tax_codes"] or [],
        "usage_thresholds": [
            pb.UsageThreshold(
                amount_cents=t["amount_cents"],
                display_name=t["threshold_display_name"] or "",
                recurring=bool(t["recurring"]),
            )
            for t in body["usage_thresholds"] or []
        ],
    }


def json_path(text: str) -> str:
    """Rewrites the catalog's name of a plan field in a message or field to the JSON one."""
    return re.sub(r"\bminimum_commitment_cents\b", "minimum_commitment.amount_cents", text)


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
        **plan_terms(body),
    )
    try:
        created = await call.clients.plans.CreatePlan(pb.CreatePlanRequest(plan=plan), **call.options)
    except grpc.aio.AioRpcError as error:
        failure = api_error(error)
        failure.message, failure.field = json_path(failure.message), json_path(failure.field)
        return failure.response()
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
