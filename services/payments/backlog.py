"""The webhook backlog gauge: deliveries (to webhook endpoints and
integrations) still pending, counted from the partial index of pending
deliveries; a metrics probe the service runs in the background."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.common import metrics
from services.payments.models import DELIVERY_PENDING, Delivery


def webhook_backlog(sessions: async_sessionmaker[AsyncSession]) -> Callable[[], Awaitable[None]]:
    async def measure() -> None:
        async with sessions() as session:
            pending = await session.scalar(
                select(func.count()).select_from(Delivery).where(Delivery.status == DELIVERY_PENDING)
            )
        metrics.WEBHOOK_BACKLOG.set(pending or 0)

    return measure
