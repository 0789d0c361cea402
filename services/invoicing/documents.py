"""An invoice as a PDF document (reportlab): its header, one row per fee
line, then the subtotal, each coupon, each tax and the total. Amounts are
printed from integer minor units with the currency's own decimals."""

from __future__ import annotations

import io
from decimal import Decimal
from xml.sax.saxutils import escape

from google.protobuf.timestamp_pb2 import Timestamp
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import getSampleStyleSheet
from reportlab.lib.units import mm
from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

from bxb.invoicing.v1 import invoices_pb2 as pb
from services.common.currencies import exponent
from services.common.timestamps import from_proto


def money(cents: int, currency: str) -> str:
    """12400 USD -> "124.00 USD"; 500 JPY -> "500 JPY"; 1001 KWD -> "1.001 KWD"."""
    digits = exponent(currency)
    return f"{Decimal(cents).scaleb(-digits):,.{digits}f} {currency}"


def _day(stamp: Timestamp) -> str:
    return from_proto(stamp).strftime("%Y-%m-%d %H:%M UTC")


def render(invoice: pb.Invoice) -> bytes:
    styles = getSampleStyleSheet()
    buffer = io.BytesIO()
    document = SimpleDocTemplate(
        buffer,
        pagesize=A4,
        title=f"Invoice {invoice.number}",
        leftMargin=18 * mm,
        rightMargin=18 * mm,
        topMargin=18 * mm,
        bottomMargin=18 * mm,
    )
    status = pb.InvoiceStatus.Name(invoice.status).removeprefix("INVOICE_STATUS_").title()  # the canonical name
    header = [
        ["Invoice", invoice.number],
        ["Status", status],
        ["Customer", invoice.customer_id],
        ["Subscription", f"{invoice.subscription_id} ({invoice.plan_code})"],
        ["Period", f"{_day(invoice.period_start)} to {_day(invoice.period_end)}"],
        ["Issued", _day(invoice.issue_time)],
    ]
    rows: list[list[str | Paragraph]] = [["Description", "Units", "Unit price", "Amount"]]
    for fee in invoice.fees:
        unit = f"{fee.unit_amount} {invoice.currency}" if fee.unit_amount else ""
        rows.append(
            [
                Paragraph(escape(fee.description), styles["BodyText"]),
                fee.units,
                unit,
                money(fee.amount_cents, invoice.currency),
            ]
        )
    totals = [["Subtotal", money(invoice.subtotal_cents, invoice.currency)]]
    totals += [[f"Coupon {c.code}", money(c.discount_cents, invoice.currency)] for c in invoice.coupons]
    totals += [[f"{t.name or t.code} ({t.rate}%)", money(t.amount_cents, invoice.currency)] for t in invoice.taxes]
    totals.append(["Total due", money(invoice.total_amount_cents, invoice.currency)])

    lines = Table(rows, colWidths=[85 * mm, 25 * mm, 30 * mm, 34 * mm], repeatRows=1)
    lines.setStyle(
        TableStyle(
            [
                ("FONTNAME", (0, 0), (-1, 0), "Helvetica-Bold"),
                ("LINEBELOW", (0, 0), (-1, 0), 0.8, colors.black),
                ("LINEBELOW", (0, 1), (-1, -1), 0.25, colors.lightgrey),
                ("ALIGN", (1, 0), (-1, -1), "RIGHT"),
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
            ]
        )
    )
    summary = Table(totals, colWidths=[140 * mm, 34 * mm])
    summary.setStyle(
        TableStyle(
            [
                ("ALIGN", (0, 0), (-1, -1), "RIGHT"),
                ("FONTNAME", (0, -1), (-1, -1), "Helvetica-Bold"),
                ("LINEABOVE", (0, -1), (-1, -1), 0.8, colors.black),
            ]
        )
    )
    document.build(
        [
            Paragraph(f"Invoice {invoice.number}", styles["Title"]),
            Table(header, colWidths=[35 * mm, 139 * mm], style=[("FONTNAME", (0, 0), (0, -1), "Helvetica-Bold")]),
            Spacer(1, 8 * mm),
            lines,
            Spacer(1, 4 * mm),
            summary,
        ]
    )
    return buffer.getvalue()
