"""Storing an issued invoice, for every path that issues one (the billing
run, an invoice on request): its coupons, then its taxes on what the coupons
left, its gapless number, its row, what its coupons gave, and
invoice_finalized through the outbox, all in the caller's transaction.

Callers lock the subscription first (`lock`), so the billing run and
invoices on request never bill the same stretch of a subscription at once,
and read what earlier invoices on request billed of a period (`deducted`)
and move the watermarks (`settle`) under that lock.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
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
from services.invoicing.models import InterimAmount, Invoice, InvoiceSequence, Outbox, Subscription
from services.invoicing.taxation import totals

INVOICE_FINALIZED = "bxb.invoicing.v1.invoice_finalized"


async def lock(session: AsyncSession, subscription_id: str) -> Subscription:
    """The subscription's row, fresh and locked until the transaction ends."""
    query = select(Subscription).where(Subscription.id == subscription_id).with_for_update()
    return (await session.execute(query.execution_options(populate_existing=True))).scalar_one()


async def settle(session: AsyncSession, subscription_id: str, watermark, end: datetime) -> None:
    """Moves a watermark of the subscription (a column: every period up to it
    is settled) to `end`; GREATEST ignores NULL, and never moves it back."""
    await session.execute(
        update(Subscription)
        .where(Subscription.id == subscription_id)
        .values({watermark.key: func.greatest(watermark, end)})
    )


async def deducted(
    session: AsyncSession, subscription_id: str, fees: list[pb.Fee], period_start: datetime, end: datetime
) -> tuple[list[pb.Fee], int]:
    """`fees` of the period starting at `period_start`, with a line taking off
    what earlier invoices (on request, at a threshold) billed of it when they
    did; and that amount."""
    prior = await _already_billed(session, subscription_id, period_start)
    return ([*fees, _deduction(prior, period_start, end)] if prior else fees), prior


async def _already_billed(session: AsyncSession, subscription_id: str, period_start: datetime) -> int:
    """What live invoices on request billed of the period starting at `period_start`."""
    query = (
        select(func.coalesce(func.sum(InterimAmount.amount_cents), 0))
        .join(Invoice, Invoice.id == InterimAmount.invoice_id)
        .where(
            InterimAmount.subscription_id == subscription_id,
            InterimAmount.period_start == period_start,
            Invoice.void_time.is_(None),
        )
    )
    return int((await session.execute(query)).scalar_one())


def _deduction(cents: int, start: datetime, end: datetime) -> pb.Fee:
    """The line taking off what earlier invoices of a period billed."""
    return pb.Fee(
        type=pb.FEE_TYPE_ALREADY_BILLED,
        amount_cents=-cents,
        units="1",
        description="Already billed this period",
        period_start=to_proto(start),
        period_end=to_proto(end),
    )


async def next_number(session: AsyncSession, sequence, org: str, prefix: str) -> str:
    """The organization's next number from `sequence` (its row is locked until
    the transaction ends, so numbers are gapless: a rollback gives it back)."""
    number = (
        await session.execute(
            insert(sequence)
            .values(organization_id=org, last_number=1)
            .on_conflict_do_update(
                index_elements=[sequence.organization_id], set_={"last_number": sequence.last_number + 1}
            )
            .returning(sequence.last_number)
        )
    ).scalar_one()
    return f"{prefix}-{number:06d}"


async def store(
    session: AsyncSession,
    subscription: Subscription,
    plan: plans_pb2.Plan,
    bounds: tuple[datetime, datetime],
    timing: int,
    fees: list[pb.Fee],
    now: datetime,
    taxes: Sequence[taxes_pb2.Tax] = (),
    calculation_id: str = "",
    draft: Invoice | None = None,
) -> Invoice:
    """Issues the invoice (finalizing `draft`, the period's stored draft, when
    there is one: it keeps its id). The caller's lock and its check of the
    watermarks make a second live invoice of one period impossible; the unique
    index stays as the last guard (a violation aborts the transaction)."""
    org = subscription.organization_id
    invoiced = Invoiced(fees, plan.currency, plan.code, bounds[0])
    given = await coupons.discount(session, org, subscription.customer_id, subscription.id, invoiced, now, lock=True)
    invoice = draft or Invoice()
    describe(invoice, subscription, plan, bounds, pb.BillingTiming.Name(timing))
    invoice.calculation_id = calculation_id
    invoice = await record(session, invoice, fees, given, taxes, now)
    session.add_all(coupons.redemptions(invoice.id, subscription.id, bounds[0], given))
    return invoice


async def record(
    session: AsyncSession,
    invoice: Invoice,
    fees: list[pb.Fee],
    given: Sequence[pb.InvoiceCoupon],
    taxes: Sequence[taxes_pb2.Tax],
    now: datetime,
) -> Invoice:
    """Completes `invoice` (who and what it bills is set) with its lines,
    coupons, taxes, totals and number, stores it and announces it."""
    amounts = totals(fees, given, invoice.currency, taxes)
    invoice.id = invoice.id or new_id("inv")
    invoice.number = await next_number(session, InvoiceSequence, invoice.organization_id, "INV")
    invoice.status = "INVOICE_STATUS_FINALIZED"
    fill(invoice, fees, given, amounts)
    invoice.issue_time = now
    invoice.create_time = invoice.create_time or now
    session.add(invoice)
    event = events_pb2.InvoiceFinalized(
        event_id=new_id("evt"),
        organization_id=invoice.organization_id,
        occur_time=to_proto(now),
        invoice=invoice_proto(invoice),
    )
    await outbox.enqueue(session, Outbox, INVOICE_FINALIZED, event)
    return invoice
