"""Rejected events told to the other services: bxb.metering.v1.events_rejected
on the BXB_METERING stream (bus.METERING), once the rejections are recorded.

Metering keeps no PostgreSQL outbox, so the notice is published after the
rejections are in ClickHouse, by a task of its own: the call that rejected
the events never waits for it or fails with it. JetStream deduplicates on
the notice's event id. When NATS is away (or slower than PUBLISH_TIMEOUT)
the notice is dropped with a warning: the rejections stay listed by
ListRejectedEvents; only their announcement (events.rejected) is missed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import datetime

from bxb.metering.v1 import events_pb2
from bxb.metering.v1 import usage_events_pb2 as pb
from services.common import bus
from services.common.ids import new_id
from services.common.timestamps import to_proto

log = logging.getLogger("bxb.metering.notices")

EVENTS_REJECTED = "bxb.metering.v1.events_rejected"
PUBLISH_TIMEOUT = 5.0  # seconds a notice may take to reach JetStream
# A notice's largest size: far below NATS's message limit (1 MB by default).
MAX_NOTICE_BYTES = 256 * 1024


def notices(org: str, rejected: Sequence[pb.RejectedEvent], now: datetime) -> list[events_pb2.EventsRejected]:
    """The rejections as EventsRejected messages of at most MAX_NOTICE_BYTES each."""
    occur = to_proto(now)
    return [
        events_pb2.EventsRejected(event_id=new_id("evt"), organization_id=org, occur_time=occur, rejected_events=group)
        for group in bus.by_size(rejected, MAX_NOTICE_BYTES)
    ]


class RejectionNotices:
    def __init__(self, publisher: bus.Bus, timeout: float = PUBLISH_TIMEOUT):
        self.bus = publisher  # opened by the service
        self.timeout = timeout
        self._tasks: set[asyncio.Task[None]] = set()

    def tell(self, org: str, rejected: Sequence[pb.RejectedEvent], now: datetime) -> None:
        """Publishes the notices in the background (an organization of none has no one to tell)."""
        if not org or not rejected:
            return
        for notice in notices(org, rejected, now):
            task = asyncio.create_task(self._publish(notice))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _publish(self, notice: events_pb2.EventsRejected) -> None:
        payload = notice.SerializeToString()
        org = notice.organization_id
        try:
            async with asyncio.timeout(self.timeout):
                await self.bus.publish(EVENTS_REJECTED, payload, notice.event_id, org)
        except Exception:
            log.warning("events_rejected of %s was not published; the rejections stay listed", org, exc_info=True)

    async def settled(self) -> None:
        """Waits for the notices under way (tests, and a stopping service)."""
        await asyncio.gather(*self._tasks, return_exceptions=True)
