"""/v1/subscriptions."""

from __future__ import annotations

from starlette.routing import Route

from bxb.catalog.v1 import subscriptions_pb2 as pb
from gateway import render
from gateway.call import Call, endpoint, json
from gateway.schema import Spec, obj, string
from services.common.timestamps import to_proto

CREATE = obj(
    {
        "customer_id": string(required=True, max_length=200),
        "plan_code": string(max_length=100),
        "plan_id": string(max_length=100),
        "start_date": Spec("timestamp"),
        "billing_time": string(choices=("anniversary", "calendar")),
        "external_id": string(max_length=200),
    }
)


def subscription_json(sub: pb.Subscription) -> dict:
    return {
        "id": sub.id,
        "external_id": sub.external_id or None,
        "customer_id": sub.customer_id,
        "plan_id": sub.plan_id,
        "plan_code": sub.plan_code,
        "plan_version": sub.plan_version,
        "status": render.enum(pb.SubscriptionStatus, sub.status, "SUBSCRIPTION_STATUS_"),
        "billing_time": render.enum(pb.BillingTime, sub.billing_time, "BILLING_TIME_"),
        "start_date": render.time(sub, "start_time"),
        "created_at": render.time(sub, "create_time"),
    }


async def create(call: Call):
    body = call.body
    request = pb.CreateSubscriptionRequest(
        customer_id=body["customer_id"],
        plan_code=body["plan_code"] or "",
        plan_id=body["plan_id"] or "",
        external_id=body["external_id"] or "",
        start_time=to_proto(body["start_date"]),
        billing_time=render.enum_value(pb.BillingTime, body["billing_time"], "BILLING_TIME_")
        if body["billing_time"]
        else 0,
    )
    created = await call.clients.subscriptions.CreateSubscription(request, **call.options)
    return json(subscription_json(created), 201)


async def get(call: Call):
    sub = await call.clients.subscriptions.GetSubscription(
        pb.GetSubscriptionRequest(id=call.path("id")), **call.options
    )
    return json(subscription_json(sub))


async def list_(call: Call):
    reply = await call.clients.subscriptions.ListSubscriptions(
        pb.ListSubscriptionsRequest(
            customer_id=call.query("customer_id"),
            page_size=call.query_int("page_size"),
            page_token=call.query("page_token"),
        ),
        **call.options,
    )
    return json(
        {"subscriptions": [subscription_json(s) for s in reply.subscriptions], "next_page_token": reply.next_page_token}
    )


routes = [
    Route("/v1/subscriptions", endpoint(create, CREATE), methods=["POST"]),
    Route("/v1/subscriptions", endpoint(list_), methods=["GET"]),
    Route("/v1/subscriptions/{id}", endpoint(get), methods=["GET"]),
]
