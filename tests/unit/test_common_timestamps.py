"""Aware-UTC datetimes, RFC 3339 text and protobuf Timestamps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from bxb.catalog.v1 import plans_pb2
from services.common import timestamps


def test_utcnow_is_aware_utc_and_current():
    before = datetime.now(UTC)
    now = timestamps.utcnow()
    assert now.tzinfo is UTC
    assert before <= now <= datetime.now(UTC)


def test_to_proto_of_none_is_none():
    assert timestamps.to_proto(None) is None


def test_proto_round_trip_keeps_the_instant_and_microseconds():
    value = datetime(2026, 3, 4, 5, 6, 7, 890123, tzinfo=UTC)
    ts = timestamps.to_proto(value)
    assert (ts.seconds, ts.nanos) == (int(value.timestamp()), 890123000)
    back = timestamps.from_proto(ts)
    assert back == value
    assert back.tzinfo is UTC


@pytest.mark.parametrize(
    "value",
    [
        datetime(1969, 12, 31, 23, 59, 59, 500000, tzinfo=UTC),
        datetime(1, 1, 1, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    ],
)
def test_protos_match_protobufs_own_conversion_at_the_edges(value):
    ts = timestamps.to_proto(value)
    expected = Timestamp()
    expected.FromDatetime(value)
    assert (ts.seconds, ts.nanos) == (expected.seconds, expected.nanos)
    assert timestamps.from_proto(ts) == value


def test_from_proto_drops_nanoseconds_below_a_microsecond():
    ts = Timestamp(seconds=-1, nanos=999_999_999)
    assert timestamps.from_proto(ts) == datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
    assert timestamps.from_proto(ts) == ts.ToDatetime(tzinfo=UTC)


def test_to_proto_converts_other_offsets_to_the_same_instant():
    paris = datetime(2026, 1, 1, 1, 0, tzinfo=timezone(timedelta(hours=1)))
    ts = timestamps.to_proto(paris)
    assert timestamps.from_proto(ts) == datetime(2026, 1, 1, tzinfo=UTC)


def test_from_proto_or_none_reads_only_set_fields():
    plan = plans_pb2.Plan()
    assert timestamps.from_proto_or_none(plan, "create_time") is None
    plan.create_time.CopyFrom(Timestamp(seconds=1767225600))
    assert timestamps.from_proto_or_none(plan, "create_time") == datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "instant"),
    [
        ("2026-01-01T00:00:00Z", datetime(2026, 1, 1, tzinfo=UTC)),
        ("2026-01-01T00:00:00.250Z", datetime(2026, 1, 1, 0, 0, 0, 250000, tzinfo=UTC)),
        ("2026-01-01T02:30:00+02:30", datetime(2026, 1, 1, tzinfo=UTC)),
        ("2025-12-31T19:00:00-05:00", datetime(2026, 1, 1, tzinfo=UTC)),
        ("2026-01-01", datetime(2026, 1, 1, tzinfo=UTC)),
    ],
)
def test_parse_rfc3339_returns_aware_utc(text, instant):
    parsed = timestamps.parse_rfc3339(text)
    assert parsed == instant
    assert parsed.utcoffset() == timedelta(0)


def test_parse_rfc3339_refuses_a_time_without_offset():
    with pytest.raises(ValueError, match="UTC offset"):
        timestamps.parse_rfc3339("2026-01-01T00:00:00")


@pytest.mark.parametrize("text", ["", "yesterday", "2026-13-01", "2026-02-30T00:00:00Z"])
def test_parse_rfc3339_refuses_garbage(text):
    with pytest.raises(ValueError):
        timestamps.parse_rfc3339(text)


def test_format_rfc3339_uses_z_and_converts_to_utc():
    assert timestamps.format_rfc3339(datetime(2026, 1, 1, tzinfo=UTC)) == "2026-01-01T00:00:00Z"
    new_york = datetime(2025, 12, 31, 19, 0, 0, 500000, tzinfo=timezone(timedelta(hours=-5)))
    assert timestamps.format_rfc3339(new_york) == "2026-01-01T00:00:00.500000Z"
