"""Test clocks, as payments knows them: each clock's time, projected from
bxb.catalog.v1.test_clock_advanced. A payment of a customer on a clock is
collected and dunned at the clock's time, so advancing the clock runs a
whole dunning campaign in seconds; a clock only ever moves forward,
whatever order its announcements arrive in. A payment whose clock is not
known here yet is not due (never collected at the real time)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bxb.catalog.v1 import events_pb2
from services.common import clock_times
from services.common.timestamps import from_proto, utcnow
from services.payments.models import TestClock

TEST_CLOCK_ADVANCED = "bxb.catalog.v1.test_clock_advanced"


async def now(session: AsyncSession, org: str, clock_id: str) -> datetime | None:
    """The time of a customer on `clock_id` (the real time without one); None while the clock is unknown here."""
    if not clock_id:
        return utcnow()
    query = select(TestClock.frozen_time).where(TestClock.organization_id == org, TestClock.id == clock_id)
    return (await session.execute(query)).scalar_one_or_none()


class Clocks:
    """Keeps the clocks' times; `moved` is called after each move (the
    collector's wake, to look for what fell due)."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], moved: Callable[[], None]):
        self.sessions = sessions
        self.moved = moved

    async def advanced(self, payload: bytes) -> None:
        clock = events_pb2.TestClockAdvanced.FromString(payload)
        frozen = from_proto(clock.test_clock.frozen_time)
        async with self.sessions() as session, session.begin():
            await clock_times.advance(session, TestClock, clock.organization_id, clock.test_clock.id, frozen)
        self.moved()
