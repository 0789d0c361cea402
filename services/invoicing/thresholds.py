"""Usage thresholds (progressive billing): how many a usage amount has
crossed, and how many each subscription period has been invoiced for. An
invoice billing a new crossing is announced as
bxb.invoicing.v1.usage_threshold_reached, in its transaction (`record`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from bxb.catalog.v1 import plans_pb2
from bxb.invoicing.v1 import events_pb2
from services.common import outbox
from services.common.ids import new_id
from services.common.timestamps import to_proto
from services.invoicing.models import Invoice, Outbox, ThresholdCrossing

USAGE_THRESHOLD_REACHED = "bxb.invoicing.v1.usage_threshold_reached"


@dataclass(frozen=True)
class Crossing:
    """A period's usage so far reaching thresholds: the period, how many it
    reached, the usage and the highest threshold reached (minor units)."""

    period_start: datetime
    crossed: int
    usage_cents: int
    threshold_cents: int


def crossings(thresholds: Sequence[plans_pb2.UsageThreshold], usage_cents: int) -> int:
    """The number of thresholds `usage_cents` has reached: every fixed one at or
    below it, then one per full recurring amount beyond the last fixed one."""
    fixed = sorted(t.amount_cents for t in thresholds if not t.recurring)
    count = sum(1 for amount in fixed if usage_cents >= amount)
    recurring = next((t.amount_cents for t in thresholds if t.recurring), 0)
    base = fixed[-1] if fixed else 0
    if recurring and usage_cents >= base + recurring:
        count += (usage_cents - base) // recurring
    return count


def highest(thresholds: Sequence[plans_pb2.UsageThreshold], crossed: int) -> int:
    """The amount of the `crossed`-th threshold (1-based, in the order
    `crossings` counts them): a fixed one, else a multiple of the recurring
    one beyond the last fixed one."""
    fixed = sorted(t.amount_cents for t in thresholds if not t.recurring)
    if crossed <= len(fixed):
        return fixed[crossed - 1]
    recurring = next(t.amount_cents for t in thresholds if t.recurring)
    return (fixed[-1] if fixed else 0) + (crossed - len(fixed)) * recurring


async def invoiced(session: AsyncSession, subscription_id: str, period_start: datetime) -> int:
    found = await session.execute(
        select(ThresholdCrossing.crossed).where(
            ThresholdCrossing.subscription_id == subscription_id, ThresholdCrossing.period_start == period_start
        )
    )
    return found.scalar_one_or_none() or 0


async def record(session: AsyncSession, invoice: Invoice, crossing: Crossing) -> None:
    """Keeps how many thresholds the period was invoiced for, and announces
    the highest reached with the invoice that billed it."""
    statement = insert(ThresholdCrossing).values(
        subscription_id=invoice.subscription_id, period_start=crossing.period_start, crossed=crossing.crossed
    )
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=[ThresholdCrossing.subscription_id, ThresholdCrossing.period_start],
            set_={"crossed": func.greatest(ThresholdCrossing.crossed, statement.excluded.crossed)},
        )
    )
    event = events_pb2.UsageThresholdReached(
        event_id=new_id("evt"),
        organization_id=invoice.organization_id,
        occur_time=to_proto(invoice.issue_time),
        subscription_id=invoice.subscription_id,
        customer_id=invoice.customer_id,
        usage_amount_cents=crossing.usage_cents,
        threshold_amount_cents=crossing.threshold_cents,
        currency=invoice.currency,
        invoice_id=invoice.id,
    )
    await outbox.enqueue(session, Outbox, USAGE_THRESHOLD_REACHED, event)
