"""The metering service over gRPC: EventService and UsageService on the
in-process server of the test stack (chdb), and once on a ClickHouse server;
SubmitEvents and the JetStream intake on real NATS."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy, StreamConfig

from bxb.metering.v1 import events_pb2, usage_events_pb2_grpc, usage_pb2, usage_pb2_grpc
from bxb.metering.v1 import usage_events_pb2 as pb
from deploy.embedded import Nats
from services.common import bus, grpc_server, tenancy, trust
from services.common.errors import error_info
from services.common.timestamps import from_proto, to_proto, utcnow
from services.metering import intake as intake_module
from services.metering import server as metering_server
from services.metering.backlog import IngestionBehind
from services.metering.intake import Intake
from services.metering.rejections import Rejections
from services.metering.store import EventStore
from tests.conftest import Infra, Stack, eventually, organization, unique

START = datetime(2026, 5, 1, tzinfo=UTC)
END = datetime(2026, 6, 1, tzinfo=UTC)


@pytest.fixture
async def channel(stack: Stack) -> AsyncIterator[grpc.aio.Channel]:
    async with stack.channel("metering") as channel:
        yield channel


@pytest.fixture
def events(channel) -> usage_events_pb2_grpc.EventServiceStub:
    return usage_events_pb2_grpc.EventServiceStub(channel)


@pytest.fixture
def usage(channel) -> usage_pb2_grpc.UsageServiceStub:
    return usage_pb2_grpc.UsageServiceStub(channel)


def usage_event(txn: str = "", customer: str = "cus_1", code: str = "api", **fields) -> pb.UsageEvent:
    fields.setdefault("timestamp", to_proto(START))
    return pb.UsageEvent(transaction_id=txn, customer_id=customer, code=code, **fields)


async def ingest(events, org: str, *batch: pb.UsageEvent) -> list[tuple[str, int]]:
    reply = await events.IngestEvents(pb.IngestEventsRequest(events=batch), metadata=tenancy.metadata(org))
    return [(r.transaction_id, r.outcome) for r in reply.results]


async def rejected(call) -> tuple[grpc.StatusCode, str, str]:
    """The status code, ErrorInfo reason and field of a call that must fail."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    info = error_info(caught.value)
    return caught.value.code(), info.reason, info.metadata.get("field", "")


def invalid(field: str, reason: str = "INVALID_ARGUMENT") -> tuple[grpc.StatusCode, str, str]:
    return grpc.StatusCode.INVALID_ARGUMENT, reason, field


def aggregate_request(**fields) -> usage_pb2.AggregateUsageRequest:
    request = {
        "customer_id": "cus_1",
        "code": "api",
        "aggregation": usage_pb2.AGGREGATION_SUM,
        "field_name": "v",
        "start_time": to_proto(START),
        "end_time": to_proto(END),
    }
    request.update(fields)
    return usage_pb2.AggregateUsageRequest(**{k: v for k, v in request.items() if v is not None})


async def aggregate(usage, org: str, **fields) -> tuple[str, int]:
    reply = await usage.AggregateUsage(aggregate_request(**fields), metadata=tenancy.metadata(org))
    return reply.value, reply.event_count


async def aggregate_values(usage, org: str, **fields) -> tuple[str, int, list[str]]:
    reply = await usage.AggregateUsage(aggregate_request(include_values=True, **fields), metadata=tenancy.metadata(org))
    return reply.value, reply.event_count, list(reply.values)


# IngestEvents


async def test_an_event_is_accepted_once_and_then_reported_duplicate(events, org: str):
    first = usage_event("txn_1", properties={"v": "1"})
    assert await ingest(events, org, first) == [("txn_1", pb.INGEST_OUTCOME_ACCEPTED)]
    again = usage_event("txn_1", properties={"v": "2"})
    fresh = usage_event("txn_2")
    assert await ingest(events, org, fresh, again) == [
        ("txn_2", pb.INGEST_OUTCOME_ACCEPTED),
        ("txn_1", pb.INGEST_OUTCOME_DUPLICATE),
    ]


async def test_the_server_assigns_a_transaction_id_and_the_receipt_time(events, org: str):
    before = utcnow()
    results = await ingest(events, org, usage_event(timestamp=None), usage_event(timestamp=None))
    (first, first_outcome), (second, second_outcome) = results
    assert first.startswith("evt_") and second.startswith("evt_") and first != second
    assert first_outcome == second_outcome == pb.INGEST_OUTCOME_ACCEPTED
    stored = await events.GetEvent(pb.GetEventRequest(transaction_id=first), metadata=tenancy.metadata(org))
    assert stored.timestamp == stored.ingest_time
    assert before - timedelta(milliseconds=1) <= from_proto(stored.timestamp) <= utcnow()


async def test_get_event_returns_the_stored_event(events, org: str):
    sent = usage_event("txn_1", properties={"v": "2340", "region": "eu"}, subscription_id="sub_1")
    await ingest(events, org, sent)
    got = await events.GetEvent(pb.GetEventRequest(transaction_id="txn_1"), metadata=tenancy.metadata(org))
    assert (got.transaction_id, got.customer_id, got.code, got.subscription_id) == ("txn_1", "cus_1", "api", "sub_1")
    assert dict(got.properties) == {"v": "2340", "region": "eu"}
    assert from_proto(got.timestamp) == START
    assert got.HasField("ingest_time")


async def test_get_event_of_an_unknown_or_foreign_id_is_not_found(stack: Stack, events, org: str):
    await ingest(events, org, usage_event("txn_1"))
    for who, txn in ((org, "txn_unknown"), (await organization(stack), "txn_1")):
        call = events.GetEvent(pb.GetEventRequest(transaction_id=txn), metadata=tenancy.metadata(who))
        assert await rejected(call) == (grpc.StatusCode.NOT_FOUND, "NOT_FOUND", "transaction_id")


async def test_a_call_without_an_organization_is_unauthenticated(events, usage):
    expected = (grpc.StatusCode.UNAUTHENTICATED, "MISSING_ORGANIZATION", "")
    assert await rejected(events.IngestEvents(pb.IngestEventsRequest(events=[usage_event("txn_1")]))) == expected
    assert await rejected(usage.AggregateUsage(aggregate_request())) == expected


@pytest.mark.parametrize("field", ["customer_id", "code"])
async def test_customer_and_code_are_required(events, org: str, field: str):
    event = usage_event("txn_1")
    event.ClearField(field)
    # The proto's rule, checked on the whole request: the event is named by its place.
    assert await rejected(ingest(events, org, event)) == invalid(f"events[0].{field}", "MISSING_FIELD")


@pytest.mark.parametrize("field", ["transaction_id", "customer_id", "code", "subscription_id"])
async def test_ids_are_at_most_200_characters(events, org: str, field: str):
    longest = usage_event("txn_1")
    setattr(longest, field, "x" * 200)
    assert [outcome for _, outcome in await ingest(events, org, longest)] == [pb.INGEST_OUTCOME_ACCEPTED]
    too_long = usage_event("txn_2")
    setattr(too_long, field, "y" * 201)
    assert await rejected(ingest(events, org, too_long)) == invalid(f"events[0].{field}", "INVALID_VALUE")


async def test_a_timestamp_more_than_5_minutes_ahead_is_refused(events, org: str):
    soon = usage_event("txn_1", timestamp=to_proto(utcnow() + timedelta(minutes=4)))
    assert await ingest(events, org, soon) == [("txn_1", pb.INGEST_OUTCOME_ACCEPTED)]
    later = usage_event("txn_2", timestamp=to_proto(utcnow() + timedelta(minutes=6)))
    assert await rejected(ingest(events, org, later)) == invalid("timestamp", "TIMESTAMP_IN_FUTURE")


async def test_properties_are_at_most_16_kib(events, org: str):
    largest = usage_event("txn_1", properties={"k": "x" * 16_383})
    assert await ingest(events, org, largest) == [("txn_1", pb.INGEST_OUTCOME_ACCEPTED)]
    too_large = usage_event("txn_2", properties={"k": "x" * 16_383, "l": ""})
    assert await rejected(ingest(events, org, too_large)) == invalid("properties", "PROPERTIES_TOO_LARGE")


async def test_a_batch_holds_1_to_500_events(events, org: str):
    assert await rejected(ingest(events, org)) == invalid("events")
    batch = [usage_event(f"txn_{i}") for i in range(501)]
    assert await rejected(ingest(events, org, *batch)) == invalid("events", "BATCH_TOO_LARGE")
    assert len(await ingest(events, org, *batch[:500])) == 500


def far_future(event: pb.UsageEvent) -> None:
    event.timestamp.CopyFrom(to_proto(datetime(2999, 1, 1, tzinfo=UTC)))


@pytest.mark.parametrize(
    ("spoil", "field", "reason"),
    [
        (lambda e: e.ClearField("code"), "events[3].code", "MISSING_FIELD"),
        (lambda e: e.ClearField("customer_id"), "events[3].customer_id", "MISSING_FIELD"),
        (lambda e: setattr(e, "transaction_id", "x" * 201), "events[3].transaction_id", "INVALID_VALUE"),
        (far_future, "events[3].timestamp", "TIMESTAMP_IN_FUTURE"),
        (lambda e: e.properties.update(k="x" * 16_384), "events[3].properties", "PROPERTIES_TOO_LARGE"),
    ],
)
async def test_a_bad_event_in_a_batch_is_named_by_index_and_nothing_is_stored(
    events, org: str, spoil, field: str, reason: str
):
    batch = [usage_event(f"txn_{i}") for i in range(5)]
    spoil(batch[3])
    assert await rejected(ingest(events, org, *batch)) == invalid(field, reason)
    call = events.GetEvent(pb.GetEventRequest(transaction_id="txn_0"), metadata=tenancy.metadata(org))
    assert await rejected(call) == (grpc.StatusCode.NOT_FOUND, "NOT_FOUND", "transaction_id")


# AggregateUsage


async def test_aggregate_usage_is_exact(stack: Stack, events, usage, org: str):
    later = to_proto(START + timedelta(seconds=1))
    await ingest(events, org, usage_event("t2", timestamp=later, properties={"v": "0.2"}))
    await ingest(events, org, usage_event("t1", properties={"v": "0.1"}))
    await ingest(events, org, usage_event("t3", timestamp=to_proto(END), properties={"v": "100"}))
    assert await aggregate(usage, org) == ("0.3", 2)
    assert await aggregate(usage, org, aggregation=usage_pb2.AGGREGATION_COUNT, field_name=None) == ("2", 2)
    assert await aggregate(usage, org, aggregation=usage_pb2.AGGREGATION_MAX) == ("0.2", 2)
    assert await aggregate(usage, org, aggregation=usage_pb2.AGGREGATION_UNIQUE_COUNT) == ("2", 2)
    assert await aggregate(usage, org, aggregation=usage_pb2.AGGREGATION_LATEST) == ("0.2", 2)
    assert await aggregate(usage, await organization(stack)) == ("0", 0)


async def test_include_values_lists_each_events_value_in_time_order(events, usage, org: str):
    at = [to_proto(START + timedelta(seconds=s)) for s in range(4)]
    await ingest(events, org, usage_event("t3", timestamp=at[2], properties={"v": "abc"}))
    await ingest(
        events, org, usage_event("t2", timestamp=at[1], properties={"v": "0.2"}), usage_event("t4", timestamp=at[3])
    )
    await ingest(events, org, usage_event("t1", timestamp=at[0], properties={"v": "0.1"}))
    await ingest(events, org, usage_event("t1", timestamp=at[3], properties={"v": "100"}))  # a duplicate
    listed = ["0.1", "0.2", "0", "0"]  # "abc" and a missing value are 0
    assert await aggregate_values(usage, org) == ("0.3", 4, listed)
    assert await aggregate_values(usage, org, aggregation=usage_pb2.AGGREGATION_LATEST) == ("0.2", 4, listed)
    reply = await usage.AggregateUsage(aggregate_request(), metadata=tenancy.metadata(org))
    assert (reply.value, list(reply.values)) == ("0.3", [])  # listed only when asked for
    assert await aggregate_values(usage, org, end_time=to_proto(START)) == ("0", 0, [])


async def test_an_empty_window_aggregates_to_zero(events, usage, org: str):
    await ingest(events, org, usage_event("t1", properties={"v": "5"}))
    assert await aggregate(usage, org, end_time=to_proto(START)) == ("0", 0)


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"aggregation": 99}, "aggregation"),
        ({"customer_id": None}, "customer_id"),
        ({"code": None}, "code"),
        ({"start_time": None}, "start_time"),
        ({"end_time": None}, "end_time"),
        ({"end_time": to_proto(START - timedelta(milliseconds=1))}, "end_time"),
        ({"aggregation": usage_pb2.AGGREGATION_COUNT, "field_name": None, "include_values": True}, "include_values"),
        ({"aggregation": usage_pb2.AGGREGATION_COUNT, "include_values": True}, "include_values"),
    ],
)
async def test_aggregate_usage_validation_names_the_field(usage, org: str, fields: dict, field: str):
    assert await rejected(aggregate(usage, org, **fields)) == invalid(field)


async def test_a_query_without_aggregation_needs_a_metric_the_catalog_defines(usage, org: str):
    unset = aggregate(usage, org, aggregation=usage_pb2.AGGREGATION_UNSPECIFIED)
    assert await rejected(unset) == (grpc.StatusCode.NOT_FOUND, "NOT_FOUND", "code")


# The same service on a ClickHouse server (Remote transport).


async def test_the_service_runs_on_a_clickhouse_server(clickhouse_url: str, tmp_path: Path):
    # Its own NATS: metering processes sharing a NATS share one queue, which
    # must feed one ClickHouse, and the stack's metering has its own.
    nats = Nats(tmp_path / "nats", durable=False)
    nats.start()
    settings = metering_server.Settings("127.0.0.1:0", clickhouse_url, tmp_path / "unused", "bxb_grpc", nats.url)
    service = metering_server.build(settings)
    server, port = await grpc_server.start(service, settings.address)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            events = usage_events_pb2_grpc.EventServiceStub(channel)
            org = unique("org")
            sent = [usage_event("t1", properties={"v": "0.1"}), usage_event("t2", properties={"v": "0.2"})]
            outcomes = [outcome for _, outcome in await ingest(events, org, *sent, sent[0])]
            assert outcomes == [pb.INGEST_OUTCOME_ACCEPTED, pb.INGEST_OUTCOME_ACCEPTED, pb.INGEST_OUTCOME_DUPLICATE]
            usage = usage_pb2_grpc.UsageServiceStub(channel)
            assert await aggregate(usage, org) == ("0.3", 2)
            assert await aggregate_values(usage, org) == ("0.3", 2, ["0.1", "0.2"])
            got = await events.GetEvent(pb.GetEventRequest(transaction_id="t2"), metadata=tenancy.metadata(org))
            assert dict(got.properties) == {"v": "0.2"}
            queued = pb.SubmitEventsRequest(events=[usage_event("t3", properties={"v": "0.4"})])
            await events.SubmitEvents(queued, metadata=tenancy.metadata(org))
            assert await aggregate(usage, org) == ("0.7", 3)  # the queue is drained first
            computed = usage_pb2.ComputeUsageRequest(
                customer_id="cus_1", metric_code="api", start_time=to_proto(START), end_time=to_proto(END)
            )
            code, _, _ = await rejected(usage.ComputeUsage(computed, metadata=tenancy.metadata(org)))
            assert code == grpc.StatusCode.UNAVAILABLE  # no catalog here to say how "api" is aggregated
    finally:
        await grpc_server.stop(service, server, grace=1)
        nats.stop()
    assert not (tmp_path / "unused").exists()  # nothing was embedded


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    names = ("BXB_METERING_ADDRESS", "BXB_CLICKHOUSE_URL", "BXB_CHDB_PATH", "BXB_CLICKHOUSE_DATABASE", "BXB_NATS_URL")
    tuning = ("BXB_USAGE_SETTLE_TIMEOUT_SECONDS", "BXB_CATALOG_ADDRESS", "BXB_METERING_WRITE_LINGER_SECONDS")
    for name in (*names, *tuning, "BXB_CLICKHOUSE_CLUSTER"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("BXB_HOME", str(tmp_path))
    defaults = metering_server.Settings.from_env()
    assert defaults == metering_server.Settings(
        "127.0.0.1:50052", "", tmp_path / "clickhouse", "bxb", "nats://127.0.0.1:4222", 10.0, "127.0.0.1:50051", 0.05
    )
    monkeypatch.setenv("BXB_METERING_ADDRESS", "0.0.0.0:7000")
    monkeypatch.setenv("BXB_CLICKHOUSE_URL", "http://ch:8123")
    monkeypatch.setenv("BXB_CHDB_PATH", str(tmp_path / "chdb"))
    monkeypatch.setenv("BXB_CLICKHOUSE_DATABASE", "usage")
    monkeypatch.setenv("BXB_NATS_URL", "nats://nats:4222")
    monkeypatch.setenv("BXB_USAGE_SETTLE_TIMEOUT_SECONDS", "2.5")
    monkeypatch.setenv("BXB_CATALOG_ADDRESS", "catalog:50051")
    monkeypatch.setenv("BXB_METERING_WRITE_LINGER_SECONDS", "0.1")
    configured = metering_server.Settings.from_env()
    assert configured == metering_server.Settings(
        "0.0.0.0:7000", "http://ch:8123", tmp_path / "chdb", "usage", "nats://nats:4222", 2.5, "catalog:50051", 0.1
    )
    monkeypatch.setenv("BXB_CLICKHOUSE_CLUSTER", "prod")
    assert metering_server.Settings.from_env().clickhouse_cluster == "prod"


# SubmitEvents and the intake: per-event validation, queued events stored once,
# backfill written at once, usage queries that wait for the queue.


async def submit(events, org: str, *batch: pb.UsageEvent, backfill: bool = False) -> list[tuple[str, int, str]]:
    request = pb.SubmitEventsRequest(events=batch, backfill=backfill)
    reply = await events.SubmitEvents(request, metadata=tenancy.metadata(org))
    return [(r.transaction_id, r.outcome, r.error.field) for r in reply.results]


async def test_queued_events_count_at_once_for_usage_and_lookups(events, usage, org: str):
    sent = [usage_event(f"t{i}", properties={"v": str(i)}) for i in range(1, 4)]
    assert await submit(events, org, *sent) == [(f"t{i}", pb.INGEST_OUTCOME_QUEUED, "") for i in range(1, 4)]
    # No waiting in the test: the usage query itself waits for the queue.
    assert await aggregate(usage, org) == ("6", 3)
    got = await events.GetEvent(pb.GetEventRequest(transaction_id="t2"), metadata=tenancy.metadata(org))
    assert dict(got.properties) == {"v": "2"}


async def test_a_key_counts_once_across_queue_backfill_and_direct_ingestion(events, usage, org: str):
    await submit(events, org, usage_event("k1", properties={"v": "5"}))
    await submit(events, org, usage_event("k1", properties={"v": "50"}))  # a retry through the queue
    assert await submit(events, org, usage_event("k1", properties={"v": "500"}), backfill=True) == [
        ("k1", pb.INGEST_OUTCOME_DUPLICATE, "")
    ]
    assert await ingest(events, org, usage_event("k1")) == [("k1", pb.INGEST_OUTCOME_DUPLICATE)]
    assert await aggregate(usage, org) == ("5", 1)


async def test_one_bad_event_never_blocks_the_others(events, usage, org: str):
    future = usage_event("late", timestamp=to_proto(utcnow() + timedelta(hours=1)))
    nameless = usage_event("nameless")
    nameless.ClearField("code")
    good = usage_event("good", properties={"v": "7"})
    results = await submit(events, org, future, good, nameless)
    assert results == [
        # each result is its event's: its field is named within the event, its place is its index
        ("late", pb.INGEST_OUTCOME_REJECTED, "timestamp"),
        ("good", pb.INGEST_OUTCOME_QUEUED, ""),
        ("nameless", pb.INGEST_OUTCOME_REJECTED, "code"),
    ]
    reply = await events.SubmitEvents(pb.SubmitEventsRequest(events=[future]), metadata=tenancy.metadata(org))
    assert (reply.results[0].error.reason, reply.results[0].error.field) == ("TIMESTAMP_IN_FUTURE", "timestamp")
    assert await aggregate(usage, org) == ("7", 1)


async def test_a_batch_of_only_bad_events_queues_nothing(events, org: str):
    nameless = usage_event("x")
    nameless.ClearField("customer_id")
    for backfill in (False, True):
        assert await submit(events, org, nameless, backfill=backfill) == [
            ("x", pb.INGEST_OUTCOME_REJECTED, "customer_id")
        ]


async def test_backfill_is_stored_before_the_answer(events, usage, org: str):
    old = usage_event("b1", properties={"v": "2"})
    assert await submit(events, org, old, old, backfill=True) == [
        ("b1", pb.INGEST_OUTCOME_ACCEPTED, ""),
        ("b1", pb.INGEST_OUTCOME_DUPLICATE, ""),
    ]
    assert await aggregate(usage, org) == ("2", 1)


async def test_a_call_holds_1_to_500_events(events, org: str):
    call = events.SubmitEvents(pb.SubmitEventsRequest(), metadata=tenancy.metadata(org))
    assert await rejected(call) == (
        pytest.importorskip("grpc").StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
        "events",
    )
    too_many = pb.SubmitEventsRequest(events=[usage_event(f"t{i}") for i in range(501)])
    call = events.SubmitEvents(too_many, metadata=tenancy.metadata(org))
    assert (await rejected(call))[1:] == ("TOO_MANY_ITEMS", "events")  # the proto's rule


async def test_only_the_gateway_records_the_events_it_refused(events, org: str):
    """`rejected` is the gateway's to say: another caller may not plant
    refusals in an organization's listing (nothing is recorded)."""
    refusal = pb.RejectedEvent(
        event=usage_event("forged", customer="cus_forged"), error=pb.EventError(reason="INVALID_VALUE", field="value")
    )
    request = pb.SubmitEventsRequest(rejected=[refusal])
    for forged in [tenancy.metadata(org), (*tenancy.metadata(org), ("x-bxb-gateway", "0" * 64))]:
        assert await rejected(events.SubmitEvents(request, metadata=forged)) == (
            grpc.StatusCode.PERMISSION_DENIED,
            "PERMISSION_DENIED",
            "rejected",
        )
    listing = pb.ListRejectedEventsRequest(customer_id="cus_forged")
    assert not (await events.ListRejectedEvents(listing, metadata=tenancy.metadata(org))).rejected_events
    await events.SubmitEvents(request, metadata=tenancy.metadata(org) + trust.metadata())
    [recorded] = (await events.ListRejectedEvents(listing, metadata=tenancy.metadata(org))).rejected_events
    assert (recorded.event.transaction_id, recorded.error.field) == ("forged", "value")


async def test_a_redelivered_message_stores_nothing_twice(clickhouse, infra: Infra):
    store = EventStore(clickhouse, "bxb_redelivery")
    await store.create_schema()
    unopened = bus.Bus(infra.nats.url, unique("unopened"))  # the message is handed over directly
    intake = Intake(store, Rejections(clickhouse, "bxb_redelivery"), unopened)
    message = events_pb2.EventsAccepted(
        event_id="evb_1", organization_id="org_1", occur_time=to_proto(utcnow()), events=[usage_event("r1")]
    ).SerializeToString()
    for _ in range(2):  # a crash between the write and the ack redelivers it
        await intake.store_message(intake_module.SUBJECT, message)
    assert (
        await store.aggregate("org_1", "cus_1", "api", "count", "", utcnow() - timedelta(days=3650), utcnow())
    ).count == 1


async def test_a_query_waits_no_longer_than_the_settle_timeout(tmp_path: Path, clickhouse):
    """With no process consuming, queued events stay queued: the query says so."""
    nats = Nats(tmp_path / "nats", durable=False)
    nats.start()
    connection = await bus.Bus.connect(nats.url, "test")
    try:
        await connection.ensure_stream(intake_module.STREAM)
        await connection.js.add_consumer(
            intake_module.STREAM.name,
            ConsumerConfig(durable_name=intake_module.DURABLE, ack_policy=AckPolicy.EXPLICIT),
        )
        unconsumed = EventStore(clickhouse, "bxb_unconsumed"), Rejections(clickhouse, "bxb_unconsumed")
        intake = Intake(*unconsumed, connection, settle_timeout=0.05)
        await intake.settled("org_1")  # nothing queued yet
        await intake.queue("org_1", [usage_event("q1", timestamp=to_proto(utcnow()))], utcnow())
        with pytest.raises(IngestionBehind):
            await asyncio.wait_for(intake.settled("org_1"), 5)
        await asyncio.wait_for(intake.settled("org_2"), 5)  # another organization's backlog is not its own
    finally:
        await connection.close()
        nats.stop()


async def test_an_older_version_s_queue_is_taken_over_with_what_it_holds(tmp_path: Path):
    """Before each organization had its subject, one subject held every
    message and the consumer filtered on it: an upgrade keeps both."""
    nats = Nats(tmp_path / "nats", durable=False)
    nats.start()
    connection = await bus.Bus.connect(nats.url, "upgrade")
    try:
        old = intake_module.SUBJECT
        await connection.js.add_stream(
            StreamConfig(name=intake_module.STREAM.name, subjects=[old], retention=RetentionPolicy.WORK_QUEUE)
        )
        config = ConsumerConfig(durable_name=intake_module.DURABLE, filter_subject=old, ack_policy=AckPolicy.EXPLICIT)
        await connection.js.add_consumer(intake_module.STREAM.name, config)
        await connection.publish(old, b"queued before", unique("m"))
        handled = []

        async def handler(subject: str, payload: bytes) -> None:
            handled.append(payload)

        await connection.consume(intake_module.STREAM, intake_module.DURABLE, None, handler, in_order=False)
        await connection.publish(intake_module.subject_of("org_1"), b"queued after", unique("m"))

        async def both():
            assert sorted(handled) == [b"queued after", b"queued before"]

        await eventually(both)
    finally:
        await connection.close()
        nats.stop()


async def test_a_submitted_event_with_an_overlong_id_is_rejected_alone(events, org: str):
    too_long = usage_event("long", customer="c" * 201)
    assert await submit(events, org, too_long, usage_event("fine")) == [
        ("long", pb.INGEST_OUTCOME_REJECTED, "customer_id"),
        ("fine", pb.INGEST_OUTCOME_QUEUED, ""),
    ]
