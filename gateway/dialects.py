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

from starlette.responses import Response

from bxb.invoicing.v1 import invoices_pb2
from gateway import ingest, parked, price_plans
from gateway.codec import View, Views, enum_name
from gateway.shapes import Json, bounded
from gateway.transcoder import Dialect, Spelling
from services.common.charge_fields import MODEL_FIELDS
from services.common.currencies import exponent
from services.common.timestamps import format_rfc3339, from_proto

CREATED = View(names={"create_time": "created_at"})


def money(cents: int, currency: str) -> str:
    """Minor units as a major-unit decimal string with every minor digit: 12750 USD -> "127.50"."""
    places = exponent(currency)
    return f"{Decimal(cents).scaleb(-places):.{places}f}"


def model_properties(charge: Any, shown: Json) -> Json:
    """A charge's properties (and its filters') are those of its model;
    grouped_by only when the charge is grouped."""

    def only(properties: Json, given: Any) -> Json:
        kept = {name: properties[name] for name in MODEL_FIELDS[model]}
        if given.grouped_by:
            kept["grouped_by"] = properties["grouped_by"]
        return kept

    model = enum_name(charge.DESCRIPTOR.fields_by_name["charge_model"].enum_type, charge.charge_model)
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
    aliases={"code": "code"},
    one_spelling=True,
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
    "bxb.catalog.v1.BillingConfiguration": View(nulls=frozenset({"provider", "provider_customer_id"})),
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
        nulls=frozenset({"id", "number", "subscription_id", "plan_code", "calculation_id"}),
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
        aliases={"code": "metric_code"},
        one_spelling=True,
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
        hidden=frozenset({"customer_id", "status", "create_time", "failure_message"}),
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
        ("GET", "/v1/invoices/{id}/pdf"): Spelling(BXB, respond=pdf),
        ("POST", "/v1/invoices/{id}/send_email"): Spelling(BXB, answer=sent),
        ("POST", "/v1/invoices/{id}/send-email"): Spelling(BXB, answer=sent),
        ("POST", "/v1/usage/compute"): Spelling(BXB, answer=lambda request, reply, shown: {**shown, "meta": EXACT}),
        ("GET", "/v1/usage/summary"): Spelling(BXB, answer=summary),
        ("GET", "/v1/usage/histogram"): Spelling(BXB, answer=histogram),
    },
    # A single event is the one item of a submission.
    extra=(("POST", "/v1/events", "bxb.metering.v1.EventService.SubmitEvents"),),
)
