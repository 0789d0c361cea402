"""/v1/subscriptions: create, read, change plan (PUT), terminate (DELETE)."""

from __future__ import annotations

import grpc
from starlette.routing import Route

from bxb.catalog.v1 import subscriptions_pb2 as pb
from gateway import render
from gateway.call import Call, endpoint, json
from gateway.schema import Spec, obj, string
from services.common.errors import error_info
from services.common.timestamps import to_proto

CREATE = obj(
    {
        "customer_id": string(required=True, max_length=200),
        "plan_code": string(max_length=100),
        "plan_id": string(max_length=100),
        "start_date": Spec("timestamp"),
        "billing_time": string(choices=("anniversary", "calendar")),
        "external_id": string(max_length=200),
        "trial_period_days": Spec("integer", bits=32, nullable=True),
    }
)

CHANGE = obj({"plan_code": string(max_length=100), "plan_id": string(max_length=100)})


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
        "terminated_at": render.time(sub, "terminate_time"),
        "previous_subscription_id": sub.previous_subscription_id or None,
        "next_subscription_id": sub.next_subscription_id or None,
        "trial_end_date": render.time(sub, "trial_end_time"),
        "test_clock_id": sub.test_clock_id or None,
    }


def _on_plan_asked(sub: pb.Subscription, body: dict) -> bool:
    """Whether the subscription is on the plan the body names, as far as its
    text shows (a plan_id may also name another version of the same plan)."""
    if body["plan_code"]:
        return sub.plan_code == body["plan_code"]
    return body["plan_id"] in (sub.plan_id, sub.plan_code)


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
        trial_period_days=body["trial_period_days"],  # None (absent or null): the plan's trial
    )
    created = await call.clients.subscriptions.CreateSubscription(request, **call.options)
    if body["external_id"] and not _on_plan_asked(created, body):
        # The external_id names an existing subscription on another plan: as
        # in Lago, creating it again on a new plan changes its plan.
        change = pb.ChangeSubscriptionPlanRequest(id=created.id, plan_code=request.plan_code, plan_id=request.plan_id)
        try:
            changed = await call.clients.subscriptions.ChangeSubscriptionPlan(change, **call.options)
        except grpc.aio.AioRpcError as error:
            info = error_info(error)
            if info is None or info.reason != "SAME_PLAN":
                raise
        else:
            return json(subscription_json(changed), 200)
    return json(subscription_json(created), 201)


async def change_plan(call: Call):
    request = pb.ChangeSubscriptionPlanRequest(
        id=call.path("id"), plan_code=call.body["plan_code"] or "", plan_id=call.body["plan_id"] or ""
    )
    changed = await call.clients.subscriptions.ChangeSubscriptionPlan(request, **call.options)
    return json(subscription_json(changed))


async def terminate(call: Call):
    sub = await call.clients.subscriptions.TerminateSubscription(
        pb.TerminateSubscriptionRequest(id=call.path("id")), **call.options
    )
    return json(subscription_json(sub))


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
    Route("/v1/subscriptions/{id}", endpoint(change_plan, CHANGE), methods=["PUT"]),
    Route("/v1/subscriptions/{id}", endpoint(terminate), methods=["DELETE"]),
]
