"""Test clocks' times as a service other than the catalog keeps them (a table
of id, organization_id and frozen_time, projected from
bxb.catalog.v1.test_clock_advanced): a clock only ever moves forward,
whatever order its announcements arrive in."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession


async def advance(session: AsyncSession, table: Any, org: str, clock_id: str, frozen_time: datetime) -> None:
    """Records the clock's time in `table` (the service's TestClock model), unless it knows a later one."""
    statement = insert(table).values(id=clock_id, organization_id=org, frozen_time=frozen_time)
    statement = statement.on_conflict_do_update(
        index_elements=[table.id],
        set_={"frozen_time": func.greatest(table.frozen_time, statement.excluded.frozen_time)},
        where=table.organization_id == org,
    )
    await session.execute(statement)
