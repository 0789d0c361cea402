"""Usage scoped to a subscription, split by filter buckets and group values,
and many aggregations in one query. Hand-computed expectations, on both
ClickHouse transports, then over gRPC on the stack's metering server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import grpc
import pytest

from bxb.metering.v1 import usage_events_pb2 as events_pb
from bxb.metering.v1 import usage_events_pb2_grpc, usage_pb2, usage_pb2_grpc
from services.common import tenancy
from services.common.errors import error_info
from services.common.timestamps import to_proto
from services.metering.store import Event, EventStore, UsageQuery
from tests.conftest import Stack

START = datetime(2026, 3, 1, tzinfo=UTC)
END = datetime(2026, 4, 1, tzinfo=UTC)
HALF = START + (END - START) / 2
NOW = datetime(2026, 4, 2, tzinfo=UTC)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


def event(
    txn: str,
    at: datetime = START,
    *,
    customer: str = "cus_1",
    code: str = "api",
    subscription: str = "",
    value: str | None = None,
    **properties: str,
) -> Event:
    return Event(txn, customer, code, at, properties, subscription_id=subscription, value=value)


def query(aggregation: str = "sum", field: str = "tokens", **fields) -> UsageQuery:
    spec = {"customer_id": "cus_1", "code": "api", "aggregation": aggregation, "field": field}
    spec.update(start=START, end=END)
    spec.update(fields)
    return UsageQuery(**spec)


Row = tuple[int, tuple[str, ...], Decimal, int]


async def groups(store: EventStore, org: str, aggregation: str = "sum", field: str = "tokens", **fields) -> list[Row]:
    """(bucket, group values, value, event count) of each group of one query."""
    [result] = await store.aggregate_many(org, [query(aggregation, field, **fields)])
    return [(g.bucket, g.group_values, g.value, g.count) for g in result]


async def total(store: EventStore, org: str, aggregation: str = "sum", field: str = "tokens", **fields) -> tuple:
    """(value, event count) of an ungrouped query."""
    [(bucket, group_values, value, count)] = await groups(store, org, aggregation, field, **fields)
    assert (bucket, group_values) == (0, ())
    return value, count


# Subscription scope


async def scoped_events(store: EventStore, org: str) -> None:
    await store.ingest(
        org,
        [
            event("t1", START + HOUR, subscription="sub_1", tokens="1"),
            event("t2", START + 2 * HOUR, subscription="sub_2", tokens="10"),
            event("t3", START + 3 * HOUR, tokens="100"),
            event("t4", START + 5 * HOUR, tokens="1000"),
            event("t5", START + 6 * HOUR, tokens="10000"),
            event("t6", START + 2 * HOUR, customer="cus_2", subscription="sub_1", tokens="100000"),
        ],
        NOW,
    )


FIRST = (START + 3 * HOUR, START + 5 * HOUR)
SECOND = (START + 6 * HOUR, START + 7 * HOUR)


async def test_a_subscription_counts_its_events_and_the_unassigned_ones_in_its_windows(store: EventStore, org: str):
    await scoped_events(store, org)
    # t1 (its own), t3 (in the first window) and t5 (in the second); t4 falls on the first window's end.
    assert await total(store, org, subscription_id="sub_1", windows=(FIRST, SECOND)) == (Decimal(10101), 3)
    assert await total(store, org, subscription_id="sub_2", windows=(FIRST,)) == (Decimal(110), 2)


async def test_a_subscription_without_windows_counts_only_the_events_naming_it(store: EventStore, org: str):
    await scoped_events(store, org)
    assert await total(store, org, subscription_id="sub_1") == (Decimal(1), 1)
    assert await total(store, org, subscription_id="sub_3") == (Decimal(0), 0)


async def test_subscriptions_of_several_customers_in_one_batch_count_as_if_asked_alone(store: EventStore, org: str):
    await scoped_events(store, org)
    # Ids that would read alike if joined without their lengths.
    await store.ingest(
        org, [event("u1", customer="ab", subscription="c", tokens="7"), event("u2", customer="a", tokens="3")], NOW
    )
    whole = ((START - DAY, END),)
    asked = [
        query(subscription_id="sub_1", windows=whole),  # t1, t3, t4, t5
        query(subscription_id="sub_2"),  # t2 only
        query(customer_id="cus_2", subscription_id="sub_1", windows=whole),  # t6
        query(subscription_id="sub_1", windows=(FIRST, SECOND)),  # its own scan: t1, t3, t5
        query(customer_id="ab", subscription_id="c"),
        query(customer_id="a", subscription_id="bc", windows=whole),  # u2, unassigned
        query(customer_id="cus_3", subscription_id="sub_3", windows=whole),
    ]
    answers = await store.aggregate_many(org, asked)
    assert [(a.value, a.count) for [a] in answers] == [
        (Decimal(11101), 4),
        (Decimal(10), 1),
        (Decimal(100000), 1),
        (Decimal(10101), 3),
        (Decimal(7), 1),
        (Decimal(3), 1),
        (Decimal(0), 0),
    ]
    for one, answer in zip(asked, answers, strict=True):
        assert await store.aggregate_many(org, [one]) == [answer]


async def test_without_a_subscription_every_event_of_the_customer_counts(store: EventStore, org: str):
    await scoped_events(store, org)
    assert await total(store, org) == (Decimal(11111), 5)
    assert await total(store, org, customer_id="cus_2") == (Decimal(100000), 1)


async def test_windows_count_only_inside_the_period(store: EventStore, org: str):
    await store.ingest(
        org,
        [event("t1", START - HOUR, tokens="1"), event("t2", START, tokens="10"), event("t3", END, tokens="100")],
        NOW,
    )
    wide = (START - DAY, END + DAY)
    assert await total(store, org, subscription_id="sub_1", windows=(wide,)) == (Decimal(10), 1)
    outside = ((START - DAY, START), (END, END + DAY))
    assert await total(store, org, subscription_id="sub_1", windows=outside) == (Decimal(0), 0)


async def test_weighted_sum_carries_the_scoped_level_into_the_window(store: EventStore, org: str):
    await store.ingest(
        org,
        [
            event("s1", START - DAY, code="seats", subscription="sub_1", value="10"),
            event("s2", START - DAY, code="seats", subscription="sub_2", value="100"),
            event("s3", START - HOUR, code="seats", value="4"),  # unassigned, in the window
            event("s4", HALF, code="seats", value="1000"),  # unassigned, on the window's end
            event("s5", HALF, code="seats", subscription="sub_1", value="-6"),
        ],
        NOW,
    )
    window = (START - 2 * DAY, HALF)
    # 14 for the first half, 8 for the second.
    scoped = await total(store, org, "weighted_sum", "", code="seats", subscription_id="sub_1", windows=(window,))
    assert scoped == (Decimal(11), 1)
    # Without windows only its own events count: 10 for the first half, 4 for the second.
    assert await total(store, org, "weighted_sum", "", code="seats", subscription_id="sub_1") == (Decimal(7), 1)


# Buckets and groups


async def regional_events(store: EventStore, org: str) -> None:
    await store.ingest(
        org,
        [
            event("t1", START + HOUR, region="us", tier="pro", tokens="1"),
            event("t2", START + 2 * HOUR, region="us", tier="free", tokens="10"),
            event("t3", START + 3 * HOUR, region="eu", tier="pro", tokens="100"),
            event("t4", START + 4 * HOUR, region="ap", tokens="1000"),
            event("t5", START + 5 * HOUR, tokens="10000"),
            event("t6", START + 6 * HOUR, region="", tokens="100000"),
            event("t7", END, region="us", tier="pro", tokens="1000000"),  # after the window
        ],
        NOW,
    )


US_PRO = (("region", ("us",)), ("tier", ("pro",)))
US_OR_EU = (("region", ("us", "eu")),)


async def test_each_event_goes_to_the_first_bucket_it_matches_or_to_bucket_0(store: EventStore, org: str):
    await regional_events(store, org)
    buckets = (US_PRO, US_OR_EU, (("region", ("sa",)),), (("region", ("",)),))
    # t1 matches buckets 1 and 2 and goes to 1; bucket 3 has no events and is left out;
    # an empty value matches an empty property (t6) but not a missing one (t5).
    assert await groups(store, org, buckets=buckets) == [
        (0, (), Decimal(11000), 2),
        (1, (), Decimal(1), 1),
        (2, (), Decimal(110), 2),
        (4, (), Decimal(100000), 1),
    ]


async def test_group_values_split_the_usage_and_a_missing_property_reads_empty(store: EventStore, org: str):
    await regional_events(store, org)
    assert await groups(store, org, group_by=("region", "tier")) == [
        (0, ("", ""), Decimal(110000), 2),
        (0, ("ap", ""), Decimal(1000), 1),
        (0, ("eu", "pro"), Decimal(100), 1),
        (0, ("us", "free"), Decimal(10), 1),
        (0, ("us", "pro"), Decimal(1), 1),
    ]


async def test_groups_are_ordered_by_bucket_then_group_values(store: EventStore, org: str):
    await regional_events(store, org)
    assert await groups(store, org, buckets=((("region", ("us",)),),), group_by=("tier",)) == [
        (0, ("",), Decimal(111000), 3),
        (0, ("pro",), Decimal(100), 1),
        (1, ("free",), Decimal(10), 1),
        (1, ("pro",), Decimal(1), 1),
    ]


async def test_a_grouped_query_without_events_has_no_groups(store: EventStore, org: str):
    await regional_events(store, org)
    assert await groups(store, org, group_by=("region",), customer_id="cus_2") == []
    assert await groups(store, org, buckets=(US_PRO,), start=END + HOUR, end=END + DAY) == []


async def test_keys_and_values_are_matched_exactly_as_given(store: EventStore, org: str):
    tricky = 'it\'s "q" \\ {v:String} é'
    await store.ingest(
        org, [event("t1", **{tricky: tricky, "tokens": "3"}), event("t2", region=tricky, tokens="4")], NOW
    )
    assert await groups(store, org, buckets=(((tricky, (tricky,)),),), group_by=("region",)) == [
        (0, (tricky,), Decimal(4), 1),
        (1, ("",), Decimal(3), 1),
    ]


GROUPED = [
    event("u1", START + HOUR, region="us", v="5"),
    event("u2", START + 2 * HOUR, region="us", v="7.5"),
    event("u3", START + 3 * HOUR, region="us", v="3"),
    event("u4", START + 4 * HOUR, region="us", v="abc"),
    event("e1", START + HOUR, region="eu", v="2"),
    event("e2", START + 2 * HOUR, region="eu"),
]


@pytest.mark.parametrize(
    ("aggregation", "eu", "us"),
    [
        ("count", 2, 4),
        ("sum", 2, Decimal("15.5")),
        ("max", 2, Decimal("7.5")),
        ("unique_count", 1, 4),  # "abc" is a value; a missing one is not
        ("latest", 2, 3),  # the last numeric value of each group
    ],
)
async def test_every_aggregation_works_per_group(store: EventStore, org: str, aggregation: str, eu, us):
    await store.ingest(org, GROUPED, NOW)
    assert await groups(store, org, aggregation, "v", group_by=("region",)) == [
        (0, ("eu",), Decimal(eu), 2),
        (0, ("us",), Decimal(us), 4),
    ]


async def test_values_are_listed_per_group_in_time_order(store: EventStore, org: str):
    await store.ingest(org, GROUPED[::-1], NOW)
    [eu, us] = (await store.aggregate_many(org, [query(field="v", group_by=("region",), include_values=True)]))[0]
    assert (eu.group_values, eu.values) == (("eu",), (Decimal(2), Decimal(0)))
    assert (us.group_values, us.values) == (("us",), (Decimal(5), Decimal("7.5"), Decimal(3), Decimal(0)))
    [listed] = (await store.aggregate_many(org, [query("latest", "v", buckets=((("region", ("eu",)),),))]))[0][1:]
    assert (listed.bucket, listed.value, listed.values) == (1, Decimal(2), ())  # listed only when asked for


async def seat_changes(store: EventStore, org: str) -> None:
    await store.ingest(
        org,
        [
            event("us1", START - DAY, code="seats", value="10", region="us"),
            event("us2", HALF, code="seats", value="-4", region="us"),
            event("eu1", HALF, code="seats", value="6", region="eu"),
            event("ap1", START - 2 * DAY, code="seats", value="5", region="ap"),
            event("ap2", START - DAY, code="seats", value="-5", region="ap"),
            event("sa1", START - DAY, code="seats", value="2", region="sa"),
        ],
        NOW,
    )


async def test_weighted_sum_carries_each_groups_own_level(store: EventStore, org: str):
    await seat_changes(store, org)
    # us: 10, then 6 from the half; eu: 0, then 6; sa holds 2 without a change in the
    # window; ap went back to 0 before the window and has no change: left out.
    assert await groups(store, org, "weighted_sum", "", code="seats", group_by=("region",)) == [
        (0, ("eu",), Decimal(3), 1),
        (0, ("sa",), Decimal(2), 0),
        (0, ("us",), Decimal(8), 1),
    ]
    [eu, sa, us] = (
        await store.aggregate_many(
            org, [query("weighted_sum", "", code="seats", group_by=("region",), include_values=True)]
        )
    )[0]
    assert (eu.values, sa.values, us.values) == ((Decimal(6),), (), (Decimal(-4),))


async def test_weighted_sum_carries_each_buckets_own_level(store: EventStore, org: str):
    await seat_changes(store, org)
    # Bucket 0 holds ap, eu and sa: 2 for the first half, 8 for the second.
    assert await groups(store, org, "weighted_sum", "", code="seats", buckets=((("region", ("us",)),),)) == [
        (0, (), Decimal(5), 1),
        (1, (), Decimal(8), 1),
    ]


async def test_an_ungrouped_weighted_sum_is_one_level(store: EventStore, org: str):
    await seat_changes(store, org)
    # 12 for the first half, 14 for the second.
    assert await total(store, org, "weighted_sum", "", code="seats") == (Decimal(13), 2)
    assert await total(store, org, "weighted_sum", "", code="seats", customer_id="cus_2") == (Decimal(0), 0)


# Many queries at once


async def test_a_batch_answers_each_query_in_order_as_if_asked_alone(store: EventStore, org: str):
    await store.ingest(
        org,
        [
            event("a1", START + HOUR, subscription="sub_1", region="us", tokens="1"),
            event("a2", START + 2 * HOUR, region="eu", tokens="10"),
            event("a3", START + HOUR, customer="cus_2", tokens="100"),
            event("g1", START - DAY, code="storage", value="5"),
            event("g2", HALF, code="storage", value="3"),
            event("c1", START + HOUR, code="calls"),
            event("c2", END - HOUR, code="calls"),
        ],
        NOW,
    )
    queries = [
        query(),
        query("count", "", code="calls"),
        query(customer_id="cus_2"),
        query("weighted_sum", "", code="storage"),
        query(buckets=((("region", ("us",)),),)),
        query("max", subscription_id="sub_1"),
        query("unique_count", "region"),
        query("latest", end=START + 90 * timedelta(minutes=1)),
        query(include_values=True, group_by=("region",)),
        query("count", "", code="calls", start=END - HOUR),
    ]
    expected = [
        [(0, (), Decimal(11), 2)],
        [(0, (), Decimal(2), 2)],
        [(0, (), Decimal(100), 1)],
        [(0, (), Decimal("6.5"), 1)],  # 5 for the first half, 8 for the second
        [(0, (), Decimal(10), 1), (1, (), Decimal(1), 1)],
        [(0, (), Decimal(1), 1)],
        [(0, (), Decimal(2), 2)],
        [(0, (), Decimal(1), 1)],
        [(0, ("eu",), Decimal(10), 1), (0, ("us",), Decimal(1), 1)],
        [(0, (), Decimal(1), 1)],
    ]
    results = await store.aggregate_many(org, queries)
    assert [[(g.bucket, g.group_values, g.value, g.count) for g in r] for r in results] == expected
    assert [[g.values for g in r] for r in results][8] == [(Decimal(10),), (Decimal(1),)]
    for q, result in zip(queries, results, strict=True):
        assert await store.aggregate_many(org, [q]) == [result]


async def test_an_empty_batch_asks_nothing(store: EventStore, org: str):
    assert await store.aggregate_many(org, []) == []


# Over gRPC


@pytest.fixture
async def channel(stack: Stack) -> AsyncIterator[grpc.aio.Channel]:
    async with stack.channel("metering") as channel:
        yield channel


@pytest.fixture
def usage(channel) -> usage_pb2_grpc.UsageServiceStub:
    return usage_pb2_grpc.UsageServiceStub(channel)


async def send(channel, org: str, *events: events_pb.UsageEvent) -> None:
    stub = usage_events_pb2_grpc.EventServiceStub(channel)
    await stub.IngestEvents(events_pb.IngestEventsRequest(events=events), metadata=tenancy.metadata(org))


def usage_event(txn: str, at: datetime, subscription: str = "", **properties: str) -> events_pb.UsageEvent:
    return events_pb.UsageEvent(
        transaction_id=txn,
        customer_id="cus_1",
        code="api",
        timestamp=to_proto(at),
        subscription_id=subscription,
        properties=properties,
    )


def request(**fields) -> usage_pb2.AggregateUsageRequest:
    spec = {
        "customer_id": "cus_1",
        "code": "api",
        "aggregation": usage_pb2.AGGREGATION_SUM,
        "field_name": "tokens",
        "start_time": to_proto(START),
        "end_time": to_proto(END),
    }
    spec.update(fields)
    return usage_pb2.AggregateUsageRequest(**{k: v for k, v in spec.items() if v is not None})


def window(start: datetime | None, end: datetime | None) -> usage_pb2.TimeRange:
    return usage_pb2.TimeRange(start_time=to_proto(start), end_time=to_proto(end))


def bucket(**filters: list[str]) -> usage_pb2.FilterSet:
    return usage_pb2.FilterSet(filters=[usage_pb2.PropertyFilter(key=k, values=v) for k, v in filters.items()])


def as_rows(reply: usage_pb2.AggregateUsageResponse) -> list[tuple]:
    return [(g.bucket, list(g.group_values), g.value, g.event_count, list(g.values)) for g in reply.groups]


async def grpc_events(channel, org: str) -> None:
    await send(
        channel,
        org,
        usage_event("t1", START + HOUR, "sub_1", region="us", tokens="1"),
        usage_event("t2", START + 2 * HOUR, region="us", tokens="10"),
        usage_event("t3", START + 3 * HOUR, "sub_2", region="eu", tokens="100"),
        usage_event("t4", START + 4 * HOUR, region="eu", tokens="1000"),
    )


async def test_buckets_and_groups_over_grpc(channel, usage, org: str):
    await grpc_events(channel, org)
    reply = await usage.AggregateUsage(
        request(buckets=[bucket(region=["us"])], group_by=["region"], include_values=True),
        metadata=tenancy.metadata(org),
    )
    assert as_rows(reply) == [(0, ["eu"], "1100", 2, ["100", "1000"]), (1, ["us"], "11", 2, ["1", "10"])]
    assert (reply.value, reply.event_count, list(reply.values)) == ("", 0, [])  # unset when grouped
    empty = await usage.AggregateUsage(
        request(group_by=["region"], customer_id="cus_2"), metadata=tenancy.metadata(org)
    )
    assert list(empty.groups) == []


async def test_subscription_scope_over_grpc(channel, usage, org: str):
    await grpc_events(channel, org)
    scoped = request(subscription_id="sub_1", unassigned_windows=[window(START + 4 * HOUR, START + 5 * HOUR)])
    reply = await usage.AggregateUsage(scoped, metadata=tenancy.metadata(org))
    assert (reply.value, reply.event_count, list(reply.groups)) == ("1001", 2, [])


async def test_a_batch_over_grpc_answers_in_order(channel, usage, org: str):
    await grpc_events(channel, org)
    batch = usage_pb2.BatchAggregateUsageRequest(
        requests=[
            request(),
            request(aggregation=usage_pb2.AGGREGATION_COUNT, field_name=None, subscription_id="sub_2"),
            request(group_by=["region"]),
            request(aggregation=usage_pb2.AGGREGATION_MAX, include_values=True),
        ]
    )
    reply = await usage.BatchAggregateUsage(batch, metadata=tenancy.metadata(org))
    first, second, third, fourth = reply.responses
    assert (first.value, first.event_count) == ("1111", 4)
    assert (second.value, second.event_count) == ("1", 1)
    assert as_rows(third) == [(0, ["eu"], "1100", 2, []), (0, ["us"], "11", 2, [])]
    assert (fourth.value, list(fourth.values)) == ("1000", ["1", "10", "100", "1000"])
    nothing = await usage.BatchAggregateUsage(usage_pb2.BatchAggregateUsageRequest(), metadata=tenancy.metadata(org))
    assert list(nothing.responses) == []


async def rejected(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value.code(), error_info(caught.value).metadata.get("field", "")


def invalid(field: str) -> tuple[grpc.StatusCode, str]:
    return grpc.StatusCode.INVALID_ARGUMENT, field


HOUR_LATER = window(START + HOUR, START + 2 * HOUR)


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"buckets": [bucket(region=["us"]), bucket(**{"": ["x"]})]}, "buckets[1].filters[0].key"),
        ({"buckets": [bucket(region=["us"], tier=[])]}, "buckets[0].filters[1].values"),
        ({"buckets": [usage_pb2.FilterSet()]}, "buckets[0].filters"),
        ({"buckets": [bucket(region=["us"]) for _ in range(101)]}, "buckets"),
        (
            {"buckets": [usage_pb2.FilterSet(filters=[usage_pb2.PropertyFilter(key="r", values=["a"])] * 2)]},
            "buckets[0].filters[1].key",
        ),
        ({"group_by": [f"k{i}" for i in range(11)]}, "group_by"),
        ({"group_by": ["region", ""]}, "group_by[1]"),
        ({"group_by": ["region", "tier", "region"]}, "group_by[2]"),
        ({"unassigned_windows": [HOUR_LATER]}, "unassigned_windows"),
        ({"subscription_id": "s", "unassigned_windows": [window(None, END)]}, "unassigned_windows[0].start_time"),
        ({"subscription_id": "s", "unassigned_windows": [window(START, None)]}, "unassigned_windows[0].end_time"),
        (
            {"subscription_id": "s", "unassigned_windows": [HOUR_LATER, window(END, START)]},
            "unassigned_windows[1].end_time",
        ),
        ({"subscription_id": "s", "unassigned_windows": [HOUR_LATER] * 101}, "unassigned_windows"),
    ],
)
async def test_a_bad_request_names_the_field(usage, org: str, fields: dict, field: str):
    meta = tenancy.metadata(org)
    assert await rejected(usage.AggregateUsage(request(**fields), metadata=meta)) == invalid(field)
    batch = usage_pb2.BatchAggregateUsageRequest(requests=[request(), request(**fields)])
    assert await rejected(usage.BatchAggregateUsage(batch, metadata=meta)) == invalid(f"requests[1].{field}")


async def test_the_caps_themselves_are_accepted(usage, org: str):
    fields = {
        "buckets": [bucket(region=[str(i)]) for i in range(100)],
        "group_by": [f"k{i}" for i in range(10)],
        "subscription_id": "s",
        "unassigned_windows": [HOUR_LATER] * 100,
    }
    reply = await usage.AggregateUsage(request(**fields), metadata=tenancy.metadata(org))
    assert list(reply.groups) == []


async def test_a_batch_holds_at_most_500_requests(channel, usage, org: str):
    meta = tenancy.metadata(org)
    too_many = usage_pb2.BatchAggregateUsageRequest(requests=[request()] * 501)
    assert await rejected(usage.BatchAggregateUsage(too_many, metadata=meta)) == invalid("requests")
    # 499 metrics with one event each, tokens = its number; the last request repeats the first.
    sent = [usage_event(f"t{i}", START, tokens=str(i)) for i in range(499)]
    for i, e in enumerate(sent):
        e.code = f"c{i}"
    await send(channel, org, *sent)
    batch = usage_pb2.BatchAggregateUsageRequest(requests=[request(code=f"c{i % 499}") for i in range(500)])
    reply = await usage.BatchAggregateUsage(batch, metadata=meta)
    assert [(r.value, r.event_count) for r in reply.responses] == [(str(i % 499), 1) for i in range(500)]


async def test_a_batch_validates_the_existing_fields_by_index(usage, org: str):
    batch = usage_pb2.BatchAggregateUsageRequest(requests=[request(), request(aggregation=99)])
    assert await rejected(usage.BatchAggregateUsage(batch, metadata=tenancy.metadata(org))) == invalid(
        "requests[1].aggregation"
    )
    unnamed = usage_pb2.BatchAggregateUsageRequest(requests=[request(), request(aggregation=None)])
    code, _ = await rejected(usage.BatchAggregateUsage(unnamed, metadata=tenancy.metadata(org)))
    assert code == grpc.StatusCode.NOT_FOUND  # no aggregation, and no metric to take it from


async def test_a_batch_without_an_organization_is_unauthenticated(usage):
    batch = usage_pb2.BatchAggregateUsageRequest(requests=[request()])
    code, _ = await rejected(usage.BatchAggregateUsage(batch))
    assert code == grpc.StatusCode.UNAUTHENTICATED
