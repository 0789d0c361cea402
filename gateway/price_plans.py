"""/v1/price-plans: the ABAXUS spelling of plans (part of the compatibility layer).

The same versioned plans as /v1/plans. A price plan's `id` is the plan code,
`version_id` the server id of the version shown. A charge names its metric
`metric_key` and its `model` in ABAXUS words ("per-unit", "tiered",
"flat_fee", ...); its amount is `unit_amount` (or `amount`) and its tiers are
`tiers` bounded by an inclusive `up_to`. A body is read as the bxb plan it
stands for, and any error names the field as ABAXUS spells it
(`charges[0].properties.tiers[1].up_to`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import grpc
from starlette.responses import Response

from bxb.catalog.v1 import plans_pb2 as pb
from gateway.call import json, read_json
from gateway.codec import View, Views, enum_name
from gateway.errors import ApiError, invalid
from gateway.shapes import Json, bound
from gateway.transcoder import Exchange, Handler, Spelling, Transcoder, named
from services.common.charge_fields import MODEL_FIELDS

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
# The bxb model -> the ABAXUS name a charge shows.
MODEL_NAMES = {"standard": "per-unit", "graduated": "tiered", "flat": "flat_fee"}
# bxb model -> (its ranges property, the range's price key, the tier's ABAXUS price key).
RANGES = {
    "graduated": ("graduated_ranges", "per_unit", "unit_amount"),
    "volume": ("volume_ranges", "per_unit", "unit_amount"),
    "graduated_percentage": ("graduated_percentage_ranges", "rate", "rate"),
}
# Tiers given to a model without ranges become graduated ranges, which the catalog refuses naming them.
NO_RANGES = RANGES["graduated"]


def _ranges(tiers: Any, price: str, source: str, where: str) -> Any:
    """Tiers up to an inclusive bound as ranges: each starts one above the previous bound."""
    if not isinstance(tiers, list):
        return tiers
    ranges, start = [], 0
    for index, tier in enumerate(tiers):
        if not isinstance(tier, dict):
            ranges.append(tier)
            continue
        up_to = tier.get("up_to")
        if up_to is not None and (isinstance(up_to, bool) or not isinstance(up_to, int)):
            field = f"{where}.tiers[{index}].up_to"
            raise invalid(f"{field} must be an integer", field, "INVALID_TYPE")
        unknown = set(tier) - {"up_to", source, "flat_amount"}
        if unknown:
            field = f"{where}.tiers[{index}].{sorted(unknown)[0]}"
            raise invalid(f"unknown field {field!r}", field, "UNKNOWN_FIELD")
        ranges.append(
            {
                "from": start,
                "to": up_to,
                price: tier.get(source),
                "flat_amount": tier.get("flat_amount"),
            }
        )
        start = (up_to or 0) + 1
    return ranges


def bxb_properties(model: str, given: Any, where: str) -> Any:
    """A charge's (or filter's) ABAXUS properties as /v1/plans spells them."""
    if not isinstance(given, dict):
        return given
    properties = {name: value for name, value in given.items() if name not in ("unit_amount", "amount", "tiers")}
    amount = given.get("unit_amount") if given.get("unit_amount") is not None else given.get("amount")
    if amount is not None:
        properties["amount"] = amount
    if given.get("tiers") is not None:
        field, price, source = RANGES.get(model, NO_RANGES)
        properties[field] = _ranges(given["tiers"], price, source, where)
    return properties


def bxb_charge(charge: Any, where: str) -> Any:
    """An ABAXUS charge as /v1/plans spells it."""
    if not isinstance(charge, dict):
        return charge
    renamed = {"metric_key": "billable_metric_code", "model": "charge_model"}
    spelled = {renamed.get(name, name): value for name, value in charge.items() if name not in renamed.values()}
    for name in set(charge) & set(renamed.values()):
        raise invalid(f"unknown field '{where}.{name}'", f"{where}.{name}", "UNKNOWN_FIELD")
    model_name = charge.get("model")
    model = MODELS.get(model_name) if isinstance(model_name, str) else None
    if model is None:  # its properties are read by their model
        field = f"{where}.model"
        if model_name is None:
            raise invalid(f"{field} is required", field, "MISSING_FIELD")
        raise invalid(f"{field} must be one of: {', '.join(MODELS)}", field, "INVALID_VALUE")
    spelled["charge_model"] = model
    spelled["properties"] = bxb_properties(model, charge.get("properties") or {}, f"{where}.properties")
    filters = charge.get("filters")
    if isinstance(filters, list):
        spelled["filters"] = [
            {**f, "properties": bxb_properties(model, f.get("properties") or {}, f"{where}.filters[{i}].properties")}
            if isinstance(f, dict)
            else f
            for i, f in enumerate(filters)
        ]
    return spelled


def bxb_plan(body: Any) -> Any:
    """An ABAXUS price plan as /v1/plans spells it (monthly unless it says)."""
    if not isinstance(body, dict):
        return body
    if "code" in body:
        raise invalid("unknown field 'code'", "code", "UNKNOWN_FIELD")
    plan = {("code" if name == "id" else name): value for name, value in body.items()}
    plan.setdefault("interval", "monthly")
    charges = body.get("charges")
    if isinstance(charges, list):
        plan["charges"] = [bxb_charge(charge, f"charges[{index}]") for index, charge in enumerate(charges)]
    return plan


def amount_names(body: Any) -> dict[str, str]:
    """The ABAXUS name each charge's and filter's amount was given as, by its path (`charges[0].filters[1]`)."""

    def named(model: str, properties: Any) -> str:
        properties = properties if isinstance(properties, dict) else {}
        given_amount = properties.get("unit_amount") is None and (
            properties.get("amount") is not None or model == "flat"
        )
        return "amount" if given_amount else "unit_amount"

    names = {}
    charges = body.get("charges") if isinstance(body, dict) else None
    for index, charge in enumerate(charges if isinstance(charges, list) else []):
        if not isinstance(charge, dict):
            continue
        model_name = charge.get("model")
        model = MODELS.get(model_name, "") if isinstance(model_name, str) else ""
        names[f"charges[{index}]"] = named(model, charge.get("properties"))
        filters = charge.get("filters")
        for number, f in enumerate(filters if isinstance(filters, list) else []):
            names[f"charges[{index}].filters[{number}]"] = named(
                model, f.get("properties") if isinstance(f, dict) else {}
            )
    return names


def abaxus_path(text: str, amounts: dict[str, str]) -> str:
    """The bxb field paths in a message or field, as ABAXUS spells them."""
    text = re.sub(r"^code\b", "id", text)
    text = re.sub(r"(charges\[\d+\])\.billable_metric_code\b", r"\1.metric_key", text)
    text = re.sub(r"(charges\[\d+\])\.charge_model\b", r"\1.model", text)
    text = re.sub(
        r"((charges\[\d+\](?:\.filters\[\d+\])?)\.properties\.)amount\b",
        lambda m: m[1] + amounts.get(m[2], "unit_amount"),
        text,
    )
    text = re.sub(r"\.(?:graduated_ranges|volume_ranges|graduated_percentage_ranges)\b", ".tiers", text)
    text = re.sub(r"(\.tiers\[\d+\])\.(?:to|from)\b", r"\1.up_to", text)
    return re.sub(r"(\.tiers\[\d+\])\.per_unit\b", r"\1.unit_amount", text)


def abaxus_properties(properties: Any, model: str, shown: Json) -> Json:
    """A charge's (or filter's) properties as ABAXUS shows them for its model."""
    ranges = properties.volume_ranges if model == "volume" else properties.graduated_ranges
    tiers = [
        {"up_to": bound(r.to_value), "unit_amount": r.per_unit_amount, "flat_amount": r.flat_amount} for r in ranges
    ]
    by_model: dict[str, Json] = {
        "standard": {"unit_amount": properties.amount},
        "graduated": {"tiers": tiers},
        "volume": {"tiers": tiers},
        "package": {
            "unit_amount": properties.amount,
            "package_size": properties.package_size,
            "free_units": properties.free_units,
        },
        "graduated_percentage": {
            "tiers": [
                {"up_to": bound(r.to_value), "rate": r.rate, "flat_amount": r.flat_amount}
                for r in properties.graduated_percentage_ranges
            ]
        },
        "flat": {"amount": properties.amount},
    }
    kept = by_model.get(model)
    if kept is None:  # percentage: as /v1/plans shows it
        kept = {name: shown[name] for name in MODEL_FIELDS["percentage"]}
    if properties.grouped_by:
        kept["grouped_by"] = list(properties.grouped_by)
    return kept


def abaxus_charge(charge: Any, shown: Json) -> Json:
    model = enum_name(pb.ChargeModel.DESCRIPTOR, charge.charge_model) or ""
    filters = [
        {**f, "properties": abaxus_properties(given.properties, model, f["properties"])}
        for f, given in zip(shown["filters"], charge.filters, strict=True)
    ]
    return {**shown, "properties": abaxus_properties(charge.properties, model, shown["properties"]), "filters": filters}


def views(base: Views) -> Views:
    """How price plans show: the bxb plan views, respelled."""
    return {
        **base,
        "bxb.catalog.v1.Plan": View(
            names={
                "code": "id",
                "id": "version_id",
                "create_time": "created_at",
                "minimum_commitment_cents": "minimum_commitment",
            },
            wrapped={"minimum_commitment_cents": "amount_cents"},
        ),
        "bxb.catalog.v1.Charge": View(
            names={"billable_metric_code": "metric_key", "charge_model": "model"},
            enums={"charge_model": {model: (name,) for model, name in MODEL_NAMES.items()}},
            hidden=frozenset({"billable_metric"}),
            nulls=frozenset({"invoice_display_name"}),
            render=abaxus_charge,
        ),
    }


def create(reads: Views) -> Callable[[Spelling], Handler]:
    """POST /v1/price-plans: the body read as the bxb plan it stands for
    (in the `reads` views), the plan shown as ABAXUS does."""

    def make(spelling: Spelling) -> Handler:
        async def handle(exchange: Exchange) -> Response:
            bxb = Transcoder(exchange.transcoder.binding, reads)  # the route read as /v1/plans reads it
            body = await read_json(exchange.http)
            amounts = amount_names(body)
            plan = bxb_plan(body)  # what it cannot read is named as ABAXUS spells it already
            try:
                request = pb.CreatePlanRequest()
                bxb.decoder.into(request.plan, plan)
                reply = await exchange.call(request)
            except ApiError as error:
                error.message, error.field = abaxus_path(error.message, amounts), abaxus_path(error.field, amounts)
                raise
            except grpc.aio.AioRpcError as error:
                failure = named(error, bxb, {})
                failure.message, failure.field = (
                    abaxus_path(failure.message, amounts),
                    abaxus_path(failure.field, amounts),
                )
                raise failure from None
            return json(exchange.transcoder.response(reply), 201)

        return handle

    return make
