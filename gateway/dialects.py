"""The public API's two dialects, declared: what they need beyond proto JSON.

bxb's own routes and the ABAXUS routes of the seed documents are one API
over the same RPCs. Where their JSON differs from the protos' (a field's
name, a second spelling accepted on input, empty values shown as null, a
status code), it is said here, once, per message and per route; no proto and
no service knows a dialect.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message import Message

from bxb.catalog.v1 import subscriptions_pb2
from gateway.bindings import Binding
from gateway.codec import View, Views
from services.common.errors import error_info

CREATED = View(names={"create_time": "created_at"})

BXB: Views = {
    "bxb.catalog.v1.Tax": CREATED,
    "bxb.catalog.v1.Customer": View(
        names={"create_time": "created_at", "invoice_grace_period_days": "invoice_grace_period"},
        aliases={"external_id": "id"},
        copies={"external_id": "id"},
        nulls=frozenset({"currency", "test_clock_id"}),
        objects=frozenset({"billing"}),
    ),
    "bxb.catalog.v1.BillingConfiguration": View(nulls=frozenset({"provider", "provider_customer_id"})),
    "bxb.catalog.v1.CreateCustomerRequest": View(inline="customer"),
    "bxb.catalog.v1.TestClock": CREATED,
    "bxb.catalog.v1.AdvanceTestClockResponse": View(inline="test_clock"),
    "bxb.catalog.v1.AddOn": View(names={"create_time": "created_at", "currency": "amount_currency"}),
    "bxb.catalog.v1.AppliedAddOn": View(
        names={"create_time": "created_at", "currency": "amount_currency"}, copies={"add_on_code": "add_on.code"}
    ),
    "bxb.catalog.v1.ApplyAddOnRequest": View(
        names={"currency": "amount_currency"}, alternatives={"external_customer_id": "customer_id"}
    ),
    "bxb.catalog.v1.Subscription": View(
        names={
            "start_time": "start_date",
            "create_time": "created_at",
            "terminate_time": "terminated_at",
            "trial_end_time": "trial_end_date",
        },
        nulls=frozenset({"external_id", "previous_subscription_id", "next_subscription_id", "test_clock_id"}),
        hidden=frozenset({"invoice_grace_period_days"}),
    ),
    "bxb.catalog.v1.CreateSubscriptionRequest": View(names={"start_time": "start_date"}),
    # A coupon as on the bxb page (discount_type, discount_value, duration,
    # duration_in_months) or as in Lago (coupon_type, percentage_rate or
    # amount_cents, frequency, frequency_duration). discount_value is a
    # percentage coupon's rate and a fixed one's amount in major units ("50"
    # is $50.00); the catalog converts, checks and refuses the other type's fields.
    "bxb.catalog.v1.Coupon": View(
        names={
            "coupon_type": "discount_type",
            "percentage": "percentage_rate",
            "expire_time": "expiration_at",
            "create_time": "created_at",
        },
        alternatives={
            "coupon_type": "coupon_type",
            "amount_currency": "currency",
            "frequency": "duration",
            "frequency_duration": "duration_in_months",
        },
        nulls=frozenset({"percentage", "amount_cents", "currency", "duration_in_months"}),
        hidden=frozenset({"amount"}),
        groups={"applies_to": ("plan_codes", "billable_metric_codes")},
        switches={"discount_value": ("coupon_type", {"percentage": "percentage", "fixed_amount": "amount"})},
    ),
    "bxb.catalog.v1.AppliedCoupon": View(
        names={"create_time": "created_at", "terminate_time": "terminated_at"},
        copies={"coupon_code": "coupon.code"},
        render=lambda applied, shown: {**shown, "status": "terminated" if shown["terminated_at"] else "active"},
    ),
    "bxb.catalog.v1.ApplyCouponRequest": View(alternatives={"external_customer_id": "customer_id"}),
    # A metric shows its code as `key` too (ABAXUS's name for it).
    "bxb.catalog.v1.BillableMetric": View(
        names={"create_time": "created_at"}, copies={"key": "code"}, nulls=frozenset({"field_name"})
    ),
    "bxb.invoicing.v1.CreditNote": View(names={"create_time": "created_at", "kind": "type"}),
    # A service's errors name the request's `kind` as such.
    "bxb.invoicing.v1.CreateCreditNoteRequest": View(aliases={"type": "kind"}),
}


# A caller of any RPC by its descriptor (Clients.unary).
Unary = Callable[[MethodDescriptor], Callable[..., Awaitable[Message]]]
# What a route does after its RPC answered: given a caller of any RPC, the
# request, the reply and the call's options, the answer and its status (None
# keeps the route's).
Then = Callable[[Unary, Any, Any, dict[str, Any]], Awaitable[tuple[Message, int | None]]]


@dataclass(frozen=True)
class Spelling:
    """How one route reads and answers; `then`, for a route whose answer
    takes more than its RPC."""

    views: Views
    status: int = 200
    then: Then | None = None


@dataclass(frozen=True)
class Dialect:
    """The spelling of every route: `views` unless `routes` says otherwise
    for a route (its verb and template); a create answers 201."""

    views: Views
    routes: Mapping[tuple[str, str], Spelling] = field(default_factory=dict)

    def spelling(self, binding: Binding) -> Spelling:
        declared = self.routes.get((binding.verb, binding.template))
        if declared is not None:
            return declared
        created = binding.verb == "POST" and binding.method.name.startswith("Create")
        return Spelling(self.views, 201 if created else 200)


# The ABAXUS spelling of the seed documents' /v1/metrics: a metric is named
# by its `key` (shown as `code` too), listed as `metrics`.
ABAXUS: Views = {
    **BXB,
    "bxb.catalog.v1.BillableMetric": View(
        names={"code": "key", "create_time": "created_at"}, copies={"code": "code"}, nulls=frozenset({"field_name"})
    ),
    "bxb.catalog.v1.ListBillableMetricsResponse": View(names={"billable_metrics": "metrics"}),
}

CHANGE_PLAN = subscriptions_pb2.DESCRIPTOR.services_by_name["SubscriptionService"].methods_by_name[
    "ChangeSubscriptionPlan"
]


async def change_plan_by_external_id(
    unary: Unary,
    request: subscriptions_pb2.CreateSubscriptionRequest,
    created: subscriptions_pb2.Subscription,
    options: dict[str, Any],
) -> tuple[Message, int | None]:
    """As in Lago, creating a subscription again by its `external_id` on
    another plan changes its plan (200): CreateSubscription returned the
    existing one. Whether it is on the plan asked is what its text shows (a
    plan_id may also name another version of the same plan: SAME_PLAN)."""
    asked = (
        created.plan_code == request.plan_code
        if request.plan_code
        else request.plan_id
        in (
            created.plan_id,
            created.plan_code,
        )
    )
    if not request.external_id or asked:
        return created, None
    change = subscriptions_pb2.ChangeSubscriptionPlanRequest(
        id=created.id, plan_code=request.plan_code, plan_id=request.plan_id
    )
    try:
        return await unary(CHANGE_PLAN)(change, **options), 200
    except grpc.aio.AioRpcError as error:
        info = error_info(error)
        if info is None or info.reason != "SAME_PLAN":
            raise
    return created, None


PUBLIC = Dialect(
    BXB,
    routes={
        # Applying an add-on or a coupon creates its application.
        ("POST", "/v1/applied_add_ons"): Spelling(BXB, 201),
        ("POST", "/v1/applied_coupons"): Spelling(BXB, 201),
        ("POST", "/v1/subscriptions"): Spelling(BXB, 201, then=change_plan_by_external_id),
        ("POST", "/v1/metrics"): Spelling(ABAXUS, 201),
        ("GET", "/v1/metrics"): Spelling(ABAXUS),
        ("GET", "/v1/metrics/{code}"): Spelling(ABAXUS),
        ("PATCH", "/v1/metrics/{billable_metric.code}"): Spelling(ABAXUS),
        ("DELETE", "/v1/metrics/{code}"): Spelling(ABAXUS),
    },
)
