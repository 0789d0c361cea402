"""NATS JetStream: publishing domain events and consuming them durably.

Subjects are `bxb.<service>.v1.<event>`; each producing service owns one
stream holding its subjects. Consumers are durable pull consumers, so a
service that was down resumes where it stopped. Handlers must be idempotent:
JetStream redelivers a message whose handler failed or whose ack was lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import nats
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, RetentionPolicy, StreamConfig
from nats.js.errors import NotFoundError

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

Handler = Callable[[str, bytes], Awaitable[None]]
"""Receives a message's subject and payload; raising makes it redeliver."""


class Bus:
    def __init__(self, nc: nats.NATS, js: JetStreamContext):
        self.nc = nc
        self.js = js
        self._tasks: list[asyncio.Task] = []

    @classmethod
    async def connect(cls, url: str, name: str) -> Bus:
        nc = await nats.connect(url, name=name, max_reconnect_attempts=-1, reconnect_time_wait=0.5)
        return cls(nc, nc.jetstream())

    async def ensure_stream(self, stream: Stream) -> None:
        retention = RetentionPolicy.WORK_QUEUE if stream.work_queue else RetentionPolicy.LIMITS
        config = StreamConfig(
            name=stream.name, subjects=list(stream.subjects), duplicate_window=120.0, retention=retention
        )
        try:
            await self.js.stream_info(stream.name)
        except NotFoundError:
            await self.js.add_stream(config)

    async def publish(self, subject: str, payload: bytes, msg_id: str, organization_id: str = "") -> None:
        headers = {MSG_ID: msg_id}
        if organization_id:
            headers[ORG_HEADER] = organization_id
        await self.js.publish(subject, payload, headers=headers)

    async def consume(
        self,
        stream: Stream,
        durable: str,
        subject: str,
        handler: Handler,
        batch: int = 100,
        *,
        in_order: bool = True,
        ack_wait: float = 30.0,
        linger: float = 0.0,
    ) -> None:
        """Starts a background loop feeding `handler` from a durable consumer:
        one message at a time in order, or (in_order=False) every fetched
        message at once, for handlers that batch their work together; then a
        fetch of fewer than `batch` waits `linger` seconds and takes what has
        arrived meanwhile (when nothing has, it waits up to `linger` more for
        a first one). A message not acknowledged within `ack_wait` seconds
        (its process died) goes to another consumer; a handler still working
        says so in time."""
        await self.ensure_stream(stream)
        config = ConsumerConfig(
            durable_name=durable,
            filter_subject=subject,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=ack_wait,
            max_deliver=-1,
        )
        await self.js.add_consumer(stream.name, config)
        sub = await self.js.pull_subscribe_bind(durable, stream=stream.name)
        loop = self._loop(sub, handler, batch, in_order, ack_wait / 3, linger)
        self._tasks.append(asyncio.create_task(loop, name=f"consume:{durable}"))

    async def _loop(self, sub, handler: Handler, batch: int, in_order: bool, heartbeat: float, linger: float) -> None:
        while True:
            try:
                messages = await sub.fetch(batch, timeout=1.0)
            except TimeoutError:  # nats' own TimeoutError, or asyncio's when a fetch's deadline lapses
                continue
            if not in_order and linger and len(messages) < batch:
                # A trickle: a batched write costs about the same for one
                # message or fifty, so let more arrive and handle them together.
                await asyncio.sleep(linger)
                with contextlib.suppress(TimeoutError):
                    messages += await sub.fetch(batch - len(messages), timeout=linger)
            if in_order:
                for msg in messages:
                    await _handle(msg, handler, heartbeat)
            else:
                await asyncio.gather(*(_handle(msg, handler, heartbeat) for msg in messages))

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        # close, not drain: draining waits on pull subscriptions' pending
        # fetches; anything unacknowledged is redelivered after restart.
        await self.nc.close()


async def _handle(msg, handler: Handler, heartbeat: float) -> None:
    """Acknowledged once handled, marked in progress every `heartbeat`
    seconds until then; redelivered a second later when the handler fails."""
    work = asyncio.ensure_future(handler(msg.subject, msg.data))
    try:
        while not (await asyncio.wait({work}, timeout=heartbeat))[0]:
            await msg.in_progress()
    finally:
        work.cancel()  # a no-op once done; a stopped consumer stops its handlers
    try:
        work.result()
    except Exception:
        log.exception("handler failed for %s; redelivering", msg.subject)
        await msg.nak(delay=1.0)
    else:
        await msg.ack()
