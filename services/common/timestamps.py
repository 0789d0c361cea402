"""Conversions between aware datetimes, RFC 3339 text and protobuf Timestamps.

Every datetime in bxb is timezone-aware UTC; naive values never cross a
boundary.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import overload

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Times bxb accepts end before the calendar's last year: the billing period
# holding any of them (a year at most) must still end inside it.
LATEST = datetime(9999, 1, 1, tzinfo=UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


# Both conversions go through a timedelta from the epoch: protobuf's own
# FromDatetime and ToDatetime cost several times more, on every event ingested.


@overload
def to_proto(value: datetime) -> Timestamp: ...
@overload
def to_proto(value: datetime | None) -> Timestamp | None: ...
def to_proto(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    since = value - EPOCH  # whole seconds (negative before 1970) and microseconds
    return Timestamp(seconds=since.days * 86_400 + since.seconds, nanos=since.microseconds * 1000)


def from_proto(ts: Timestamp) -> datetime:
    """The instant, to the microsecond (finer nanoseconds are dropped)."""
    return EPOCH + timedelta(seconds=ts.seconds, microseconds=ts.nanos // 1000)


def from_proto_or_none(message: Message, field: str) -> datetime | None:
    return from_proto(getattr(message, field)) if message.HasField(field) else None


def parse_rfc3339(text: str) -> datetime:
    """Parses an ISO 8601 / RFC 3339 instant; a date alone means midnight UTC.

    Raises ValueError for anything else, including a time without an offset.
    """
    value = datetime.fromisoformat(text)
    if len(text) == 10:  # a bare date, "2026-01-01"
        return value.replace(tzinfo=UTC)
    if value.tzinfo is None:
        raise ValueError("a timestamp needs a UTC offset, for example 2026-01-01T00:00:00Z")
    return value.astimezone(UTC)


def format_rfc3339(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
