"""Announcements as tests read them off the payments database, the endpoints
a test subscribes there, and domain events read off NATS and published again."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from nats.js.api import ConsumerConfig
from sqlalchemy import select

from services.common import bus, db
from services.common.ids import new_id
from services.payments.models import Announcement, Delivery, WebhookEndpoint
from tests.conftest import Infra, eventually, unique


@dataclass
class Announced:
    """One stored announcement, its body parsed."""

    id: str
    type: str
    customer_id: str
    source_key: str
    body: dict[str, Any]

    @property
    def data(self) -> dict[str, Any]:
        return self.body["data"]


class Announcements:
    def __init__(self, infra: Infra):
        self.engine = db.create_engine(infra.postgres.url("payments"), pool_size=2)
        self.sessions = db.sessions(self.engine)
        self.bus = bus.Bus(infra.nats.url, unique("announcement-tests"))

    async def all(self, org: str, type: str = "") -> list[Announced]:
        query = select(Announcement).where(Announcement.organization_id == org)
        if type:
            query = query.where(Announcement.type == type)
        async with self.sessions() as session:
            rows = (await session.execute(query.order_by(Announcement.sequence))).scalars().all()
        return [Announced(r.id, r.type, r.customer_id, r.source_key, json.loads(r.payload)) for r in rows]

    async def one(self, org: str, type: str, timeout: float = 15.0) -> Announced:
        """The organization's only announcement of `type`, once stored."""

        async def stored() -> Announced:
            found = await self.all(org, type)
            assert len(found) == 1, f"{len(found)} announcements of {type}"
            return found[0]

        return await eventually(stored, timeout=timeout)

    @staticmethod
    async def eventually(check, timeout: float = 15.0):
        return await eventually(check, timeout=timeout)

    async def types(self, org: str) -> list[str]:
        return [a.type for a in await self.all(org)]

    async def endpoint(self, org: str, *event_types: str, enabled: bool = True) -> str:
        """An endpoint of the organization subscribed to `event_types` (all when none)."""
        endpoint_id = new_id("we")
        async with self.sessions() as session, session.begin():
            session.add(
                WebhookEndpoint(
                    id=endpoint_id,
                    organization_id=org,
                    url="https://hooks.example.test/bxb",
                    event_types=list(event_types),
                    enabled=enabled,
                    secret_sealed="x",
                )
            )
        return endpoint_id

    async def deliveries(self, announcement_id: str) -> list[tuple[str, str, str]]:
        """The announcement's deliveries: (endpoint, customer, status)."""
        query = select(Delivery).where(Delivery.announcement_id == announcement_id).order_by(Delivery.id)
        async with self.sessions() as session:
            rows = (await session.execute(query)).scalars().all()
        return [(r.endpoint_id or "", r.customer_id, r.status) for r in rows]

    async def domain_event(
        self, stream: bus.Stream, subject: str, event_id: str = "", where: Callable[[bytes], bool] | None = None
    ) -> bytes:
        """The payload of a domain event on `subject`, read off its stream: the
        one with id `event_id`, or the first `where` accepts."""
        return (await self._domain_event(stream, subject, event_id, where))[1]

    async def _domain_event(
        self, stream: bus.Stream, subject: str, event_id: str, where: Callable[[bytes], bool] | None
    ) -> tuple[str, bytes]:
        """The domain event's id (its message id) and payload."""
        sub = await self.bus.js.pull_subscribe(
            subject, stream=stream.name, config=ConsumerConfig(inactive_threshold=5.0)
        )
        try:
            while True:
                for message in await sub.fetch(100, timeout=5):
                    message_id = (message.headers or {}).get(bus.MSG_ID, "")
                    if (where is not None and where(message.data)) or (event_id and message_id == event_id):
                        return message_id, message.data
        finally:
            await sub.unsubscribe()

    async def republish(self, stream: bus.Stream, durable: str, subject: str, payload: bytes) -> None:
        """Publishes `payload` again under a new message id (JetStream does not
        drop it as a duplicate) and waits until `durable` has handled it."""
        ack = await self.bus.js.publish(subject, payload, headers={bus.MSG_ID: unique("again")})

        async def handled() -> None:
            info = await self.bus.js.consumer_info(stream.name, durable)
            assert info.ack_floor.stream_seq >= ack.seq, "not handled yet"

        await eventually(handled, timeout=15)

    async def redelivered_once(
        self,
        org: str,
        event_id: str,
        stream: bus.Stream,
        durable: str,
        subject: str,
        where: Callable[[bytes], bool] | None = None,
    ) -> None:
        """The domain event `event_id` (or the first `where` accepts), published
        again, announces nothing more: no announcement keyed by it and none
        repeating what it announced. (Other events of the organization may
        still be announced meanwhile: a declined charge's dunning, say.)"""
        source, payload = await self._domain_event(stream, subject, event_id, where)
        before = await self.all(org)
        await self.republish(stream, durable, subject, payload)
        made = {_fact(a) for a in before if a.source_key.startswith(f"{source}:")}
        new = [a for a in await self.all(org) if a not in before]
        assert not [a for a in new if a.source_key.startswith(f"{source}:") or _fact(a) in made], new


def _fact(announced: Announced) -> tuple[str, str]:
    """What an announcement says: its type and data."""
    return announced.type, json.dumps(announced.data, sort_keys=True)


def event_id(announced: Announced) -> str:
    """The id of the domain event an announcement keyed "<event id>:<type>" was made from."""
    return announced.source_key.split(":")[0]


@asynccontextmanager
async def opened(infra: Infra) -> AsyncIterator[Announcements]:
    handle = Announcements(infra)
    await handle.bus.open()
    try:
        yield handle
    finally:
        await handle.bus.close()
        await handle.engine.dispose()
