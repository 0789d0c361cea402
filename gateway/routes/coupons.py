"""/v1/coupons and /v1/applied_coupons.

A coupon is spelled as on the bxb page (`discount_type`, `discount_value`,
`duration`, `duration_in_months`) or as in Lago (`coupon_type`,
`percentage_rate` or `amount_cents`, `frequency`, `frequency_duration`).
`discount_value` is a percentage for a percentage coupon and an amount in
major units ("50" is $50.00) for a fixed-amount one.
"""

from __future__ import annotations

import grpc
from starlette.routing import Route

from bxb.catalog.v1 import coupons_pb2 as pb
from gateway import render
from gateway.call import Call, endpoint, json
from gateway.errors import respelled
from gateway.schema import Spec, array, obj, one_of, string
from services.common.timestamps import to_proto

TYPES = ("percentage", "fixed_amount")
DURATIONS = ("once", "recurring", "forever")
CODES = array(string(max_length=100), max_items=100)
CREATE = obj(
    {
        "code": string(required=True, max_length=100),
        "name": string(max_length=200),
        "description": string(max_length=2000),
        "discount_type": string(choices=TYPES),
        "coupon_type": string(choices=TYPES),
        "discount_value": Spec("decimal"),
        "percentage_rate": Spec("decimal"),
        "amount_cents": Spec("integer"),
        "currency": string(max_length=3),
        "amount_currency": string(max_length=3),
        "duration": string(choices=DURATIONS),
        "frequency": string(choices=DURATIONS),
        "duration_in_months": Spec("integer", bits=32),
        "frequency_duration": Spec("integer", bits=32),
        "expiration_at": Spec("timestamp", nullable=True),
        "applies_to": obj({"plan_codes": CODES, "billable_metric_codes": CODES}, nullable=True),
    }
)
APPLY = obj(
    {
        "customer_id": string(max_length=200),
        "external_customer_id": string(max_length=200),
        "coupon_code": string(required=True, max_length=100),
    }
)


def coupon_request(body: dict) -> pb.Coupon:
    kind, _ = one_of(body, ("discount_type", "coupon_type"))
    duration, _ = one_of(body, ("duration", "frequency"))
    months, _ = one_of(body, ("duration_in_months", "frequency_duration"), required=False)
    limits = body["applies_to"] or {}
    coupon = pb.Coupon(
        code=body["code"],
        name=body["name"] or "",
        description=body["description"] or "",
        coupon_type=render.enum_value(pb.CouponType, kind, "COUPON_TYPE_"),
        duration=render.enum_value(pb.CouponDuration, duration, "COUPON_DURATION_"),
        duration_in_months=months or 0,
        expire_time=to_proto(body["expiration_at"]),
        plan_codes=limits.get("plan_codes") or [],
        billable_metric_codes=limits.get("billable_metric_codes") or [],
    )
    # Only re-spelled: the catalog converts, checks and refuses the other type's fields.
    coupon.currency, _ = one_of(body, ("currency", "amount_currency"), required=False)
    coupon.amount_cents = body["amount_cents"] or 0
    if kind == "percentage":
        coupon.percentage, _ = one_of(body, ("discount_value", "percentage_rate"))
    else:
        coupon.amount = body["discount_value"] or ""
        coupon.percentage = body["percentage_rate"] or ""
    return coupon


def coupon_json(coupon: pb.Coupon) -> dict:
    kind = render.enum(pb.CouponType, coupon.coupon_type, "COUPON_TYPE_")
    fixed = coupon.coupon_type == pb.COUPON_TYPE_FIXED_AMOUNT
    return {
        "id": coupon.id,
        "code": coupon.code,
        "name": coupon.name,
        "description": coupon.description,
        "discount_type": kind,
        "discount_value": coupon.amount if fixed else coupon.percentage,
        "percentage_rate": None if fixed else coupon.percentage,
        "amount_cents": coupon.amount_cents if fixed else None,
        "currency": coupon.currency or None,
        "duration": render.enum(pb.CouponDuration, coupon.duration, "COUPON_DURATION_"),
        "duration_in_months": coupon.duration_in_months or None,
        "expiration_at": render.time(coupon, "expire_time"),
        "applies_to": {
            "plan_codes": list(coupon.plan_codes),
            "billable_metric_codes": list(coupon.billable_metric_codes),
        },
        "created_at": render.time(coupon, "create_time"),
    }


def applied_json(applied: pb.AppliedCoupon) -> dict:
    return {
        "id": applied.id,
        "customer_id": applied.customer_id,
        "coupon_code": applied.coupon.code,
        "status": "terminated" if applied.HasField("terminate_time") else "active",
        "coupon": coupon_json(applied.coupon),
        "created_at": render.time(applied, "create_time"),
        "terminated_at": render.time(applied, "terminate_time"),
    }


def spellings(body: dict) -> dict[str, str]:
    """The catalog's field names as this body spelled them."""
    given = {name for name, value in body.items() if value is not None}

    def sent(*names: str) -> str:
        return next((name for name in names if name in given), names[0])

    limits = body["applies_to"] or {}
    fixed = "fixed_amount" in (body["discount_type"], body["coupon_type"])
    return {
        "coupon_type": sent("discount_type", "coupon_type"),
        "percentage": "percentage_rate" if fixed else sent("discount_value", "percentage_rate"),
        "amount": "discount_value",
        "currency": sent("currency", "amount_currency"),
        "duration": sent("duration", "frequency"),
        "duration_in_months": sent("duration_in_months", "frequency_duration"),
        "expire_time": "expiration_at",
        **{
            f"{name}[{i}]": f"applies_to.{name}[{i}]"
            for name in ("plan_codes", "billable_metric_codes")
            for i in range(len(limits.get(name) or ()))
        },
        "plan_codes": "applies_to.plan_codes",
        "billable_metric_codes": "applies_to.billable_metric_codes",
    }


async def create(call: Call):
    request = coupon_request(call.body)
    try:
        coupon = await call.clients.coupons.CreateCoupon(pb.CreateCouponRequest(coupon=request), **call.options)
    except grpc.aio.AioRpcError as error:
        return respelled(error, spellings(call.body))
    return json(coupon_json(coupon), 201)


async def get(call: Call):
    coupon = await call.clients.coupons.GetCoupon(pb.GetCouponRequest(code=call.path("code")), **call.options)
    return json(coupon_json(coupon))


async def list_(call: Call):
    reply = await call.clients.coupons.ListCoupons(
        pb.ListCouponsRequest(page_size=call.query_int("page_size"), page_token=call.query("page_token")),
        **call.options,
    )
    return json({"coupons": [coupon_json(c) for c in reply.coupons], "next_page_token": reply.next_page_token})


async def apply(call: Call):
    customer_id, _ = one_of(call.body, ("customer_id", "external_customer_id"))
    applied = await call.clients.coupons.ApplyCoupon(
        pb.ApplyCouponRequest(customer_id=customer_id, coupon_code=call.body["coupon_code"]), **call.options
    )
    return json(applied_json(applied), 201)


async def list_applied(call: Call):
    reply = await call.clients.coupons.ListAppliedCoupons(
        pb.ListAppliedCouponsRequest(
            customer_id=call.query("customer_id"),
            page_size=call.query_int("page_size"),
            page_token=call.query("page_token"),
        ),
        **call.options,
    )
    return json(
        {
            "applied_coupons": [applied_json(a) for a in reply.applied_coupons],
            "next_page_token": reply.next_page_token,
        }
    )


async def remove(call: Call):
    applied = await call.clients.coupons.RemoveAppliedCoupon(
        pb.RemoveAppliedCouponRequest(id=call.path("id")), **call.options
    )
    return json(applied_json(applied))


routes = [
    Route("/v1/coupons", endpoint(create, CREATE), methods=["POST"]),
    Route("/v1/coupons", endpoint(list_), methods=["GET"]),
    Route("/v1/coupons/{code}", endpoint(get), methods=["GET"]),
    Route("/v1/applied_coupons", endpoint(apply, APPLY), methods=["POST"]),
    Route("/v1/applied_coupons", endpoint(list_applied), methods=["GET"]),
    Route("/v1/applied_coupons/{id}", endpoint(remove), methods=["DELETE"]),
]
