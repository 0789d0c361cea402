"""Late usage: events of a period whose invoice is already final.

A finalized invoice never changes. When the next period's invoice is issued,
the billing run prices the period before it again with every event known
now; what that comes to beyond what the period has been billed (the lines
naming it on live invoices: its own, invoices on request, earlier late-usage
lines) is billed on the new
invoice as a LATE_USAGE line naming the earlier period, which counts as billed
of that period from then on, so it is never billed twice. Voiding the new
invoice gives it back: the next one bills it again.

Only the period just before is looked at: usage arriving more than a period
late is not billed. Late events only ever add usage in practice; a period now
priced below what it was billed is left as billed (no credit is made).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bxb.invoicing.v1 import invoices_pb2 as pb
from services.common.periods import Period
from services.common.timestamps import parse_rfc3339, to_proto
from services.invoicing.models import Invoice

ARREARS, ADVANCE = "BILLING_TIMING_IN_ARREARS", "BILLING_TIMING_IN_ADVANCE"
DRAFT = "INVOICE_STATUS_DRAFT"
# A live or voided invoice of a subscription: its period's start and end,
# status, void time, timing and fee lines (as stored).
Billed = tuple[datetime, datetime, str, datetime | None, str, list[dict[str, Any]]]


async def billed(session: AsyncSession, wanted: Sequence[tuple[str, Period]]) -> dict[tuple[str, datetime], int | None]:
    """What each (subscription, period) in `wanted` has been billed for its
    usage so far, keyed by (subscription id, period start), one query for all:
    the lines naming it on every live invoice but those paid in advance (its
    own invoice, the invoices on request or at a threshold that billed part of
    it and the deductions of those, earlier late-usage lines). None when that
    is not settled: its invoice is still a draft, or was voided and not
    replaced."""
    if not wanted:
        return {}
    query = select(
        Invoice.subscription_id,
        Invoice.period_start,
        Invoice.period_end,
        Invoice.status,
        Invoice.void_time,
        Invoice.timing,
        Invoice.fees,
    ).where(
        Invoice.subscription_id.in_({subscription_id for subscription_id, _ in wanted}),
        Invoice.period_start <= max(period.start for _, period in wanted),
        Invoice.period_end > min(period.start for _, period in wanted),
        Invoice.timing != ADVANCE,
    )
    invoices: dict[str, list[Billed]] = {}
    for subscription_id, start, end, status, voided, timing, fees in (await session.execute(query)).all():
        invoices.setdefault(subscription_id, []).append((start, end, status, voided, timing, fees))
    return {(s, period.start): _billed(invoices.get(s, []), period) for s, period in wanted}


def _billed(invoices: list[Billed], period: Period) -> int | None:
    """`billed` of one period, from its subscription's invoices around it."""
    around = [row[:1] + row[2:] for row in invoices if row[0] <= period.start < row[1]]
    own = [
        (status, voided) for start, status, voided, timing, _ in around if (start, timing) == (period.start, ARREARS)
    ]
    if any(status == DRAFT for status, _ in own) or (own and all(voided for _, voided in own)):
        return None
    return sum(
        int(fee.get("amount_cents", 0))
        for _, _, voided, _, fees in around
        if voided is None
        for fee in fees
        if "period_start" in fee and parse_rfc3339(fee["period_start"]) == period.start
    )


def line(cents: int, period: Period) -> pb.Fee:
    return pb.Fee(
        type=pb.FEE_TYPE_LATE_USAGE,
        amount_cents=cents,
        units="1",
        description="Usage received after this period's invoice was final",
        period_start=to_proto(period.start),
        period_end=to_proto(period.end),
    )


def owed(so_far: int | None, period: Period, repriced: list[pb.Fee]) -> pb.Fee | None:
    """The LATE_USAGE line for `period`, now priced at `repriced`, given what
    it was `billed` so far; None when it owes nothing more."""
    if so_far is None:
        return None
    more = sum(f.amount_cents for f in repriced) - so_far
    return line(more, period) if more > 0 else None
