"""The transactional outbox the catalog publishes through: rows written in a
transaction reach JetStream once, in order, and are marked published."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import nats
import pytest
from nats.js.api import ConsumerConfig
from sqlalchemy import MetaData, Table, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from bxb.catalog.v1 import events_pb2
from services.common import bus, db, outbox
from services.common.ids import new_id
from tests.conftest import Infra, Parking, eventually, unique


@dataclass
class Box:
    engine: AsyncEngine
    sessions: async_sessionmaker
    table: Table
    bus: bus.Bus
    stream: bus.Stream
    subject: str

    async def enqueue(self, org: str = "org_box", subject: str = "") -> events_pb2.SubscriptionCreated:
        event = events_pb2.SubscriptionCreated(event_id=new_id("evt"), organization_id=org)
        async with self.sessions() as session, session.begin():
            await outbox.enqueue(session, self.table, subject or self.subject, event)
        return event

    async def unpublished(self) -> list[str]:
        async with self.sessions() as session:
            query = select(self.table.c.event_id).where(self.table.c.publish_time.is_(None)).order_by(self.table.c.id)
            return list((await session.execute(query)).scalars())

    async def published(self) -> list[nats.aio.msg.Msg]:
        """Every message in the stream, oldest first."""
        info = await self.bus.js.stream_info(self.stream.name)
        if info.state.messages == 0:
            return []
        sub = await self.bus.js.pull_subscribe(
            self.stream.subjects[0], stream=self.stream.name, config=ConsumerConfig(inactive_threshold=5.0)
        )
        try:
            messages = await sub.fetch(info.state.messages, timeout=2)
        finally:
            await sub.unsubscribe()
        return messages


@pytest.fixture
async def box(infra: Infra):
    url = await infra.database(unique("outbox"))
    engine = db.create_engine(url, pool_size=2)
    metadata = MetaData()
    table = outbox.outbox_table(metadata)
    async with engine.begin() as connection:
        await connection.run_sync(metadata.create_all)
    connected = await bus.Bus.connect(infra.nats.url, "outbox-test")
    suffix = unique("box")
    stream = bus.Stream(suffix.upper(), (f"test.{suffix}.>",))
    await connected.ensure_stream(stream)
    yield Box(engine, db.sessions(engine), table, connected, stream, f"test.{suffix}.v1.happened")
    await connected.js.delete_stream(stream.name)
    await connected.close()
    await engine.dispose()


async def test_flush_publishes_pending_rows_in_order_and_marks_them(box: Box):
    relay = outbox.OutboxRelay(box.sessions, box.table, box.bus)
    events = [await box.enqueue(org=f"org_{i}") for i in range(3)]
    assert await box.unpublished() == [e.event_id for e in events]
    assert await relay.flush(limit=2) == 2
    assert await box.unpublished() == [events[2].event_id]
    assert await relay.flush() == 1
    assert await relay.flush() == 0
    assert await box.unpublished() == []
    messages = await box.published()
    assert [events_pb2.SubscriptionCreated.FromString(m.data) for m in messages] == events
    assert [m.subject for m in messages] == [box.subject] * 3
    assert [(m.headers[bus.MSG_ID], m.headers[bus.ORG_HEADER]) for m in messages] == [
        (e.event_id, e.organization_id) for e in events
    ]
    async with box.sessions() as session:
        times = (await session.execute(select(box.table.c.create_time, box.table.c.publish_time))).all()
    assert all(published >= created for created, published in times)


async def test_a_row_published_again_is_deduplicated_by_jetstream(box: Box):
    relay = outbox.OutboxRelay(box.sessions, box.table, box.bus)
    event = await box.enqueue()
    assert await relay.flush() == 1
    async with box.sessions() as session, session.begin():  # as if the relay died before its commit
        await session.execute(update(box.table).values(publish_time=None))
    assert await relay.flush() == 1
    assert [m.headers[bus.MSG_ID] for m in await box.published()] == [event.event_id]


async def test_a_failed_publish_leaves_the_rows_pending_and_the_relay_retries(box: Box, infra: Infra, caplog):
    closed = await bus.Bus.connect(infra.nats.url, "outbox-closed")
    await closed.close()
    relay = outbox.OutboxRelay(box.sessions, box.table, closed, poll_seconds=0.05)
    event = await box.enqueue()
    with caplog.at_level(logging.ERROR, logger="bxb.outbox"):
        relay.start()
        try:

            async def failed():
                assert any(r.getMessage() == "outbox flush failed; retrying" for r in caplog.records)

            await eventually(failed, timeout=5)
            assert await box.unpublished() == [event.event_id]
            relay.bus = box.bus  # NATS is back

            async def published():
                assert await box.unpublished() == []

            await eventually(published, timeout=5)
        finally:
            await relay.stop()
    assert [m.headers[bus.MSG_ID] for m in await box.published()] == [event.event_id]


async def test_wake_flushes_at_once_without_waiting_for_the_poll(box: Box):
    relay = outbox.OutboxRelay(box.sessions, box.table, box.bus, poll_seconds=60)
    relay.start()
    try:
        await asyncio.sleep(0.1)  # the first flush found nothing; the relay now waits a minute
        event = await box.enqueue()
        relay.wake()

        async def published():
            assert await box.unpublished() == []

        await eventually(published, timeout=5)
    finally:
        await relay.stop()
    assert [m.headers[bus.MSG_ID] for m in await box.published()] == [event.event_id]


async def test_the_relay_polls_for_rows_nobody_announced(box: Box):
    relay = outbox.OutboxRelay(box.sessions, box.table, box.bus, poll_seconds=0.05)
    relay.start()
    try:
        await asyncio.sleep(0.1)
        await box.enqueue()
        await box.enqueue()

        async def published():
            assert await box.unpublished() == []

        await eventually(published, timeout=5)
    finally:
        await relay.stop()
    assert len(await box.published()) == 2


async def test_a_stopped_relay_publishes_nothing_more(box: Box):
    relay = outbox.OutboxRelay(box.sessions, box.table, box.bus, poll_seconds=0.01)
    relay.start()
    await relay.stop()
    await relay.stop()  # stopping twice is harmless
    event = await box.enqueue()
    relay.wake()
    await asyncio.sleep(0.2)
    assert await box.unpublished() == [event.event_id]
    assert await box.published() == []


async def test_a_row_nats_will_never_take_is_parked_and_the_rows_behind_it_go_on(box: Box, monkeypatch):
    monkeypatch.setattr(outbox, "MAX_EVENT_BYTES", 200)
    parking = Parking()
    relay = outbox.OutboxRelay(box.sessions, box.table, box.bus, park=parking)
    huge = events_pb2.SubscriptionCreated(event_id=new_id("evt"), organization_id="org_big")
    huge.subscription.customer_id = "x" * 500
    async with box.sessions() as session, session.begin():
        await outbox.enqueue(session, box.table, box.subject, huge)
    after = await box.enqueue(org="org_other")
    assert await relay.flush() == 2
    assert await box.unpublished() == []
    assert [m.headers[bus.MSG_ID] for m in await box.published()] == [after.event_id]
    [parked] = parking.parked
    assert (parked.durable, parked.subject, parked.organization_id) == (outbox.OUTBOX, box.subject, "org_big")
    assert parked.payload == huge.SerializeToString() and parked.error.startswith("Unpublishable: ")
    with pytest.raises(outbox.Unpublishable):  # a retry cannot publish it either
        await relay.republish(parked.subject, parked.payload)


async def test_a_row_jetstream_refuses_is_parked_too(box: Box, infra: Infra):
    small = bus.Stream(unique("small").upper(), (f"test.{unique('small')}.>",))
    await box.bus.js.add_stream(name=small.name, subjects=list(small.subjects), max_msg_size=100)
    try:
        parking = Parking()
        relay = outbox.OutboxRelay(box.sessions, box.table, box.bus, park=parking)
        subject = small.subjects[0].replace(">", "v1.big")
        refused = events_pb2.SubscriptionCreated(event_id=new_id("evt"), organization_id="org_x")
        refused.subscription.customer_id = "x" * 200  # above the stream's 100 bytes
        async with box.sessions() as session, session.begin():
            await outbox.enqueue(session, box.table, subject, refused)
        assert await relay.flush() == 1
        assert [p.error.split(":")[0] for p in parking.parked] == ["BadRequestError"]
    finally:
        await box.bus.js.delete_stream(small.name)


async def test_without_a_place_to_park_it_a_refused_row_waits_and_the_flush_says_why(box: Box, monkeypatch):
    monkeypatch.setattr(outbox, "MAX_EVENT_BYTES", 10)
    event = await box.enqueue()
    with pytest.raises(outbox.Unpublishable):
        await outbox.OutboxRelay(box.sessions, box.table, box.bus).flush()
    broken = Parking()
    broken.broken = True
    with pytest.raises(outbox.Unpublishable):
        await outbox.OutboxRelay(box.sessions, box.table, box.bus, park=broken).flush()
    assert await box.unpublished() == [event.event_id]


async def test_a_parked_row_published_again_is_one_message_however_often(box: Box):
    relay = outbox.OutboxRelay(box.sessions, box.table, box.bus)
    event = events_pb2.SubscriptionCreated(event_id=new_id("evt"), organization_id="org_r")
    for _ in range(2):
        await relay.republish(box.subject, event.SerializeToString())
    [message] = await box.published()
    assert events_pb2.SubscriptionCreated.FromString(message.data) == event


class SlowBus:
    """A replica's bus that takes its time over each publish."""

    def __init__(self, inner: bus.Bus, delay: float):
        self.inner, self.delay = inner, delay

    async def publish(self, subject: str, payload: bytes, msg_id: str, organization_id: str = "") -> None:
        await asyncio.sleep(self.delay)
        await self.inner.publish(subject, payload, msg_id, organization_id)


async def test_two_replicas_relaying_one_outbox_publish_in_order(box: Box):
    # The first replica holds its batch while it publishes slowly; the second,
    # woken meanwhile, waits for it rather than publishing the rows behind first.
    slow = outbox.OutboxRelay(box.sessions, box.table, SlowBus(box.bus, 0.2))
    fast = outbox.OutboxRelay(box.sessions, box.table, box.bus)
    events = [await box.enqueue(org=f"org_{i}") for i in range(4)]
    first = asyncio.create_task(slow.flush(limit=2))
    await asyncio.sleep(0.1)
    assert await fast.flush(limit=2) == 2
    assert await first == 2
    published = [events_pb2.SubscriptionCreated.FromString(m.data).event_id for m in await box.published()]
    assert published == [e.event_id for e in events]
