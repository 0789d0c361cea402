"""weighted_sum: the time-weighted level of a running total. The level starts at
the sum of the customer's values before the window and each event in the
window changes it from its timestamp on. Hand-computed expectations, on both
ClickHouse transports, then once over gRPC."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import grpc
import pytest

from bxb.metering.v1 import usage_events_pb2 as pb
from bxb.metering.v1 import usage_events_pb2_grpc, usage_pb2, usage_pb2_grpc
from services.common import tenancy
from services.common.timestamps import to_proto
from services.metering.store import Event, EventStore
from tests.conftest import Stack, unique

START = datetime(2026, 3, 1, tzinfo=UTC)
END = datetime(2026, 4, 1, tzinfo=UTC)
HALF = START + (END - START) / 2
NOW = datetime(2026, 4, 2, tzinfo=UTC)
MS = timedelta(milliseconds=1)


def change(txn: str, at: datetime, value: str | None, customer: str = "cus_1", code: str = "seats", **props) -> Event:
    return Event(txn, customer, code, at, props, value=value)


async def weighted(
    store: EventStore, org: str, start=START, end=END, field: str = "", **kwargs
) -> tuple[Decimal, int, tuple[Decimal, ...]]:
    result = await store.aggregate(
        org,
        kwargs.get("customer", "cus_1"),
        kwargs.get("code", "seats"),
        "weighted_sum",
        field,
        start,
        end,
        include_values=kwargs.get("include_values", False),
    )
    return result.value, result.count, result.values


async def test_a_level_held_all_month_weighs_in_full(store: EventStore, org: str):
    await store.ingest(org, [change("t1", START - timedelta(days=14), "10")], NOW)
    assert await weighted(store, org) == (Decimal(10), 0, ())


async def test_zero_for_the_first_half_then_20_weighs_10(store: EventStore, org: str):
    await store.ingest(org, [change("t1", HALF, "20")], NOW)
    assert await weighted(store, org) == (Decimal(10), 1, ())


async def test_the_level_carries_over_from_the_previous_window(store: EventStore, org: str):
    february = datetime(2026, 2, 1, tzinfo=UTC)  # 28 days
    await store.ingest(
        org,
        [
            change("t1", february, "5"),
            change("t2", february + timedelta(days=14), "3"),
            change("t3", START + (END - START) * 3 / 4, "4"),
        ],
        NOW,
    )
    # February: 5 all month, 3 more for the second half.
    assert await weighted(store, org, start=february, end=START) == (Decimal("6.5"), 2, ())
    # March starts at 8 and holds 12 for its last quarter.
    assert await weighted(store, org) == (Decimal(9), 1, ())
    # April holds 12 throughout.
    assert await weighted(store, org, start=END, end=datetime(2026, 5, 1, tzinfo=UTC)) == (Decimal(12), 0, ())


async def test_an_event_at_the_start_counts_in_full_and_one_at_the_end_not_at_all(store: EventStore, org: str):
    await store.ingest(org, [change("t1", START, "7"), change("t2", END, "100")], NOW)
    assert await weighted(store, org) == (Decimal(7), 1, ())
    # Just before the end, it still weighs one millisecond of the month.
    await store.ingest(org, [change("t3", END - MS, "2678400")], NOW)  # 31 days in ms is 2678400000
    assert await weighted(store, org) == (Decimal("7.001"), 2, ())


async def test_negative_changes_lower_the_level(store: EventStore, org: str):
    await store.ingest(org, [change("t1", START - MS, "10"), change("t2", HALF, "-4")], NOW)
    assert await weighted(store, org) == (Decimal(8), 1, ())
    await store.ingest(org, [change("t3", START + (END - START) / 4, "-10")], NOW)
    # 10 for a quarter, 0 for a quarter, -4 for the second half.
    assert await weighted(store, org) == (Decimal("0.5"), 2, ())


async def test_no_events_and_no_history_weigh_zero(store: EventStore, org: str):
    assert await weighted(store, org) == (Decimal(0), 0, ())


async def test_an_empty_window_weighs_zero_whatever_the_level(store: EventStore, org: str):
    await store.ingest(org, [change("t1", START - MS, "10"), change("t2", START, "5")], NOW)
    assert await weighted(store, org, start=START, end=START) == (Decimal(0), 0, ())


async def test_a_fraction_of_the_window_is_rounded_half_even_to_12_places(store: EventStore, org: str):
    await store.ingest(org, [change("t1", START + MS, "1"), change("t2", START + 2 * MS, "0.000000000001")], NOW)
    # 1 for 2 of 3 ms, and 1e-12 for 1 of 3 ms.
    assert await weighted(store, org, end=START + 3 * MS) == (Decimal("0.666666666667"), 2, ())


async def test_events_without_a_value_and_other_customers_or_metrics_do_not_move_the_level(store: EventStore, org: str):
    await store.ingest(
        org,
        [
            change("t1", START - MS, "10"),
            change("t2", START - MS, "1000", customer="cus_2"),
            change("t3", START - MS, "1000", code="other"),
            change("t4", START, None),
            change("t5", HALF, "1000", customer="cus_2"),
        ],
        NOW,
    )
    assert await weighted(store, org) == (Decimal(10), 1, ())
    assert await weighted(store, unique("org")) == (Decimal(0), 0, ())


async def test_a_duplicate_change_counts_once(store: EventStore, org: str):
    await store.ingest(org, [change("t1", HALF, "20")], NOW)
    await store.ingest(org, [change("t1", START, "20")], NOW)
    assert await weighted(store, org) == (Decimal(10), 1, ())


async def test_include_values_lists_the_changes_in_the_window_in_time_order(store: EventStore, org: str):
    await store.ingest(org, [change("t1", START - MS, "10"), change("t3", HALF, "-4"), change("t2", START, "2.5")], NOW)
    # 12.5 for the first half, 8.5 for the second.
    assert await weighted(store, org, include_values=True) == (
        Decimal("10.5"),
        2,
        (Decimal("2.5"), Decimal(-4)),
    )


async def test_a_property_can_carry_the_changes(store: EventStore, org: str):
    await store.ingest(org, [change("t1", START - MS, "99", v="10"), change("t2", HALF, None, v="-4")], NOW)
    assert await weighted(store, org, field="v") == (Decimal(8), 1, ())
    assert await weighted(store, org) == (Decimal(99), 1, ())


# Over gRPC


@pytest.fixture
async def channel(stack: Stack) -> AsyncIterator[grpc.aio.Channel]:
    async with stack.channel("metering") as channel:
        yield channel


async def test_weighted_sum_over_grpc(channel, org: str):
    events = usage_events_pb2_grpc.EventServiceStub(channel)
    usage = usage_pb2_grpc.UsageServiceStub(channel)
    meta = tenancy.metadata(org)

    def seat(txn: str, at: datetime, value: str) -> pb.UsageEvent:
        return pb.UsageEvent(transaction_id=txn, customer_id="cus_1", code="seats", timestamp=to_proto(at), value=value)

    await events.IngestEvents(
        pb.IngestEventsRequest(events=[seat("t1", START - MS, "10"), seat("t2", HALF, "-4"), seat("t3", END, "9")]),
        metadata=meta,
    )
    request = usage_pb2.AggregateUsageRequest(
        customer_id="cus_1",
        code="seats",
        aggregation=usage_pb2.AGGREGATION_WEIGHTED_SUM,
        start_time=to_proto(START),
        end_time=to_proto(END),
        include_values=True,
    )
    reply = await usage.AggregateUsage(request, metadata=meta)
    assert (reply.value, reply.event_count, list(reply.values)) == ("8", 1, ["-4"])
    request.start_time.CopyFrom(to_proto(END))
    request.end_time.CopyFrom(to_proto(datetime(2026, 5, 1, tzinfo=UTC)))
    request.include_values = False
    reply = await usage.AggregateUsage(request, metadata=meta)
    assert (reply.value, reply.event_count, list(reply.values)) == ("15", 1, [])
