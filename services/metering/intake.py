"""The asynchronous intake: events queued on JetStream, stored by a durable consumer.

SubmitEvents publishes each call's valid events as EventsAccepted messages
(several when they would exceed MAX_MESSAGE_BYTES) on its organization's
subject, and answers once JetStream has acknowledged them: the events are
durable, not yet in ClickHouse. Every metering process consumes the one
durable consumer, so they share the work. A message is acknowledged only
after its events are stored; one redelivered after a crash between the write
and the ack stores nothing twice, because the store skips every
transaction_id it has seen.

No message holds the queue up. An event ClickHouse refuses even alone is
left out of the write and listed with the rejected events (UNSTORABLE); a
message that does not decode is listed there too (UNREADABLE_MESSAGE), and
acknowledged. A write that fails because ClickHouse is failing is retried,
after a delay that doubles up to RETRY_CAP seconds, while the consumer goes
on with the other messages.

Usage stays exact: `settled(org)` waits until every event of the
organization queued before the call is stored (the backlog, backlog.py), and
every usage query calls it first. Another organization's backlog, or a
message being retried, never delays it.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
from datetime import datetime

from bxb.metering.v1 import events_pb2
from bxb.metering.v1 import usage_events_pb2 as pb
from services.common import bus, metrics
from services.common.ids import new_id
from services.common.timestamps import from_proto, to_proto, utcnow
from services.metering.backlog import Backlog, IngestionBacklogged
from services.metering.messages import event_message, event_of
from services.metering.references import References
from services.metering.rejections import Rejections
from services.metering.store import Event, EventStore, Outcome, Unstorable

SUBJECT = "bxb.metering.v1.events_accepted"
# A work queue: a message is gone once stored. Each organization's messages
# have a subject of their own (SUBJECT.<organization>), so a usage query waits
# only for its own organization's; the bare subject holds what an older
# version queued.
STREAM = bus.Stream("BXB_METERING_EVENTS", (SUBJECT, f"{SUBJECT}.>"), work_queue=True)
DURABLE = "metering-store"
# Seconds before a dead process's messages go to another (a live one says it
# is still storing every third of it): what a usage query may wait after a crash.
ACK_WAIT = 2.0
RETRY_CAP = 10.0  # seconds: a retried write comes back soon once ClickHouse does
# Far below NATS's message limit (1 MB by default, set to 8 MB by
# deploy/embedded.py): a call's events go out in as many messages as needed.
MAX_MESSAGE_BYTES = 256 * 1024
MAX_BODY = 16_384  # bytes of an unreadable message kept with its rejection
# Seconds an organization's oldest queued events may have waited before more
# of its events are refused: what bounds how long its usage queries wait.
MAX_LAG = 2.0
_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,128}")


def subject_of(org: str) -> str:
    """The subject an organization's events are queued on: its id when that
    is a valid subject token (every id bxb makes), else a digest of it."""
    token = org if _TOKEN.fullmatch(org) else "x-" + hashlib.sha256(org.encode()).hexdigest()[:40]
    return f"{SUBJECT}.{token}"


def messages(org: str, events: list[pb.UsageEvent], now: datetime) -> list[events_pb2.EventsAccepted]:
    """The events as EventsAccepted messages of at most MAX_MESSAGE_BYTES each."""
    occur = to_proto(now)
    return [
        events_pb2.EventsAccepted(event_id=new_id("evb"), organization_id=org, occur_time=occur, events=group)
        for group in bus.by_size(events, MAX_MESSAGE_BYTES)
    ]


def unstorable(events: list[Event], outcomes: list[Outcome]) -> list[pb.RejectedEvent]:
    """The events ClickHouse refused, as rejections (not stored)."""
    return [
        pb.RejectedEvent(
            event=event_message(event),
            error=pb.EventError(reason="UNSTORABLE", message=outcome.reason),
        )
        for event, outcome in zip(events, outcomes, strict=True)
        if isinstance(outcome, Unstorable)
    ]


class Intake:
    def __init__(
        self,
        store: EventStore,
        rejections: Rejections,
        queue: bus.Bus,
        references: References | None = None,
        settle_timeout: float = 10.0,
        linger: float = 0.0,
    ):
        self.store = store
        self.rejections = rejections
        self.bus = queue  # opened by the service before `start`
        self.backlog = Backlog(queue.js, STREAM.name, settle_timeout)
        # None: no catalog to ask, so no event is flagged.
        self.references = references
        # Seconds a small fetch waits for more events to join its write.
        self.linger = linger

    async def start(self) -> None:
        """Starts storing what the queue holds."""
        # Every fetched message at once: the store writes them together (group
        # commit). What a dead process held is stored by another within
        # ACK_WAIT, inside the time a usage query waits for the queue.
        await self.bus.consume(
            STREAM,
            DURABLE,
            None,
            self.store_message,
            batch=64,
            in_order=False,
            ack_wait=ACK_WAIT,
            linger=self.linger,
            park=self.park,
            retry_cap=RETRY_CAP,
        )

    async def queue(self, org: str, events: list[pb.UsageEvent], now: datetime) -> None:
        """Returns once JetStream holds the events (validated, each with its
        transaction_id and timestamp set); INGESTION_BACKLOG (retry) while
        the organization's oldest queued events have waited over MAX_LAG."""
        subject = subject_of(org)
        if (lag := await self.backlog.lag(subject)) > MAX_LAG:
            raise IngestionBacklogged(
                f"events sent before are still being stored ({lag:.1f} s behind); retry in a moment"
            )
        await asyncio.gather(
            *(
                self.bus.publish(subject, message.SerializeToString(), message.event_id, org)
                for message in messages(org, events, now)
            )
        )
        metrics.EVENTS_QUEUED.inc(len(events))

    async def admit(self, org: str, events: list[Event], now: datetime) -> list[Outcome]:
        """Stores events (the queue's consumer and backfill alike), then lists
        those ClickHouse refused and the new ones naming an unknown metric or
        customer with the rejected events; returns each event's outcome."""
        outcomes = await self.store.ingest(org, events, now)
        rejected = unstorable(events, outcomes)
        if self.references is not None:
            new = [e for e, outcome in zip(events, outcomes, strict=True) if outcome is True]
            rejected += await self.references.unknown(org, new)
        await self.rejections.record(org, rejected, now)
        return outcomes

    async def store_message(self, subject: str, payload: bytes) -> None:
        message = events_pb2.EventsAccepted.FromString(payload)  # one that does not decode is parked
        events = [event_of(e) for e in message.events]
        await self.admit(message.organization_id, events, from_proto(message.occur_time))
        metrics.EVENTS_STORED.inc(len(events))

    async def park(self, parked: bus.Parked) -> None:
        """Lists a message that could not be read with its organization's
        rejected events (an organization of none when it names none)."""
        error = pb.EventError(
            reason="UNREADABLE_MESSAGE", message=f"a queued message could not be read: {parked.error}"
        )
        body = base64.b64encode(parked.payload[:MAX_BODY]).decode()
        rejection = pb.RejectedEvent(event=pb.UsageEvent(), error=error, body=body)
        await self.rejections.record(parked.organization_id, [rejection], utcnow())

    async def settled(self, org: str) -> None:
        """Waits until every event of `org` queued before the call is stored
        (INGESTION_BEHIND after the settle timeout)."""
        await self.backlog.settled(subject_of(org))
