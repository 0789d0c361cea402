"""Invoice rows: found by id within an organization, and as
bxb.invoicing.v1.Invoice messages.

An invoice's payment_status is what the payments service last announced
(payment_updated, applied in lifecycle.py), shown by these rules: none while
a draft; canceled once voided (nothing is owed, whatever was heard before);
else the last announcement's; before any, succeeded when paid or when
nothing is due (its total less its credit notes), pending otherwise. Listings
filter on the same rules, written in SQL (payment_status_clause)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message
from sqlalchemy import ColumnElement, case, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from bxb.catalog.v1 import plans_pb2
from bxb.invoicing.v1 import invoices_pb2 as pb
from services.common.errors import NotFound
from services.common.timestamps import to_proto
from services.invoicing.models import Invoice, Subscription
from services.invoicing.taxation import Totals

DRAFT, PAID = "INVOICE_STATUS_DRAFT", "INVOICE_STATUS_PAID"
NOT_ANNOUNCED = "INVOICE_PAYMENT_STATUS_UNSPECIFIED"
PENDING, SUCCEEDED = "INVOICE_PAYMENT_STATUS_PENDING", "INVOICE_PAYMENT_STATUS_SUCCEEDED"
CANCELED = "INVOICE_PAYMENT_STATUS_CANCELED"


def payment_status(invoice: Invoice) -> str:
    """How collecting the invoice stands, an InvoicePaymentStatus name (rules above)."""
    if invoice.status == DRAFT:
        return NOT_ANNOUNCED
    if invoice.void_time is not None:
        return CANCELED
    if invoice.payment_status is not None:
        return invoice.payment_status
    if invoice.status == PAID or invoice.total_amount_cents - invoice.credit_notes_amount_cents <= 0:
        return SUCCEEDED
    return PENDING


def payment_status_clause() -> ColumnElement[str]:
    """payment_status() in SQL, for a listing to filter on."""
    return case(
        (Invoice.status == DRAFT, NOT_ANNOUNCED),
        (Invoice.void_time.is_not(None), CANCELED),
        (Invoice.payment_status.is_not(None), Invoice.payment_status),
        (or_(Invoice.status == PAID, Invoice.total_amount_cents - Invoice.credit_notes_amount_cents <= 0), SUCCEEDED),
        else_=PENDING,
    )


async def stored(session: AsyncSession, org: str, invoice_id: str, field: str = "id", lock: bool = False) -> Invoice:
    """The organization's invoice (row-locked until the transaction ends with
    `lock`), or NOT_FOUND naming `field`."""
    query = select(Invoice).where(Invoice.id == invoice_id, Invoice.organization_id == org)
    invoice = (await session.execute(query.with_for_update() if lock else query)).scalar_one_or_none()
    if invoice is None:
        raise NotFound(f"invoice {invoice_id!r} not found", field=field)
    return invoice


def _json(messages: Iterable[Message]) -> list[dict[str, Any]]:
    return [json_format.MessageToDict(m, preserving_proto_field_name=True) for m in messages]


def describe(
    invoice: Invoice, subscription: Subscription, plan: plans_pb2.Plan, bounds: tuple[datetime, datetime], timing: str
) -> None:
    """Writes who and what an invoice bills onto its row: the subscription's
    customer and plan, the period (`bounds`) and the BillingTiming name."""
    invoice.organization_id = subscription.organization_id
    invoice.customer_id = subscription.customer_id
    invoice.subscription_id = subscription.id
    invoice.plan_code = plan.code
    invoice.currency = plan.currency
    invoice.period_start, invoice.period_end = bounds
    invoice.timing = timing


def fill(invoice: Invoice, fees: Sequence[pb.Fee], given: Sequence[pb.InvoiceCoupon], amounts: Totals) -> None:
    """Writes an invoice's lines, coupons, taxes and amounts onto its row (issued or draft)."""
    invoice.fees = _json(fees)
    invoice.subtotal_cents = amounts.subtotal
    invoice.coupons = _json(given)
    invoice.coupons_amount_cents = amounts.discount
    invoice.taxes = _json(amounts.taxes)
    invoice.taxes_amount_cents = amounts.tax
    invoice.credit_notes_amount_cents = 0
    invoice.total_amount_cents = amounts.total


def invoice_proto(invoice: Invoice) -> pb.Invoice:
    return pb.Invoice(
        id=invoice.id,
        number=invoice.number or "",  # none while a draft
        customer_id=invoice.customer_id,
        subscription_id=invoice.subscription_id,
        plan_code=invoice.plan_code,
        status=pb.InvoiceStatus.Value(invoice.status),
        currency=invoice.currency,
        period_start=to_proto(invoice.period_start),
        period_end=to_proto(invoice.period_end),
        fees=[json_format.ParseDict(fee, pb.Fee()) for fee in invoice.fees],
        subtotal_cents=invoice.subtotal_cents,
        total_amount_cents=invoice.total_amount_cents,
        issue_time=to_proto(invoice.issue_time),
        create_time=to_proto(invoice.create_time),
        timing=pb.BillingTiming.Value(invoice.timing),
        calculation_id=invoice.calculation_id,
        coupons=[json_format.ParseDict(c, pb.InvoiceCoupon()) for c in invoice.coupons],
        coupons_amount_cents=invoice.coupons_amount_cents,
        taxes=[json_format.ParseDict(t, pb.InvoiceTax()) for t in invoice.taxes],
        taxes_amount_cents=invoice.taxes_amount_cents,
        credit_notes_amount_cents=invoice.credit_notes_amount_cents,
        # A voided invoice owes nothing.
        amount_due_cents=0 if invoice.void_time else invoice.total_amount_cents - invoice.credit_notes_amount_cents,
        payment_status=pb.InvoicePaymentStatus.Value(payment_status(invoice)),
        payment_url="" if invoice.void_time else invoice.payment_url,  # nothing to pay once voided
    )
