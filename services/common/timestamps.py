"""Conversions between aware datetimes, RFC 3339 text and protobuf Timestamps.

Every datetime in bxb is timezone-aware UTC; naive values never cross a
boundary.
"""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp


def utcnow() -> datetime:
    return datetime.now(UTC)


def to_proto(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    ts = Timestamp()
    ts.FromDatetime(value.astimezone(UTC))
    return ts


def from_proto(ts: Timestamp) -> datetime:
    return ts.ToDatetime(tzinfo=UTC)


def from_proto_or_none(message, field: str) -> datetime | None:
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
