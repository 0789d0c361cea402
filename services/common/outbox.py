"""Transactional outbox: events are stored with the change that caused them.

A service writes its event row in the same transaction as its data, so an
event is published if and only if the change committed. The relay publishes
pending rows in order (JetStream deduplicates on the event id if a publish is
retried) and marks them published.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Identity,
    LargeBinary,
    MetaData,
    String,
    Table,
    func,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.common.bus import Bus

log = logging.getLogger("bxb.outbox")


def outbox_table(metadata: MetaData) -> Table:
    return Table(
        "outbox",
        metadata,
        Column("id", BigInteger, Identity(), primary_key=True),
        Column("event_id", String(64), nullable=False, unique=True),
        Column("organization_id", String(64), nullable=False),
        Column("subject", String(200), nullable=False),
        Column("payload", LargeBinary, nullable=False),
        Column("create_time", DateTime(timezone=True), nullable=False, server_default=func.now()),
        Column("publish_time", DateTime(timezone=True), nullable=True, index=True),
    )


async def enqueue(session: AsyncSession, table: Table, subject: str, *events) -> None:
    """Adds `events` (messages with event_id and organization_id) to the
    transaction, in order, with one statement."""
    await session.execute(
        table.insert().values(
            [
                {
                    "event_id": event.event_id,
                    "organization_id": event.organization_id,
                    "subject": subject,
                    "payload": event.SerializeToString(),
                }
                for event in events
            ]
        )
    )


class OutboxRelay:
    def __init__(self, sessions: async_sessionmaker, table: Table, bus: Bus | None = None, poll_seconds: float = 1.0):
        self.sessions = sessions
        self.table = table
        self.bus = bus
        self.poll_seconds = poll_seconds
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None

    def wake(self) -> None:
        """Asks for a flush now, typically right after a commit."""
        self._wake.set()

    async def flush(self, limit: int = 500) -> int:
        async with self.sessions() as session, session.begin():
            rows = (
                await session.execute(
                    select(self.table)
                    .where(self.table.c.publish_time.is_(None))
                    .order_by(self.table.c.id)
                    .limit(limit)
                    .with_for_update(skip_locked=True)
                )
            ).all()
            for row in rows:
                assert self.bus is not None, "connect the bus before flushing"
                await self.bus.publish(row.subject, row.payload, row.event_id, row.organization_id)
            if rows:
                ids = [row.id for row in rows]
                await session.execute(
                    update(self.table).where(self.table.c.id.in_(ids)).values(publish_time=func.now())
                )
            return len(rows)

    async def _run(self) -> None:
        while True:
            try:
                while await self.flush() > 0:
                    pass
            except Exception:
                log.exception("outbox flush failed; retrying")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_seconds)
            self._wake.clear()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="outbox-relay")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
