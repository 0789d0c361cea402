"""The public API's two dialects, declared: what they need beyond proto JSON.

bxb's own routes and the ABAXUS routes of the seed documents are one API
over the same RPCs. Where their JSON differs from the protos' (a field's
name, a second spelling accepted on input, empty values shown as null, a
status code), it is said here, once, per message and per route; no proto and
no service knows a dialect.
"""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal
from typing import Any

import grpc
from google.protobuf.message import Message
from starlette.responses import Response

from bxb.catalog.v1 import subscriptions_pb2
from bxb.invoicing.v1 import invoices_pb2
from gateway import ingest, parked, price_plans, stripe_webhooks
from gateway.codec import View, Views, enum_name
from gateway.shapes import Json, bounded
from gateway.transcoder import Dialect, Spelling, Unary
from services.common.charge_fields import MODEL_FIELDS
from services.common.currencies import exponent
from services.common.errors import error_info
from services.common.timestamps import format_rfc3339, from_proto

CREATED = View(names={"create_time": "created_at"})


def money(cents: int, currency: str) -> str:
    """Minor units as a major-unit decimal string with every minor digit: 12750 USD -> "127.50"."""
    places = exponent(currency)
    return f"{Decimal(cents).scaleb(-places):.{places}f}"


def model_properties(charge: Any, shown: Json) -> Json:
    """A charge's properties (and its filters') are those of its model;
    grouped_by only when the charge is grouped."""
    model = enum_name(charge.DESCRIPTOR.fields_by_name["charge_model"].enum_type, charge.charge_model)
    assert model is not None  # a charge's model is REQUIRED

    def only(properties: Json, given: Any) -> Json:
        kept = {name: properties[name] for name in MODEL_FIELDS[model]}
        if given.grouped_by:
            kept["grouped_by"] = properties["grouped_by"]
        return kept

    filters = [
        {**shown_filter, "properties": only(shown_filter["properties"], given.properties)}
        for shown_filter, given in zip(shown["filters"], charge.filters, strict=True)
    ]
    return {**shown, "properties": only(shown["properties"], charge.properties), "filters": filters}


def issued(invoice: Any, shown: Json) -> Json:
    """An invoice as ABAXUS's `POST /v1/invoices` answers it: finalized is "issued"."""
    if invoice.status == invoices_pb2.INVOICE_STATUS_FINALIZED:
        return {**shown, "status": "issued"}
    return shown


def invoice_status(invoice: Any, shown: Json) -> Json:
    """ABAXUS calls an invoice issued on request "issued"; bxb calls the same state "finalized"."""
    if (
        invoice.status == invoices_pb2.INVOICE_STATUS_FINALIZED
        and invoice.timing == invoices_pb2.BILLING_TIMING_ON_REQUEST
    ):
        return {**shown, "status": "issued"}
    return shown


CHARGED_FEES = (invoices_pb2.FEE_TYPE_CHARGE, invoices_pb2.FEE_TYPE_TRUE_UP)  # a true-up tops up one charge


def fee_fields(fee: Any, shown: Json) -> Json:
    """An invoice's fee shows its metric and charge only when it prices one,
    its usage details only when it is a usage charge, its tiers when it has some."""
    left_out = set()
    if fee.type not in CHARGED_FEES:
        left_out |= {"billable_metric_code", "charge_id"}
    if fee.type != invoices_pb2.FEE_TYPE_CHARGE:
        left_out |= {"events_count", "group", "filter"}
    if not fee.tiers:
        left_out.add("tiers")
    return {name: value for name, value in shown.items() if name not in left_out}


def calculation_amounts(calculation: Any, shown: Json) -> Json:
    """A calculation's amounts also as major-unit decimal strings."""
    currency = calculation.currency
    lines = [
        {**line, "amount": money(fee.amount_cents, currency)}
        for fee, line in zip(calculation.line_items, shown["line_items"], strict=True)
    ]
    return {**shown, "total_amount": money(calculation.total_amount_cents, currency), "line_items": lines}


# A usage window named by metric_key (or code) and period_start/period_end.
WINDOW = View(
    names={"code": "metric_key", "start_time": "period_start", "end_time": "period_end"},
    alternatives={"code": "code"},
    hidden=frozenset({"aggregation", "field_name"}),
)
COUNTED = View(names={"event_count": "events_count"})

BXB: Views = {
    "bxb.catalog.v1.Tax": CREATED,
    "bxb.catalog.v1.Customer": View(
        names={"create_time": "created_at", "invoice_grace_period_days": "invoice_grace_period"},
        aliases={"external_id": "id"},
        copies={"external_id": "id"},
        nulls=frozenset({"currency", "test_clock_id"}),
        objects=frozenset({"billing"}),
    ),
    # auto_collect is null while unset: on when the customer has a payment method.
    "bxb.catalog.v1.BillingConfiguration": View(nulls=frozenset({"provider", "provider_customer_id", "auto_collect"})),
    "bxb.catalog.v1.CreateCustomerRequest": View(inline=("customer",)),
    "bxb.catalog.v1.Plan": View(
        names={"create_time": "created_at", "minimum_commitment_cents": "minimum_commitment"},
        aliases={"amount_currency": "currency"},
        wrapped={"minimum_commitment_cents": "amount_cents"},
    ),
    "bxb.catalog.v1.Charge": View(
        hidden=frozenset({"billable_metric"}), nulls=frozenset({"invoice_display_name"}), render=model_properties
    ),
    "bxb.catalog.v1.ChargeFilter": View(keyed={"values": ("key", "values")}, nulls=frozenset({"invoice_display_name"})),
    "bxb.catalog.v1.ChargeProperties": View(
        nulls=frozenset(
            {
                "fixed_amount",
                "free_units_per_events",
                "free_units_per_total_aggregation",
                "per_transaction_min_amount",
                "per_transaction_max_amount",
            }
        )
    ),
    "bxb.catalog.v1.GraduatedRange": View(
        names={"from_value": "from", "to_value": "to", "per_unit_amount": "per_unit"}, render=bounded
    ),
    "bxb.catalog.v1.GraduatedPercentageRange": View(names={"from_value": "from", "to_value": "to"}, render=bounded),
    "bxb.catalog.v1.UsageThreshold": View(
        names={"display_name": "threshold_display_name"}, nulls=frozenset({"display_name"})
    ),
    "bxb.invoicing.v1.Invoice": View(
        names={"issue_time": "issued_at", "create_time": "created_at"},
        nulls=frozenset({"id", "number", "subscription_id", "plan_code", "calculation_id", "payment_url"}),
        render=invoice_status,
    ),
    "bxb.invoicing.v1.Fee": View(nulls=frozenset({"filter"}), render=fee_fields),
    "bxb.invoicing.v1.FeeTier": View(
        names={"from_value": "from", "to_value": "to", "per_unit_amount": "per_unit"}, render=bounded
    ),
    "bxb.invoicing.v1.CreateInvoiceRequest": View(names={"cutoff_time": "cutoff_date"}),
    "bxb.invoicing.v1.Calculation": View(
        names={"id": "calculation_id", "create_time": "created_at"}, render=calculation_amounts
    ),
    "bxb.metering.v1.ComputeUsageRequest": View(
        names={"metric_code": "metric_key", "start_time": "period_start", "end_time": "period_end"},
        alternatives={"code": "metric_code"},
    ),
    "bxb.metering.v1.ComputeUsageResponse": View(
        names={
            "metric_code": "metric_key",
            "start_time": "period_start",
            "end_time": "period_end",
            "event_count": "events_count",
        },
        nulls=frozenset({"subscription_id"}),
    ),
    "bxb.metering.v1.SummarizeUsageRequest": WINDOW,
    "bxb.metering.v1.SummarizeUsageResponse": View(names={"event_count": "events_count"}, hidden=frozenset({"exact"})),
    "bxb.metering.v1.UsageHistogramRequest": WINDOW,
    "bxb.metering.v1.HistogramBucket": View(
        names={"start_time": "start", "end_time": "end", "group_value": "group", "event_count": "events_count"}
    ),
    "bxb.catalog.v1.TestClock": CREATED,
    "bxb.catalog.v1.AdvanceTestClockResponse": View(inline=("test_clock",)),
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
    "bxb.payments.v1.PaymentMethod": CREATED,
    "bxb.payments.v1.ProviderCustomer": CREATED,
    "bxb.payments.v1.SetupLink": View(nulls=frozenset({"url"})),
    "bxb.payments.v1.PaymentProvider": View(names={"create_time": "created_at", "update_time": "updated_at"}),
    "bxb.catalog.v1.ApiKey": View(
        names={"create_time": "created_at", "expire_time": "expires_at", "revoke_time": "revoked_at"},
        nulls=frozenset({"expire_time", "revoke_time"}),
    ),
    # Over HTTP a key is made for the caller's organization, its secret by the server.
    "bxb.catalog.v1.CreateApiKeyRequest": View(hidden=frozenset({"organization_id", "secret"})),
    "bxb.catalog.v1.RotateApiKeyRequest": View(names={"old_key_expire_time": "old_key_expires_at"}),
}
PARKED: Views = {
    **BXB,
    "bxb.common.v1.ParkedMessage": View(
        names={"payload_size": "payload_bytes", "park_time": "parked_at", "handle_time": "handled_at"}
    ),
}
# ABAXUS's answer to issuing an invoice on request.
ISSUED: Views = {**BXB, "bxb.invoicing.v1.Invoice": replace(BXB["bxb.invoicing.v1.Invoice"], render=issued)}
# The lines of a price calculation: fees spelled for a price sheet.
PRICED: Views = {
    **BXB,
    "bxb.invoicing.v1.Fee": View(
        names={"billable_metric_code": "metric_key"},
        nulls=frozenset({"billable_metric_code", "charge_id", "filter", "group"}),
    ),
    "bxb.invoicing.v1.FeeTier": View(names={"from_value": "from", "to_value": "to"}, render=bounded),
}
# ABAXUS's answer to `charge`: the invoice paid, with the provider's payment.
CHARGED: Views = {
    **BXB,
    "bxb.payments.v1.Payment": View(
        names={"invoice_id": "id", "id": "payment_id", "provider_payment_id": "payment_intent"},
        nulls=frozenset({"provider_payment_id"}),  # none when nothing was due
        # ABAXUS's answer as it was: the fields collection added (issue 19) are bxb's routes' only.
        hidden=frozenset(
            {"customer_id", "status", "create_time", "failure_message", "payment_url", "refunded_amount_cents"}
            | {"attempt_count", "next_attempt_time", "failure_reason", "version", "update_time"}
        ),
        render=lambda payment, shown: {**shown, "status": "paid"},
    ),
}


def window(request: Any) -> Json:
    """The usage window a usage view answers for, as the client named it."""
    return {
        "customer_id": request.customer_id,
        "metric_key": request.code,
        "period_start": format_rfc3339(from_proto(request.start_time)),
        "period_end": format_rfc3339(from_proto(request.end_time)),
    }


def summary(request: Any, reply: Any, shown: Json) -> Json:
    consistency = "exact" if reply.exact else "eventual"
    return {**window(request), **shown, "meta": {"consistency": consistency}}


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


def histogram(request: Any, reply: Any, shown: Json) -> Json:
    buckets = shown["buckets"]
    if not request.group_by:
        buckets = [{k: v for k, v in bucket.items() if k != "group"} for bucket in buckets]
    interval = enum_name(request.DESCRIPTOR.fields_by_name["interval"].enum_type, request.interval)
    return {**window(request), "interval": interval, "group_by": request.group_by or None, "buckets": buckets}


def sent(request: Any, reply: Any, shown: Json) -> Json:
    return {"invoice_id": request.id, **shown, "status": "sent"}


EXACT = {"consistency": "exact"}


def pdf(reply: Any) -> Response:
    disposition = f'inline; filename="{reply.filename}"'
    return Response(reply.content, media_type="application/pdf", headers={"Content-Disposition": disposition})


PLANS = price_plans.views(BXB)
EVENTS = ingest.views(BXB)

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
        ("POST", "/v1/price-plans"): Spelling(PLANS, handle=price_plans.create(BXB)),
        ("GET", "/v1/price-plans"): Spelling(PLANS),
        ("GET", "/v1/price-plans/{code}"): Spelling(PLANS),
        ("GET", "/v1/price-plans/{code}/versions"): Spelling(PLANS),
        ("POST", "/v1/events"): Spelling(EVENTS, handle=ingest.single),
        ("POST", "/v1/events/batch"): Spelling(EVENTS, handle=ingest.batch),
        ("POST", "/v1/events/backfill"): Spelling(EVENTS, handle=ingest.batch),
        ("GET", "/v1/events"): Spelling(EVENTS, handle=ingest.listing),
        ("GET", "/v1/events/{transaction_id}"): Spelling(EVENTS),
        ("GET", "/v1/parked_messages"): Spelling(PARKED, handle=parked.listing),
        ("POST", "/v1/parked_messages/{id}/retry"): Spelling(PARKED, handle=parked.retry),
        ("POST", "/v1/invoices"): Spelling(ISSUED, status=201),
        ("POST", "/v1/pricing/calculate"): Spelling(PRICED),
        ("GET", "/v1/pricing/calculations/{id}"): Spelling(PRICED),
        ("POST", "/v1/invoices/{invoice_id}/charge"): Spelling(CHARGED),
        ("POST", "/v1/webhooks/stripe/{organization_id}"): Spelling(BXB, handle=stripe_webhooks.receive, outside=True),
        ("GET", "/v1/invoices/{id}/pdf"): Spelling(BXB, respond=pdf),
        ("POST", "/v1/invoices/{id}/send_email"): Spelling(BXB, answer=sent),
        ("POST", "/v1/invoices/{id}/send-email"): Spelling(BXB, answer=sent),
        # Connecting an organization's payment provider creates (or replaces) the connection.
        ("POST", "/v1/payment_providers/{provider}"): Spelling(BXB, 201),
        # A rotation creates the new key.
        ("POST", "/v1/api_keys/{id}/rotate"): Spelling(BXB, 201),
        ("POST", "/v1/usage/compute"): Spelling(BXB, answer=lambda request, reply, shown: {**shown, "meta": EXACT}),
        ("GET", "/v1/usage/summary"): Spelling(BXB, answer=summary),
        ("GET", "/v1/usage/histogram"): Spelling(BXB, answer=histogram),
    },
    # A single event is the one item of a submission.
    extra=(("POST", "/v1/events", "bxb.metering.v1.EventService.SubmitEvents"),),
)
