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

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from bxb.catalog.v1 import plans_pb2, taxes_pb2
from bxb.invoicing.v1 import events_pb2
from bxb.invoicing.v1 import invoices_pb2 as pb
from services.common import outbox
from services.common.ids import new_id
from services.common.timestamps import to_proto
from services.invoicing import coupons
from services.invoicing.discounts import Invoiced
from services.invoicing.invoice_view import describe, fill, invoice_proto
from services.invoicing.models import (
    CreditNoteSequence,
    InterimAmount,
    Invoice,
    InvoiceSequence,
    Outbox,
    Subscription,
)
from services.invoicing.taxation import totals

INVOICE_FINALIZED = "bxb.invoicing.v1.invoice_finalized"
# A table of gapless numbers, one row per organization.
NumberSequence = type[InvoiceSequence] | type[CreditNoteSequence]


async def lock(session: AsyncSession, subscription_ids: Sequence[str]) -> dict[str, Subscription]:
    """The subscriptions' rows by id, fresh and locked until the transaction
    ends. Locked in id order, so two transactions locking overlapping sets
    (two billing pages, a page and an invoice on request) never deadlock."""
    query = (
        select(Subscription)
        .where(Subscription.id.in_(sorted(set(subscription_ids))))
        .order_by(Subscription.id)
        .with_for_update()
    )
    rows = (await session.execute(query.execution_options(populate_existing=True))).scalars().all()
    return {row.id: row for row in rows}


def settle(subscription: Subscription, watermark: InstrumentedAttribute[datetime | None], end: datetime) -> None:
    """Moves a watermark of the locked `subscription` (a column: every period
    up to it is settled) to `end`, never back; stored when the transaction
    flushes."""
    billed = getattr(subscription, watermark.key)
    setattr(subscription, watermark.key, end if billed is None else max(billed, end))


async def deducted(
    session: AsyncSession, subscription_id: str, fees: list[pb.Fee], period_start: datetime, end: datetime
) -> tuple[list[pb.Fee], int]:
    """`fees` of the period starting at `period_start`, with a line taking off
    what earlier invoices (on request, at a threshold) billed of it when they
    did; and that amount."""
    prior = (await already_billed(session, [(subscription_id, period_start)])).get((subscription_id, period_start), 0)
    return ([*fees, deduction(prior, period_start, end)] if prior else fees), prior


async def already_billed(
    session: AsyncSession, periods: Sequence[tuple[str, datetime]]
) -> dict[tuple[str, datetime], int]:
    """What live invoices on request billed of each (subscription, period
    start) in `periods`, one query for all; periods without any are left out."""
    if not periods:
        return {}
    query = (
        select(InterimAmount.subscription_id, InterimAmount.period_start, func.sum(InterimAmount.amount_cents))
        .join(Invoice, Invoice.id == InterimAmount.invoice_id)
        .where(
            InterimAmount.subscription_id.in_({subscription_id for subscription_id, _ in periods}),
            InterimAmount.period_start.in_({start for _, start in periods}),
            Invoice.void_time.is_(None),
        )
        .group_by(InterimAmount.subscription_id, InterimAmount.period_start)
    )
    wanted = set(periods)
    rows = (await session.execute(query)).all()
    return {(s, start): int(cents) for s, start, cents in rows if (s, start) in wanted}


def deduction(cents: int, start: datetime, end: datetime) -> pb.Fee:
    """The line taking off what earlier invoices of a period billed."""
    return pb.Fee(
        type=pb.FEE_TYPE_ALREADY_BILLED,
        amount_cents=-cents,
        units="1",
        description="Already billed this period",
        period_start=to_proto(start),
        period_end=to_proto(end),
    )


async def reserve(session: AsyncSession, sequence: NumberSequence, org: str, count: int = 1) -> int:
    """Takes the organization's next `count` numbers from `sequence` and
    returns the last; its row is locked until the transaction ends, so numbers
    are gapless (a rollback gives them back)."""
    return (
        await session.execute(
            insert(sequence)
            .values(organization_id=org, last_number=count)
            .on_conflict_do_update(
                index_elements=[sequence.organization_id], set_={"last_number": sequence.last_number + count}
            )
            .returning(sequence.last_number)
        )
    ).scalar_one()


async def next_number(session: AsyncSession, sequence: NumberSequence, org: str, prefix: str) -> str:
    """The organization's next number from `sequence` (see `reserve`)."""
    return f"{prefix}-{await reserve(session, sequence, org):06d}"


async def store(
    session: AsyncSession,
    subscription: Subscription,
    plan: plans_pb2.Plan,
    bounds: tuple[datetime, datetime],
    timing: pb.BillingTiming.ValueType,
    fees: list[pb.Fee],
    now: datetime,
    taxes: Sequence[taxes_pb2.Tax] = (),
    calculation_id: str = "",
    draft: Invoice | None = None,
    discounted: bool = True,
) -> Invoice:
    """Completes the invoice (finalizing `draft`, the period's stored draft,
    when there is one: it keeps its id) and adds it to the session, unnumbered:
    the caller numbers it (`announce`). The caller's lock and its check of the
    watermarks make a second live invoice of one period impossible; the unique
    index stays as the last guard (a violation aborts the transaction).
    `discounted`: False when the caller knows the customer has no coupon in
    force, which saves reading them."""
    org = subscription.organization_id
    invoiced = Invoiced(fees, plan.currency, plan.code, bounds[0])
    given = (
        await coupons.discount(session, org, subscription.customer_id, subscription.id, invoiced, now, lock=True)
        if discounted
        else []
    )
    invoice = draft or Invoice()
    describe(invoice, subscription, plan, bounds, pb.BillingTiming.Name(timing))
    invoice.calculation_id = calculation_id
    complete(session, invoice, fees, given, taxes, now)
    session.add_all(coupons.redemptions(invoice.id, subscription.id, bounds[0], given))
    return invoice


def complete(
    session: AsyncSession,
    invoice: Invoice,
    fees: list[pb.Fee],
    given: Sequence[pb.InvoiceCoupon],
    taxes: Sequence[taxes_pb2.Tax],
    now: datetime,
) -> Invoice:
    """Completes `invoice` (who and what it bills is set) with its lines,
    coupons, taxes and totals, issued at `now`, and adds it to the session."""
    amounts = totals(fees, given, invoice.currency, taxes)
    invoice.id = invoice.id or new_id("inv")
    invoice.status = "INVOICE_STATUS_FINALIZED"
    fill(invoice, fees, given, amounts)
    invoice.issue_time = now
    invoice.create_time = invoice.create_time or now
    session.add(invoice)
    return invoice


async def announce(session: AsyncSession, invoices: Sequence[Invoice]) -> None:
    """Numbers the organization's completed `invoices` in order, with one
    reservation for all of them, and queues invoice_finalized for each."""
    if not invoices:
        return
    last = await reserve(session, InvoiceSequence, invoices[0].organization_id, len(invoices))
    for number, invoice in enumerate(invoices, start=last - len(invoices) + 1):
        invoice.number = f"INV-{number:06d}"
    events = [
        events_pb2.InvoiceFinalized(
            event_id=new_id("evt"),
            organization_id=invoice.organization_id,
            occur_time=to_proto(invoice.issue_time),
            invoice=invoice_proto(invoice),
        )
        for invoice in invoices
    ]
    await outbox.enqueue(session, Outbox, INVOICE_FINALIZED, *events)


async def record(
    session: AsyncSession,
    invoice: Invoice,
    fees: list[pb.Fee],
    given: Sequence[pb.InvoiceCoupon],
    taxes: Sequence[taxes_pb2.Tax],
    now: datetime,
) -> Invoice:
    """Issues one invoice: `complete` and `announce`."""
    await announce(session, [complete(session, invoice, fees, given, taxes, now)])
    return invoice
