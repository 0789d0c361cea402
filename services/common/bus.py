"""NATS JetStream: publishing domain events and consuming them durably.

Subjects are `bxb.<service>.v1.<event>`; each producing service owns one
stream holding its subjects. Consumers are durable pull consumers, so a
service that was down resumes where it stopped. Handlers must be idempotent:
JetStream redelivers a message whose handler failed or whose ack was lost.

No message holds up the others: a failed one is redelivered after a delay
that doubles with each attempt (1 s up to RETRY_CAP), while the consumer goes
on with the messages behind it. A message that can never be handled (its
payload does not decode, or its handler raises `Poison`), or that still fails
after a consumer's `max_attempts`, is handed to the consumer's parker (a
dead-letter place that an API lists) and acknowledged; when parking fails
too, it stays in the stream and is retried.

A consumer outlives NATS restarts: the client reconnects on its own, and a
fetch (or ack) that fails meanwhile is logged and tried again, never ending
the consumer.

NATS may be a cluster (BXB_NATS_URL listing its nodes; nats_connection.py):
streams keep BXB_NATS_REPLICAS copies, and a publish whose acknowledgement
does not come (a node died, the stream is electing a leader) is sent again
under the same Nats-Msg-Id, which JetStream stores once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from google.protobuf.message import DecodeError, Message
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import ConnectionReconnectingError, OutboundBufferLimitError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, RetentionPolicy, StreamConfig
from nats.js.errors import NoStreamResponseError, NotFoundError, ServiceUnavailableError

from services.common import config, nats_connection, tracing

log = logging.getLogger("bxb.bus")

MSG_ID = "Nats-Msg-Id"
ORG_HEADER = "Bxb-Organization"


@dataclass(frozen=True)
class Stream:
    name: str
    subjects: tuple[str, ...]
    # A work queue drops each message once its consumer has acknowledged it.
    work_queue: bool = False


CATALOG = Stream("BXB_CATALOG", ("bxb.catalog.>",))
INVOICING = Stream("BXB_INVOICING", ("bxb.invoicing.>",))
PAYMENTS = Stream("BXB_PAYMENTS", ("bxb.payments.>",))
# Metering's facts for other services, each subject named: bxb.metering.v1.events_accepted
# belongs to metering's own work queue (BXB_METERING_EVENTS), and streams' subjects must not overlap.
METERING = Stream("BXB_METERING", ("bxb.metering.v1.events_rejected",))

Handler = Callable[[str, bytes], Awaitable[None]]
"""Receives a message's subject and payload; raising makes it redeliver."""

RETRY_BASE = 1.0  # seconds before the first redelivery of a failed message
RETRY_CAP = 300.0  # the longest wait between two deliveries
REFETCH_PAUSE = 0.5  # seconds before fetching again after a fetch failed (NATS away)
PUBLISH_TIMEOUT = 2.0  # seconds one publish waits for JetStream's acknowledgement
JETSTREAM_DEADLINE = 15.0  # seconds a publish (or a stream's, a consumer's set-up) keeps trying
JETSTREAM_PAUSE = 0.25  # seconds between two tries
# A request to JetStream failing so may succeed when sent again: no answer
# (lost with a node, or a stream leader being elected), JetStream not
# answering yet, the client reconnecting.
TRANSIENT = (
    TimeoutError,
    NoStreamResponseError,
    ServiceUnavailableError,
    ConnectionReconnectingError,
    OutboundBufferLimitError,
)


def by_size[M: Message](items: Sequence[M], limit: int) -> list[list[M]]:
    """`items` in groups whose repeated field holding them takes at most
    `limit` bytes, so that each group fits one message NATS takes (an item
    alone always fits: the callers' items are bounded far below `limit`)."""
    groups: list[list[M]] = [[]]
    size = 0
    for item in items:
        cost = item.ByteSize() + 8  # the field's tag and length
        if groups[-1] and size + cost > limit:
            groups.append([])
            size = 0
        groups[-1].append(item)
        size += cost
    return groups


class Poison(Exception):
    """Raised by a handler for a message it can never handle: parked at once."""


@dataclass(frozen=True)
class Parked:
    """A message given up on: what it was and why."""

    stream: str
    durable: str
    sequence: int  # its place in the stream
    subject: str
    payload: bytes
    organization_id: str  # from its header; empty when it had none
    attempts: int
    error: str


Parker = Callable[[Parked], Awaitable[None]]
"""Stores a message given up on where an API lists it; raising keeps it in the stream."""


def retry_delay(attempt: int, cap: float = RETRY_CAP) -> float:
    """Seconds before delivering a message again after its `attempt`-th
    failure: doubling from RETRY_BASE to `cap`, with a tenth of jitter so
    that messages failing together do not come back together."""
    delay = min(cap, RETRY_BASE * 2.0 ** min(attempt - 1, 30))
    return delay * random.uniform(0.9, 1.1)


class Bus:
    def __init__(self, url: str, name: str, replicas: int | None = None):
        """A client of the NATS at `url` (one server or several, comma-separated),
        named `name`, whose streams keep `replicas` copies (None:
        BXB_NATS_REPLICAS); it connects on `open`, on the event loop it
        serves (a NATS client belongs to that loop), so a service builds it
        with the rest and opens it at start-up."""
        self.url = url
        self.name = name
        self.replicas = config.nats_replicas() if replicas is None else replicas
        self.nc = NATS()
        self.js: JetStreamContext = self.nc.jetstream()
        self._tasks: list[asyncio.Task[None]] = []

    async def open(self) -> None:
        """Connects (to any of the servers); the client reconnects on its own
        from then on, to whichever server answers."""
        target = nats_connection.connection(self.url)
        await self.nc.connect(
            servers=target.servers,
            user=target.user,
            password=target.password,
            tls=target.tls,
            name=self.name,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,  # type: ignore[arg-type]  # nats-py annotates int; it sleeps any float
        )

    @classmethod
    async def connect(cls, url: str, name: str, replicas: int | None = None) -> Bus:
        """A bus, open."""
        opened = cls(url, name, replicas)
        await opened.open()
        return opened

    async def ensure_stream(self, stream: Stream) -> None:
        """Creates the stream, or gives an existing one the subjects and the
        number of replicas it should have now."""
        retention = RetentionPolicy.WORK_QUEUE if stream.work_queue else RetentionPolicy.LIMITS
        wanted = StreamConfig(
            name=stream.name,
            subjects=list(stream.subjects),
            duplicate_window=120.0,
            retention=retention,
            num_replicas=self.replicas,
        )
        await self._retrying(f"setting up stream {stream.name}", lambda: self._ensure(wanted))

    async def _ensure(self, wanted: StreamConfig) -> None:
        assert wanted.name is not None and wanted.subjects is not None  # ensure_stream sets them
        try:
            info = await self.js.stream_info(wanted.name)
        except NotFoundError:
            await self.js.add_stream(wanted)
            return
        current = info.config
        if current.subjects != wanted.subjects or (current.num_replicas or 1) != self.replicas:
            await self.js.update_stream(current.evolve(subjects=wanted.subjects, num_replicas=self.replicas))

    async def publish(self, subject: str, payload: bytes, msg_id: str, organization_id: str = "") -> None:
        """Returns once JetStream has stored the message (on a majority of
        its replicas). An acknowledgement that does not come is asked for
        again with the same `msg_id`, so a node dying mid-publish neither
        loses nor doubles the message."""
        headers = {MSG_ID: msg_id}
        if organization_id:
            headers[ORG_HEADER] = organization_id
        with tracing.publishing(subject, headers):  # traceparent in the headers, when tracing is on
            await self._retrying(
                f"publishing {subject}",
                lambda: self.js.publish(subject, payload, timeout=PUBLISH_TIMEOUT, headers=headers),
            )

    async def _retrying(self, what: str, request: Callable[[], Awaitable[object]]) -> None:
        """Sends `request` until JetStream answers: a TRANSIENT failure is
        tried again every JETSTREAM_PAUSE seconds for up to
        JETSTREAM_DEADLINE, then raised."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + JETSTREAM_DEADLINE
        while True:
            try:
                await request()
                return
            except TRANSIENT:
                if loop.time() + JETSTREAM_PAUSE >= deadline:
                    raise
                log.info("%s got no answer from JetStream; trying again", what, exc_info=True)
                await asyncio.sleep(JETSTREAM_PAUSE)

    async def consume(
        self,
        stream: Stream,
        durable: str,
        subject: str | None,
        handler: Handler,
        batch: int = 100,
        *,
        in_order: bool = True,
        ack_wait: float = 30.0,
        linger: float = 0.0,
        park: Parker | None = None,
        max_attempts: int = 0,
        retry_cap: float = RETRY_CAP,
    ) -> None:
        """Starts a background loop feeding `handler` from a durable consumer
        of `subject` (None: the whole stream):
        one message at a time in order, or (in_order=False) every fetched
        message at once, for handlers that batch their work together; then a
        fetch of fewer than `batch` waits `linger` seconds and takes what has
        arrived meanwhile (when nothing has, it waits up to `linger` more for
        a first one). A message not acknowledged within `ack_wait` seconds
        (its process died) goes to another consumer; a handler still working
        says so in time. `park` receives the messages given up on: poison at
        once, any other after `max_attempts` deliveries (0: never); a failed
        message comes back after at most `retry_cap` seconds."""
        await self.ensure_stream(stream)
        config = ConsumerConfig(
            durable_name=durable,
            filter_subject=subject,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=ack_wait,
            max_deliver=-1,
        )
        await self._retrying(f"setting up consumer {durable}", lambda: self.js.add_consumer(stream.name, config))
        sub = await self.js.pull_subscribe_bind(durable, stream=stream.name)
        handling = _Handling(stream.name, durable, handler, ack_wait / 3, park, max_attempts, retry_cap)
        loop = self._loop(sub, handling, batch, in_order, linger)
        self._tasks.append(asyncio.create_task(loop, name=f"consume:{durable}"))

    async def _loop(
        self, sub: JetStreamContext.PullSubscription, handling: _Handling, batch: int, in_order: bool, linger: float
    ) -> None:
        """Fetches and handles until cancelled. A round that fails because
        NATS is away (the client's reconnect buffer full, JetStream not
        answering yet) is tried again: the loop never dies, and what it left
        unacknowledged is redelivered."""
        while True:
            try:
                await self._round(sub, handling, batch, in_order, linger)
            except Exception:
                log.warning("consuming %s failed; fetching again", handling.durable, exc_info=True)
                await asyncio.sleep(REFETCH_PAUSE)

    async def _round(
        self, sub: JetStreamContext.PullSubscription, handling: _Handling, batch: int, in_order: bool, linger: float
    ) -> None:
        """Fetches what is there (waiting a second at most) and handles it."""
        try:
            messages = await sub.fetch(batch, timeout=1.0)
        except TimeoutError:  # nats' own TimeoutError, or asyncio's when a fetch's deadline lapses
            return
        if not in_order and linger and len(messages) < batch:
            # A trickle: a batched write costs about the same for one
            # message or fifty, so let more arrive and handle them together.
            await asyncio.sleep(linger)
            with contextlib.suppress(TimeoutError):
                messages += await sub.fetch(batch - len(messages), timeout=linger)
        if in_order:
            for msg in messages:
                await handling.handle(msg)
        else:
            await asyncio.gather(*(handling.handle(msg) for msg in messages))

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        # close, not drain: draining waits on pull subscriptions' pending
        # fetches; anything unacknowledged is redelivered after restart.
        await self.nc.close()


@dataclass(frozen=True)
class _Handling:
    """How one consumer handles a message: runs its handler, then acks,
    redelivers later, or parks."""

    stream: str
    durable: str
    handler: Handler
    heartbeat: float  # seconds between two "in progress" while the handler works
    park: Parker | None
    max_attempts: int
    retry_cap: float

    async def handle(self, msg: Msg) -> None:
        """Acknowledged once handled, marked in progress every heartbeat
        until then; redelivered after `retry_delay` when the handler fails,
        parked when it never can. Traced as a continuation of its publisher's trace."""
        with tracing.consuming(msg.subject, msg.headers):
            await self._handle(msg)

    async def _handle(self, msg: Msg) -> None:
        work = asyncio.ensure_future(self.handler(msg.subject, msg.data))
        try:
            while not (await asyncio.wait({work}, timeout=self.heartbeat))[0]:
                await msg.in_progress()
        finally:
            work.cancel()  # a no-op once done; a stopped consumer stops its handlers
        error = work.exception()
        if error is None:
            await msg.ack()
            return
        attempt = msg.metadata.num_delivered
        poison = isinstance(error, (Poison, DecodeError))
        given_up = poison or attempt >= self.max_attempts > 0
        if self.park is not None and given_up and await self._parked(self.park, msg, error, attempt):
            await msg.ack()
            return
        log.error("handler failed for %s (attempt %d); redelivering", msg.subject, attempt, exc_info=error)
        await msg.nak(delay=retry_delay(attempt, self.retry_cap))

    async def _parked(self, park: Parker, msg: Msg, error: BaseException, attempt: int) -> bool:
        """Whether the message was parked (a failure to park keeps it in the stream)."""
        parked = Parked(
            stream=self.stream,
            durable=self.durable,
            sequence=msg.metadata.sequence.stream,
            subject=msg.subject,
            payload=msg.data,
            organization_id=(msg.headers or {}).get(ORG_HEADER, ""),
            attempts=attempt,
            error=f"{type(error).__name__}: {error}"[:MAX_ERROR],
        )
        try:
            await park(parked)
        except Exception:
            log.exception("parking %s failed; it stays in the stream", msg.subject)
            return False
        log.error("parked %s after %d attempts: %s", msg.subject, attempt, parked.error)
        return True


MAX_ERROR = 1000  # characters of a handler's error kept with a parked message
