"""The top-level event value: stored on both ClickHouse transports, aggregated
when no property is named, validated over gRPC, and carried by /v1/events."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import grpc
import pytest

from bxb.metering.v1 import usage_events_pb2 as pb
from bxb.metering.v1 import usage_events_pb2_grpc, usage_pb2, usage_pb2_grpc
from services.common import tenancy
from services.common.errors import error_info
from services.common.timestamps import to_proto
from services.metering.clickhouse import ClickHouse
from services.metering.store import Event, EventStore
from tests.conftest import Stack, Tenant, unique

START = datetime(2026, 3, 1, tzinfo=UTC)
END = datetime(2026, 4, 1, tzinfo=UTC)
NOW = datetime(2026, 4, 2, tzinfo=UTC)
HOUR = timedelta(hours=1)


def event(txn: str, value: str | None, at: datetime = START, **props: str) -> Event:
    return Event(txn, "cus_1", "api", at, props, value=value)


async def usage(store: EventStore, org: str, aggregation: str, field: str = "") -> tuple[Decimal, int]:
    result = await store.aggregate(org, "cus_1", "api", aggregation, field, START, END)
    return result.value, result.count


# Storage


async def test_the_value_is_stored_and_read_back(store: EventStore, org: str):
    await store.ingest(org, [event("t1", "-12.5"), event("t2", None, v="3")], NOW)
    assert (await store.get(org, "t1")).value == "-12.5"
    assert (await store.get(org, "t2")).value is None


async def test_an_empty_field_aggregates_the_top_level_value(store: EventStore, org: str):
    values = ["5", "7.5", "-2", None, "3"]
    await store.ingest(org, [event(f"t{i}", v, START + i * HOUR, v="1000") for i, v in enumerate(values)], NOW)
    assert await usage(store, org, "sum") == (Decimal("13.5"), 5)
    assert await usage(store, org, "max") == (Decimal("7.5"), 5)
    assert await usage(store, org, "unique_count") == (Decimal(4), 5)  # a missing value is not one
    assert await usage(store, org, "latest") == (Decimal(3), 5)
    assert await usage(store, org, "count") == (Decimal(5), 5)
    assert await usage(store, org, "sum", field="v") == (Decimal(5000), 5)
    listed = await store.aggregate(org, "cus_1", "api", "sum", "", START, END, include_values=True)
    assert listed.values == (Decimal(5), Decimal("7.5"), Decimal(-2), Decimal(0), Decimal(3))


async def test_events_without_values_aggregate_to_zero(store: EventStore, org: str):
    await store.ingest(org, [event("t1", None, v="4")], NOW)
    for aggregation in ("sum", "max", "unique_count", "latest"):
        assert await usage(store, org, aggregation) == (Decimal(0), 1)


async def test_a_table_from_before_values_gains_the_column_and_keeps_its_events(clickhouse: ClickHouse, org: str):
    db = unique("bxb_old")
    await clickhouse.execute(f"CREATE DATABASE {db}")
    await clickhouse.execute(
        f"""CREATE TABLE {db}.events (
            organization_id LowCardinality(String), customer_id String, code LowCardinality(String),
            transaction_id String, timestamp DateTime64(3, 'UTC'), properties Map(String, String),
            subscription_id String, ingest_time DateTime64(3, 'UTC')
        ) ENGINE = ReplacingMergeTree PARTITION BY toYYYYMM(timestamp)
        ORDER BY (organization_id, customer_id, code, timestamp, transaction_id)"""
    )
    await clickhouse.insert(
        f"{db}.events",
        [
            {
                "organization_id": org,
                "customer_id": "cus_1",
                "code": "api",
                "transaction_id": "old",
                "timestamp": "2026-03-02 00:00:00.000",
                "properties": {"v": "4"},
                "subscription_id": "",
                "ingest_time": "2026-03-02 00:00:00.000",
            }
        ],
    )
    store = EventStore(clickhouse, db)
    await store.create_schema()
    await store.create_schema()
    assert (await store.get(org, "old")).value is None
    assert await store.ingest(org, [event("new", "6")], NOW) == [True]
    assert await usage(store, org, "sum") == (Decimal(6), 2)
    assert await usage(store, org, "sum", field="v") == (Decimal(4), 2)


# Over gRPC


@pytest.fixture
async def channel(stack: Stack) -> AsyncIterator[grpc.aio.Channel]:
    async with stack.channel("metering") as channel:
        yield channel


@pytest.fixture
def events(channel) -> usage_events_pb2_grpc.EventServiceStub:
    return usage_events_pb2_grpc.EventServiceStub(channel)


def usage_event(txn: str, value: str = "") -> pb.UsageEvent:
    return pb.UsageEvent(transaction_id=txn, customer_id="cus_1", code="api", timestamp=to_proto(START), value=value)


async def test_the_value_is_stored_in_canonical_notation(events, org: str):
    meta = tenancy.metadata(org)
    batch = [usage_event("t1", "1.50E+2"), usage_event("t2"), usage_event("t3", "-0.000000000001")]
    await events.IngestEvents(pb.IngestEventsRequest(events=batch), metadata=meta)
    got = [await events.GetEvent(pb.GetEventRequest(transaction_id=t), metadata=meta) for t in ("t1", "t2", "t3")]
    assert [e.value for e in got] == ["150", "", "-0.000000000001"]


@pytest.mark.parametrize(
    "value",
    ["abc", "NaN", "Infinity", "1e101", "0.0000000000001", "100000000000000000000000000", "-1e26"],
)
async def test_a_value_the_aggregations_cannot_hold_exactly_is_refused(events, org: str, value: str):
    meta = tenancy.metadata(org)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await events.IngestEvents(pb.IngestEventsRequest(events=[usage_event("t1", value)]), metadata=meta)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(caught.value).metadata["field"] == "value"


@pytest.mark.parametrize("value", ["0E-40", "99999999999999999999999999.999999999999", "1.000000000000000000"])
async def test_values_at_the_limits_are_accepted(events, org: str, value: str):
    meta = tenancy.metadata(org)
    await events.IngestEvents(pb.IngestEventsRequest(events=[usage_event("t1", value)]), metadata=meta)
    got = await events.GetEvent(pb.GetEventRequest(transaction_id="t1"), metadata=meta)
    assert Decimal(got.value) == Decimal(value)


async def test_a_bad_value_in_a_batch_is_named_by_index_and_nothing_is_stored(events, org: str):
    meta = tenancy.metadata(org)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        batch = [usage_event("t0", "1"), usage_event("t1", "1,5")]
        await events.IngestEvents(pb.IngestEventsRequest(events=batch), metadata=meta)
    assert error_info(caught.value).metadata["field"] == "events[1].value"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await events.GetEvent(pb.GetEventRequest(transaction_id="t0"), metadata=meta)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_an_aggregation_without_a_field_reads_the_value(channel, events, org: str):
    meta = tenancy.metadata(org)
    batch = [usage_event("t1", "0.1"), usage_event("t2", "0.2"), usage_event("t3")]
    await events.IngestEvents(pb.IngestEventsRequest(events=batch), metadata=meta)
    usage = usage_pb2_grpc.UsageServiceStub(channel)
    request = usage_pb2.AggregateUsageRequest(
        customer_id="cus_1",
        code="api",
        aggregation=usage_pb2.AGGREGATION_SUM,
        start_time=to_proto(START),
        end_time=to_proto(END),
        include_values=True,
    )
    reply = await usage.AggregateUsage(request, metadata=meta)
    assert (reply.value, reply.event_count, sorted(reply.values)) == ("0.3", 3, ["0", "0.1", "0.2"])
    request.aggregation = usage_pb2.AGGREGATION_MAX
    request.include_values = False
    reply = await usage.AggregateUsage(request, metadata=meta)
    assert (reply.value, reply.event_count) == ("0.2", 3)


# Through the gateway


async def test_the_gateway_takes_and_renders_the_value(tenant: Tenant):
    txn, bare = unique("txn"), unique("txn")
    sent = await tenant.http.post(
        "/v1/events", json={"transaction_id": txn, "customer_id": "c", "code": "seats", "value": 2.50}
    )
    assert sent.status_code == 200, sent.text
    await tenant.http.post(
        "/v1/events", json={"transaction_id": bare, "customer_id": "c", "code": "seats", "value": None}
    )
    assert (await tenant.http.get(f"/v1/events/{txn}")).json()["value"] == "2.5"
    assert (await tenant.http.get(f"/v1/events/{bare}")).json()["value"] is None


@pytest.mark.parametrize("value", ["lots", "1e-13", True])
async def test_the_gateway_refuses_a_bad_value(tenant: Tenant, value):
    response = await tenant.http.post("/v1/events", json={"customer_id": "c", "code": "seats", "value": value})
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "value"
