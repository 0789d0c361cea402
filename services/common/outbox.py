"""Transactional outbox: events are stored with the change that caused them.

A service writes its event row in the same transaction as its data, so an
event is published if and only if the change committed. The relay publishes
pending rows in order (JetStream deduplicates on the event id if a publish is
retried) and marks them published.

No row wedges the outbox: one NATS will never take (larger than
MAX_EVENT_BYTES, or refused as too large or malformed) is handed to the
service's parker (parking.py: listed, and published again on retry) and
marked done, so the rows behind it and other organizations' go on. A publish
that fails for any other reason (NATS away) stops the flush: the rows from
there on stay pending, in order, and the relay retries. Replicas of a service
each run a relay; a transaction-level advisory lock lets one flush at a time,
so the order holds across them too.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from typing import Protocol

from nats.errors import MaxPayloadError
from nats.js.errors import BadRequestError
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

from services.common import metrics
from services.common.bus import Bus, Parked, Parker
from services.common.db import TableRow

log = logging.getLogger("bxb.outbox")

# An event's largest payload, far below the 8 MB NATS takes (deploy/embedded.py)
# and at NATS's 1 MB default: bxb's events are bounded well under it by what
# requests may hold; a larger one is parked, not published.
MAX_EVENT_BYTES = 1024 * 1024
# What NATS answers for a message it will never take, however often it is sent.
REFUSED = (MaxPayloadError, BadRequestError)
OUTBOX = "outbox"  # the durable name parked outbox rows are filed under


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


class Event(Protocol):
    """A domain event's message."""

    event_id: str
    organization_id: str

    def SerializeToString(self, *, deterministic: bool = ...) -> bytes: ...


async def enqueue(session: AsyncSession, table: Table, subject: str, *events: Event) -> None:
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


class Unpublishable(Exception):
    """A row NATS will never take."""


class OutboxRelay:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        table: Table,
        bus: Bus,
        poll_seconds: float = 1.0,
        park: Parker | None = None,
    ):
        self.sessions = sessions
        self.table = table
        self.bus = bus
        self.poll_seconds = poll_seconds
        self.park = park  # where a row NATS will never take goes; without one, it stays pending
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def wake(self) -> None:
        """Asks for a flush now, typically right after a commit."""
        self._wake.set()

    async def flush(self, limit: int = 500) -> int:
        """Publishes up to `limit` pending rows in order; the number published
        or parked. A transient failure is raised once what came before it is
        marked."""
        failure: Exception | None = None
        async with self.sessions() as session, session.begin():
            # One relay at a time per outbox, across replicas: another's
            # batch is published before the rows behind it are taken.
            await session.execute(select(func.pg_advisory_xact_lock(func.hashtextextended(self.table.name, 0))))
            rows = (
                await session.execute(
                    select(self.table)
                    .where(self.table.c.publish_time.is_(None))
                    .order_by(self.table.c.id)
                    .limit(limit)
                    .with_for_update(skip_locked=True)
                )
            ).all()
            done: list[int] = []
            for row in rows:
                try:
                    await self._publish(row)
                except (Unpublishable, *REFUSED) as refused:
                    if self.park is None or not await self._parked(self.park, row, refused):
                        failure = refused
                        break
                except Exception as error:  # NATS away: this row and the ones behind it wait
                    failure = error
                    break
                done.append(row.id)
            if done:
                await session.execute(
                    update(self.table).where(self.table.c.id.in_(done)).values(publish_time=func.now())
                )
        if failure is not None:
            raise failure
        return len(done)

    async def _publish(self, row: TableRow) -> None:
        if len(row.payload) > MAX_EVENT_BYTES:
            raise Unpublishable(f"{len(row.payload)} bytes, more than an event may hold ({MAX_EVENT_BYTES})")
        await self.bus.publish(row.subject, row.payload, row.event_id, row.organization_id)

    async def _parked(self, park: Parker, row: TableRow, refused: Exception) -> bool:
        """Whether the row could be parked (then it counts as done)."""
        error = f"{type(refused).__name__}: {refused}"
        parked = Parked("", OUTBOX, row.id, row.subject, row.payload, row.organization_id, 1, error)
        try:
            await park(parked)
        except Exception:
            log.exception("parking outbox row %s failed; it stays pending", row.id)
            return False
        log.error("parked outbox row %s (%s): %s", row.id, row.subject, error)
        return True

    async def republish(self, subject: str, payload: bytes) -> None:
        """Publishes a parked row again (ParkedMessageService's retry); its
        digest is its message id, so a repeated retry is one message."""
        if len(payload) > MAX_EVENT_BYTES:
            raise Unpublishable(f"{len(payload)} bytes, more than an event may hold ({MAX_EVENT_BYTES})")
        await self.bus.publish(subject, payload, hashlib.sha256(payload).hexdigest())

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

    async def measure_backlog(self) -> None:
        """Sets the outbox backlog gauge to the rows not yet published (a
        metrics probe, run in the background with a deadline)."""
        async with self.sessions() as session:
            pending = await session.scalar(
                select(func.count()).select_from(self.table).where(self.table.c.publish_time.is_(None))
            )
        metrics.OUTBOX_BACKLOG.labels(self.bus.name).set(pending or 0)

    def probe(self) -> metrics.Probe:
        return ("outbox", self.measure_backlog)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="outbox-relay")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
