"""Test clocks, as invoicing knows them: each clock's time, projected from
bxb.catalog.v1.test_clock_advanced (and moved by RunBilling for a clock).

A subscription of a customer on a clock lives at the clock's time: the
billing run closes its periods when the clock reaches their ends, and its
drafts and previews are priced at that time. A clock only ever moves forward,
whatever order its announcements arrive in. A subscription whose clock this
copy does not know yet is left alone (never billed at the real time).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.common import clock_times
from services.common.errors import Unavailable
from services.invoicing.models import Subscription, TestClock


async def advance(session: AsyncSession, org: str, clock_id: str, frozen_time: datetime) -> None:
    """Records the clock's time, unless it knows a later one."""
    await clock_times.advance(session, TestClock, org, clock_id, frozen_time)


async def times(session: AsyncSession, subscriptions: Iterable[Subscription]) -> dict[str, datetime]:
    """The time of each clock the subscriptions live on."""
    ids = {s.test_clock_id for s in subscriptions if s.test_clock_id}
    if not ids:
        return {}
    rows = await session.execute(select(TestClock.id, TestClock.frozen_time).where(TestClock.id.in_(ids)))
    return {clock_id: time for clock_id, time in rows}


def now_of(subscription: Subscription, clocks: dict[str, datetime], now: datetime) -> datetime | None:
    """The subscription's present: its clock's time, the real `now` without a
    clock, None while its clock is unknown."""
    return clocks.get(subscription.test_clock_id) if subscription.test_clock_id else now


async def presents(session: AsyncSession, subscriptions: Sequence[Subscription], now: datetime) -> dict[str, datetime]:
    """Each subscription's present (`now_of`), by id; one whose clock is unknown here has none."""
    known = await times(session, subscriptions)
    at = {s.id: now_of(s, known, now) for s in subscriptions}
    return {sub_id: time for sub_id, time in at.items() if time is not None}


async def present(session: AsyncSession, subscription: Subscription, now: datetime) -> datetime:
    """The subscription's present, for a request that must have one: UNAVAILABLE
    (retry) while its clock's announcement is still on its way here."""
    found = (await presents(session, [subscription], now)).get(subscription.id)
    if found is None:
        raise Unavailable(f"test clock {subscription.test_clock_id!r} is not known here yet; retry")
    return found
