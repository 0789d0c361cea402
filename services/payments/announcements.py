"""The NATS handler that turns domain events into announcements: each fact
(public_events.py) stored with its deliveries in one transaction
(announcing.py), then the sender woken.

Fed by durable consumers of the catalog's, invoicing's, payments' own and
metering's streams (server.py), one message at a time in order, so one
customer's announcements keep the order of its facts. A failure redelivers
the message (then parks it); a redelivered message announces nothing twice.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.common import bus
from services.common.timestamps import utcnow
from services.payments.announcing import Announcer
from services.payments.public_events import FACTS

# Each stream's consumer: its durable name and the subjects it takes.
CONSUMERS = (
    (bus.CATALOG, "payments-announcements-catalog", "bxb.catalog.>"),
    (bus.INVOICING, "payments-announcements-invoicing", "bxb.invoicing.>"),
    (bus.PAYMENTS, "payments-announcements-payments", "bxb.payments.>"),
    (bus.METERING, "payments-announcements-metering", None),
)


class Announcements:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], announcer: Announcer, announced: Callable[[], None]):
        self.sessions = sessions
        self.announcer = announcer
        self.announced = announced  # wakes the sender when deliveries were queued

    async def handle(self, subject: str, payload: bytes) -> None:
        facts = FACTS.get(subject)
        if facts is None:
            return  # a fact no public event tells, or one a newer producer added
        queued: list[str] = []
        async with self.sessions() as session, session.begin():
            for draft in await facts(session, payload):
                queued += await self.announcer.announce(session, draft, utcnow())
        if queued:
            self.announced()
