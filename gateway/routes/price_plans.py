"""/v1/price-plans: the ABAXUS spelling of price plans, on the same versioned
plans as /v1/plans. A price plan's `id` is the plan code; `version_id` is the
server id of the version shown. Charges are converted to the bxb form and
validated by the catalog; an error names the field as ABAXUS spells it
(`charges[0].properties.tiers[1].up_to`). Charge filters carry their
properties in the ABAXUS spelling of the charge's model; the other charge and
plan terms (filters' values, grouped_by, min_amount_cents, pay_in_advance,
invoice_display_name, trial_period_days, minimum_commitment) are spelled as in
/v1/plans."""

from __future__ import annotations

import re

import grpc
from starlette.routing import Route

from bxb.catalog.v1 import plans_pb2 as pb
from gateway import render
from gateway.call import Call, endpoint, json
from gateway.errors import api_error
from gateway.routes import plans
from gateway.schema import Spec, array, check, obj, string

# ABAXUS (and bxb) model names -> the bxb model.
MODELS = {
    "per-unit": "standard",
    "per_unit": "standard",
    "standard": "standard",
    "tiered": "graduated",
    "graduated": "graduated",
    "volume": "volume",
    "package": "package",
    "flat fee": "flat",
    "flat_fee": "flat",
    "flat": "flat",
    "percentage": "percentage",
    "graduated_percentage": "graduated_percentage",
}
# The bxb model -> the ABAXUS name a charge renders with.
MODEL_NAMES = {"standard": "per-unit", "graduated": "tiered", "flat": "flat_fee"}

# bxb model -> (range property, its price key, the tier's ABAXUS price key).
RANGES = {
    "graduated": ("graduated_ranges", "per_unit", "unit_amount"),
    "volume": ("volume_ranges", "per_unit", "unit_amount"),
    "graduated_percentage": ("graduated_percentage_ranges", "rate", "rate"),
}
# Tiers given to a model without ranges become graduated ranges, which the catalog refuses naming them.
NO_RANGES = RANGES["graduated"]
PASSED = (
    "package_size",
    "free_units",
    "rate",
    "fixed_amount",
    "free_units_per_events",
    "free_units_per_total_aggregation",
    "per_transaction_min_amount",
    "per_transaction_max_amount",
    "grouped_by",
)

TIER = obj(
    {
        "up_to": Spec("integer", nullable=True),
        "unit_amount": Spec("decimal"),
        "rate": Spec("decimal"),
        "flat_amount": Spec("decimal"),
    }
)
PROPERTIES = obj(
    {
        "unit_amount": Spec("decimal"),
        "amount": Spec("decimal"),
        "tiers": array(TIER, max_items=100),
        **{name: plans.PROPERTIES.fields[name] for name in PASSED},
    }
)
NO_PROPERTIES = check({}, PROPERTIES)
CHARGE = obj(
    {
        "metric_key": string(required=True, max_length=100),
        "model": string(required=True, choices=tuple(MODELS)),
        "properties": PROPERTIES,
        "filters": array(plans.filter_spec(PROPERTIES)),
        **plans.CHARGE_TERMS,
    }
)
CREATE = obj(
    {
        "id": string(required=True, max_length=100),
        "name": string(max_length=200),
        "description": string(max_length=2000),
        "currency": string(max_length=3),
        "interval": string(choices=plans.INTERVALS),
        "amount_cents": Spec("integer"),
        "charges": array(CHARGE, max_items=100),
        **plans.PLAN_TERMS,
    }
)


def _ranges(tiers: list[dict], price: str, source: str) -> list[dict]:
    """Tiers up to an inclusive bound -> ranges: each starts one above the previous bound."""
    ranges, start = [], 0
    for tier in tiers:
        up_to = tier["up_to"]
        ranges.append(
            {
                "from": str(start),
                "to": None if up_to is None else str(up_to),
                price: tier[source],
                "flat_amount": tier["flat_amount"],
            }
        )
        start = (up_to or 0) + 1
    return ranges


def _amount_name(model: str, props: dict) -> str:
    """The ABAXUS name the charge's amount was given as (or, if missing, is asked for)."""
    given_amount = props["unit_amount"] is None and (props["amount"] is not None or model == "flat")
    return "amount" if given_amount else "unit_amount"


def bxb_properties(model: str, given: dict | None) -> dict:
    """ABAXUS properties of a charge (or filter) of the bxb `model` as /v1/plans would have received them."""
    props = given or NO_PROPERTIES
    field, price, source = RANGES.get(model, NO_RANGES)
    properties = dict.fromkeys(plans.PROPERTIES.fields)
    properties.update({name: props[name] for name in PASSED})
    properties["amount"] = props["unit_amount"] if props["unit_amount"] is not None else props["amount"]
    properties[field] = _ranges(props["tiers"] or [], price, source)
    return properties


def bxb_charge(charge: dict) -> dict:
    """An ABAXUS charge as /v1/plans would have received it."""
    model = MODELS[charge["model"]]
    return {
        "billable_metric_code": charge["metric_key"],
        "charge_model": model,
        "properties": bxb_properties(model, charge["properties"]),
        "filters": [{**f, "properties": bxb_properties(model, f["properties"])} for f in charge["filters"] or []],
        **{name: charge[name] for name in plans.CHARGE_TERMS},
    }


def amount_names(charges: list[dict]) -> dict[str, str]:
    """The ABAXUS name of the amount of each charge and filter, by its path (`charges[0].filters[1]`)."""
    names = {}
    for index, charge in enumerate(charges):
        model = MODELS[charge["model"]]
        names[f"charges[{index}]"] = _amount_name(model, charge["properties"] or NO_PROPERTIES)
        for number, f in enumerate(charge["filters"] or []):
            names[f"charges[{index}].filters[{number}]"] = _amount_name(model, f["properties"] or NO_PROPERTIES)
    return names


def abaxus_path(text: str, amount_names: dict[str, str]) -> str:
    """Rewrites the bxb field paths in a message or field to the ABAXUS ones."""
    text = plans.json_path(text)
    text = re.sub(r"^code\b", "id", text)
    text = re.sub(r"(charges\[\d+\])\.billable_metric_code\b", r"\1.metric_key", text)
    text = re.sub(r"(charges\[\d+\])\.charge_model\b", r"\1.model", text)
    text = re.sub(
        r"((charges\[\d+\](?:\.filters\[\d+\])?)\.properties\.)amount\b",
        lambda m: m[1] + amount_names[m[2]],
        text,
    )
    text = re.sub(r"\.(?:graduated_ranges|volume_ranges|graduated_percentage_ranges)\b", ".tiers", text)
    text = re.sub(r"(\.tiers\[\d+\])\.(?:to|from)\b", r"\1.up_to", text)
    return re.sub(r"(\.tiers\[\d+\])\.per_unit\b", r"\1.unit_amount", text)


def _properties_json(p: pb.ChargeProperties, model: str) -> dict:
    tiers = [
        {"up_to": render.bound(r.to_value), "unit_amount": r.per_unit_amount, "flat_amount": r.flat_amount}
        for r in (p.volume_ranges if model == "volume" else p.graduated_ranges)
    ]
    shown = {
        "standard": {"unit_amount": p.amount},
        "graduated": {"tiers": tiers},
        "volume": {"tiers": tiers},
        "package": {"unit_amount": p.amount, "package_size": p.package_size, "free_units": p.free_units},
        "percentage": {name: plans.PROPERTY_JSON[name](p) for name in plans.SHOWN["percentage"]},
        "graduated_percentage": {
            "tiers": [
                {"up_to": render.bound(r.to_value), "rate": r.rate, "flat_amount": r.flat_amount}
                for r in p.graduated_percentage_ranges
            ]
        },
        "flat": {"amount": p.amount},
    }[model]
    if p.grouped_by:
        shown["grouped_by"] = list(p.grouped_by)
    return shown


def charge_json(charge: pb.Charge) -> dict:
    model = render.enum(pb.ChargeModel, charge.charge_model, "CHARGE_MODEL_")
    return {
        "id": charge.id,
        "metric_key": charge.billable_metric_code,
        "model": MODEL_NAMES.get(model, model),
        **plans.charge_terms_json(charge),
        "properties": _properties_json(charge.properties, model),
        "filters": [
            {
                "values": plans.filter_values_json(f),
                "properties": _properties_json(f.properties, model),
                "invoice_display_name": f.invoice_display_name or None,
            }
            for f in charge.filters
        ],
    }


def price_plan_json(plan: pb.Plan) -> dict:
    return {
        "id": plan.code,
        "version": plan.version,
        "version_id": plan.id,
        "name": plan.name,
        "description": plan.description,
        "currency": plan.currency,
        "interval": render.enum(pb.PlanInterval, plan.interval, "PLAN_INTERVAL_"),
        "amount_cents": plan.amount_cents,
        **plans.plan_terms_json(plan),
        "charges": [charge_json(c) for c in plan.charges],
        "created_at": render.time(plan, "create_time"),
    }


async def create(call: Call):
    body = call.body
    charges = body["charges"] or []
    names = amount_names(charges)
    try:
        plan = pb.Plan(
            code=body["id"],
            name=body["name"] or "",
            description=body["description"] or "",
            interval=render.enum_value(pb.PlanInterval, body["interval"] or "monthly", "PLAN_INTERVAL_"),
            amount_cents=body["amount_cents"] or 0,
            currency=body["currency"] or "",
            charges=[plans.charge_proto(bxb_charge(c), f"charges[{i}]") for i, c in enumerate(charges)],
            **plans.plan_terms(body),
        )
        created = await call.clients.plans.CreatePlan(pb.CreatePlanRequest(plan=plan), **call.options)
    except grpc.aio.AioRpcError as error:
        failure = api_error(error)
        failure.message = abaxus_path(failure.message, names)
        failure.field = abaxus_path(failure.field, names)
        return failure.response()
    return json(price_plan_json(created), 201)


routes = [
    Route("/v1/price-plans", endpoint(create, CREATE), methods=["POST"]),
    *plans.read_routes("/v1/price-plans", "id", price_plan_json),
]
