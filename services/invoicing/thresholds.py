"""Usage thresholds (progressive billing): how many a usage amount has
crossed, and how many each subscription period has been invoiced for."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from bxb.catalog.v1 import plans_pb2
from services.invoicing.models import ThresholdCrossing


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


async def invoiced(session: AsyncSession, subscription_id: str, period_start: datetime) -> int:
    found = await session.execute(
        select(ThresholdCrossing.crossed).where(
            ThresholdCrossing.subscription_id == subscription_id, ThresholdCrossing.period_start == period_start
        )
    )
    return found.scalar_one_or_none() or 0


async def record(session: AsyncSession, subscription_id: str, period_start: datetime, crossed: int) -> None:
    statement = insert(ThresholdCrossing).values(
        subscription_id=subscription_id, period_start=period_start, crossed=crossed
    )
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=[ThresholdCrossing.subscription_id, ThresholdCrossing.period_start],
            set_={"crossed": func.greatest(ThresholdCrossing.crossed, statement.excluded.crossed)},
        )
    )
