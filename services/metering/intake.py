"""The asynchronous intake: events queued on JetStream, stored by a durable consumer.

SubmitEvents publishes each call's valid events as one EventsAccepted message
and answers once JetStream has acknowledged it: the events are durable, not
yet in ClickHouse. Every metering process consumes the one durable consumer,
so they share the work. A message is acknowledged only after its events are
stored; one redelivered after a crash between the write and the ack stores
nothing twice, because the store skips every transaction_id it has seen.

Usage stays exact: `settled()` waits until everything queued before the call
is stored (the consumer's ack floor has reached the stream's last sequence),
and every usage query calls it first.
"""

from __future__ import annotations

import asyncio
from datetime import datetime

import grpc

from bxb.metering.v1 import events_pb2
from bxb.metering.v1 import usage_events_pb2 as pb
from services.common import bus
from services.common.errors import DomainError
from services.common.ids import new_id
from services.common.timestamps import from_proto, to_proto
from services.metering.messages import event_of
from services.metering.references import References
from services.metering.rejections import Rejections
from services.metering.store import Event, EventStore

SUBJECT = "bxb.metering.v1.events_accepted"
# A work queue: a message is gone once stored; its one subject keeps the
# consumer's ack floor comparable with the stream's last sequence.
STREAM = bus.Stream("BXB_METERING_EVENTS", (SUBJECT,), work_queue=True)
DURABLE = "metering-store"
ACK_WAIT = 5.0


class IngestionBehind(DomainError):
    code = grpc.StatusCode.UNAVAILABLE
    default_reason = "INGESTION_BEHIND"


class Intake:
    def __init__(
        self,
        store: EventStore,
        rejections: Rejections,
        references: References | None = None,
        settle_timeout: float = 10.0,
        poll: float = 0.002,
        linger: float = 0.0,
    ):
        self.store = store
        self.rejections = rejections
        # None: no catalog to ask, so no event is flagged.
        self.references = references
        self.settle_timeout = settle_timeout
        self.poll = poll
        # Seconds a small fetch waits for more events to join its write.
        self.linger = linger
        self.bus: bus.Bus | None = None

    async def start(self, connected: bus.Bus) -> None:
        self.bus = connected
        # Every fetched message at once: the store writes them together (group
        # commit). What a dead process held is stored by another within
        # ACK_WAIT, inside the time a usage query waits for the queue.
        await connected.consume(
            STREAM,
            DURABLE,
            SUBJECT,
            self.store_message,
            batch=64,
            in_order=False,
            ack_wait=ACK_WAIT,
            linger=self.linger,
        )

    async def queue(self, org: str, events: list[pb.UsageEvent], now: datetime) -> None:
        """Returns once JetStream holds the events (validated, each with its
        transaction_id and timestamp set)."""
        assert self.bus is not None, "start the intake first"
        message = events_pb2.EventsAccepted(
            event_id=new_id("evb"), organization_id=org, occur_time=to_proto(now), events=events
        )
        await self.bus.publish(SUBJECT, message.SerializeToString(), message.event_id, org)

    async def admit(self, org: str, events: list[Event], now: datetime) -> list[bool]:
        """Stores events (the queue's consumer and backfill alike), then flags
        the new ones naming an unknown metric or customer; returns, per event,
        whether it was new."""
        fresh = await self.store.ingest(org, events, now)
        if self.references is not None:
            new = [e for e, is_new in zip(events, fresh, strict=True) if is_new]
            await self.rejections.record(org, await self.references.unknown(org, new), now)
        return fresh

    async def store_message(self, subject: str, payload: bytes) -> None:
        message = events_pb2.EventsAccepted.FromString(payload)
        events = [event_of(e) for e in message.events]
        await self.admit(message.organization_id, events, from_proto(message.occur_time))

    async def settled(self) -> None:
        """Waits until every event queued before the call is stored."""
        assert self.bus is not None, "start the intake first"
        js = self.bus.js
        # Both read at once (one round trip): each answer is at least as new as
        # the call, so a floor at or past the target still covers every event
        # queued before it.
        stream, consumer = await asyncio.gather(js.stream_info(STREAM.name), js.consumer_info(STREAM.name, DURABLE))
        target = stream.state.last_seq
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settle_timeout
        while consumer.ack_floor.stream_seq < target:
            if loop.time() >= deadline:
                raise IngestionBehind(
                    f"events accepted before this request are still being stored; retry in a moment "
                    f"(waited {self.settle_timeout:g} s)"
                )
            await asyncio.sleep(self.poll)
            consumer = await js.consumer_info(STREAM.name, DURABLE)
