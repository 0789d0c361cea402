"""Draft invoices: priced as they would be issued now, never numbered.

Two kinds share one pricing (`priced`):
- computed drafts, for an open period or a preview (invoices.py): never
  stored;
- stored drafts, for an ended period during its customer's grace period
  (`keep`): the billing run recomputes one from the usage known at each run,
  late events included, until its grace period ends; then it is finalized in
  place (it keeps its id and takes its number; issuing.store). A period's
  draft, when first stored, is announced as bxb.invoicing.v1.invoice_drafted
  through the outbox, in the same transaction.
A draft's coupons are those an invoice issued now would get; it takes
nothing from them until it is finalized.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bxb.catalog.v1 import plans_pb2, taxes_pb2
from bxb.invoicing.v1 import events_pb2
from bxb.invoicing.v1 import invoices_pb2 as pb
from services.common import outbox
from services.common.ids import new_id
from services.common.timestamps import to_proto
from services.invoicing import coupons
from services.invoicing.discounts import Invoiced
from services.invoicing.invoice_view import describe, fill, invoice_proto
from services.invoicing.models import Invoice, Outbox, Subscription
from services.invoicing.taxation import Totals, totals

DRAFT = "INVOICE_STATUS_DRAFT"
INVOICE_DRAFTED = "bxb.invoicing.v1.invoice_drafted"
ARREARS = "BILLING_TIMING_IN_ARREARS"


async def priced(
    session: AsyncSession,
    subscription: Subscription,
    plan: plans_pb2.Plan,
    period_start: datetime,
    fees: list[pb.Fee],
    now: datetime,
    taxes: Sequence[taxes_pb2.Tax],
) -> tuple[list[pb.InvoiceCoupon], Totals]:
    """The coupons an invoice of these fees issued now would get, and its totals."""
    invoiced = Invoiced(fees, plan.currency, plan.code, period_start)
    org, customer = subscription.organization_id, subscription.customer_id
    given = await coupons.discount(session, org, customer, subscription.id, invoiced, now)
    return given, totals(fees, given, plan.currency, taxes)


async def stored(session: AsyncSession, periods: Sequence[tuple[str, datetime]]) -> dict[tuple[str, datetime], Invoice]:
    """The stored drafts of the (subscription id, period start) pairs in
    `periods` that have one, by that pair, one query for all."""
    if not periods:
        return {}
    query = select(Invoice).where(
        Invoice.subscription_id.in_({subscription_id for subscription_id, _ in periods}),
        Invoice.timing == ARREARS,
        Invoice.status == DRAFT,
    )
    wanted = set(periods)
    found = (await session.execute(query)).scalars().all()
    return {key: draft for draft in found if (key := (draft.subscription_id, draft.period_start)) in wanted}


async def keep(
    session: AsyncSession,
    draft: Invoice | None,
    subscription: Subscription,
    plan: plans_pb2.Plan,
    bounds: tuple[datetime, datetime],
    fees: list[pb.Fee],
    now: datetime,
    taxes: Sequence[taxes_pb2.Tax],
    grace_end: datetime,
) -> Invoice:
    """Stores the period's draft with these fees (a new one, announced as
    invoice_drafted, when `draft` is None)."""
    given, amounts = await priced(session, subscription, plan, bounds[0], fees, now, taxes)
    new = draft is None
    if draft is None:
        draft = Invoice(id=new_id("inv"), status=DRAFT, create_time=now, grace_end_time=grace_end)
        describe(draft, subscription, plan, bounds, ARREARS)
        session.add(draft)
    fill(draft, fees, given, amounts)
    draft.issue_time = now  # when it was last computed
    if new:
        await session.flush()  # its column defaults, as a read of it shows them
        event = events_pb2.InvoiceDrafted(
            event_id=new_id("evt"),
            organization_id=draft.organization_id,
            occur_time=to_proto(now),
            invoice=invoice_proto(draft),
        )
        await outbox.enqueue(session, Outbox, INVOICE_DRAFTED, event)
    return draft
