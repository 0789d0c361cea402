"""Events as the protobuf messages of the API and of the intake queue."""

from __future__ import annotations

from bxb.metering.v1 import usage_events_pb2 as pb
from services.common.timestamps import from_proto, to_proto
from services.metering.store import Event, StoredEvent


def event_message(event: Event) -> pb.UsageEvent:
    return pb.UsageEvent(
        transaction_id=event.transaction_id,
        customer_id=event.customer_id,
        code=event.code,
        timestamp=to_proto(event.timestamp),
        properties=event.properties,
        subscription_id=event.subscription_id,
        value=event.value or "",
    )


def stored_message(event: StoredEvent) -> pb.UsageEvent:
    """A stored event as the API shows it, with its ingest time."""
    found = event_message(event)
    found.ingest_time.CopyFrom(to_proto(event.ingest_time))
    return found


def event_of(message: pb.UsageEvent) -> Event:
    return Event(
        transaction_id=message.transaction_id,
        customer_id=message.customer_id,
        code=message.code,
        timestamp=from_proto(message.timestamp),
        properties=dict(message.properties),
        subscription_id=message.subscription_id,
        value=message.value or None,
    )
