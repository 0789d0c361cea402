"""/v1/usage/compute and /v1/pricing: the exact usage and the priced fees an
invoice would bill, computed on demand. Amounts are decimal strings at the
currency's minor-unit scale ("127.50" USD, "128" JPY, "1.275" KWD) next to
their integer minor units."""

from __future__ import annotations

from decimal import Decimal

import grpc
from starlette.routing import Route

from bxb.invoicing.v1 import calculations_pb2
from bxb.invoicing.v1 import invoices_pb2 as pb
from bxb.metering.v1 import usage_pb2
from gateway import render
from gateway.call import Call, endpoint, json
from gateway.errors import respelled
from gateway.schema import Spec, obj, one_of, string
from services.common.currencies import exponent
from services.common.timestamps import to_proto

COMPUTE = obj(
    {
        "customer_id": string(required=True, max_length=200),
        "metric_key": string(max_length=100),
        "code": string(max_length=100),
        "subscription_id": string(max_length=200),
        "period_start": Spec("timestamp", required=True),
        "period_end": Spec("timestamp", required=True),
    }
)

CALCULATE = obj(
    {
        "customer_id": string(required=True, max_length=200),
        "subscription_id": string(max_length=200),
        "period_start": Spec("timestamp"),
        "period_end": Spec("timestamp"),
    }
)

LINE_TYPES = {
    pb.FEE_TYPE_SUBSCRIPTION: "subscription",
    pb.FEE_TYPE_CHARGE: "charge",
    pb.FEE_TYPE_TRUE_UP: "true_up",
    pb.FEE_TYPE_COMMITMENT: "commitment",
}


def money(cents: int, currency: str) -> str:
    """Minor units as a major-unit decimal string with every minor digit: 12750 USD -> "127.50"."""
    places = exponent(currency)
    return f"{Decimal(cents).scaleb(-places):.{places}f}"


def line_json(fee: pb.Fee, currency: str) -> dict:
    return {
        "type": LINE_TYPES[fee.type],
        "description": fee.description,
        "metric_key": fee.billable_metric_code or None,
        "charge_id": fee.charge_id or None,
        "filter": fee.filter or None,
        "group": dict(fee.group) or None,
        "period_start": render.time(fee, "period_start"),
        "period_end": render.time(fee, "period_end"),
        "units": fee.units,
        "unit_amount": fee.unit_amount,
        "amount": money(fee.amount_cents, currency),
        "amount_cents": fee.amount_cents,
        "precise_amount": fee.precise_amount,
        "events_count": fee.events_count,
        "tiers": [
            {
                "from": render.bound(t.from_value),
                "to": render.bound(t.to_value),
                "units": t.units,
                "per_unit_amount": t.per_unit_amount,
                "flat_amount": t.flat_amount,
                "amount": t.amount,
            }
            for t in fee.tiers
        ],
    }


def calculation_json(calculation: calculations_pb2.Calculation) -> dict:
    currency = calculation.currency
    return {
        "calculation_id": calculation.id,
        "customer_id": calculation.customer_id,
        "subscription_id": calculation.subscription_id,
        "plan_code": calculation.plan_code,
        "plan_version": calculation.plan_version,
        "currency": currency,
        "period_start": render.time(calculation, "period_start"),
        "period_end": render.time(calculation, "period_end"),
        "total_amount": money(calculation.total_amount_cents, currency),
        "total_amount_cents": calculation.total_amount_cents,
        "line_items": [line_json(fee, currency) for fee in calculation.line_items],
        "created_at": render.time(calculation, "create_time"),
    }


async def compute(call: Call):
    body = call.body
    code, named = one_of(body, ("metric_key", "code"))
    request = usage_pb2.ComputeUsageRequest(
        customer_id=body["customer_id"],
        metric_code=code,
        start_time=to_proto(body["period_start"]),
        end_time=to_proto(body["period_end"]),
        subscription_id=body["subscription_id"] or "",
    )
    try:
        reply = await call.clients.usage.ComputeUsage(request, **call.options)
    except grpc.aio.AioRpcError as error:
        return respelled(error, {"metric_code": named, "start_time": "period_start", "end_time": "period_end"})
    return json(
        {
            "customer_id": reply.customer_id,
            "metric_key": reply.metric_code,
            "subscription_id": reply.subscription_id or None,
            "period_start": render.time(reply, "start_time"),
            "period_end": render.time(reply, "end_time"),
            "value": reply.value,
            "events_count": reply.event_count,
            "meta": {"consistency": "exact"},
        }
    )


async def calculate(call: Call):
    body = call.body
    reply = await call.clients.calculations.CreateCalculation(
        calculations_pb2.CreateCalculationRequest(
            customer_id=body["customer_id"],
            subscription_id=body["subscription_id"] or "",
            period_start=to_proto(body["period_start"]),
            period_end=to_proto(body["period_end"]),
        ),
        **call.options,
    )
    return json(calculation_json(reply))


async def get(call: Call):
    reply = await call.clients.calculations.GetCalculation(
        calculations_pb2.GetCalculationRequest(id=call.path("id")), **call.options
    )
    return json(calculation_json(reply))


routes = [
    Route("/v1/usage/compute", endpoint(compute, COMPUTE), methods=["POST"]),
    Route("/v1/pricing/calculate", endpoint(calculate, CALCULATE), methods=["POST"]),
    Route("/v1/pricing/calculations/{id}", endpoint(get), methods=["GET"]),
]
