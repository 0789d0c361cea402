"""Numbers through the whole path: a property a metric adds up is checked
like the top-level value when the event arrives, ClickHouse reads every
accepted number as Python does, and no total can wrap."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import grpc
import pytest

from bxb.metering.v1 import usage_events_pb2 as pb
from bxb.metering.v1 import usage_events_pb2_grpc
from services.common import tenancy
from services.common.errors import error_info
from services.common.timestamps import to_proto
from services.metering import rollups
from services.metering.clickhouse import ClickHouse
from services.metering.events import outcome_of, submit_result
from services.metering.store import Event, EventStore, Unstorable
from tests.conftest import Stack, Tenant
from tests.unit.test_metering_numbers import ACCEPTED

START = datetime(2026, 3, 1, tzinfo=UTC)
END = datetime(2026, 4, 1, tzinfo=UTC)


async def test_clickhouse_reads_every_accepted_number_as_python_does(clickhouse: ClickHouse):
    texts = list(ACCEPTED)
    [[read]] = await clickhouse.query(
        "SELECT arrayMap(t -> toString(toDecimal128OrNull(t, 12)), {texts:Array(String)})", {"texts": texts}
    )
    assert [Decimal(r) for r in read] == list(ACCEPTED.values())


async def test_totals_beyond_decimal128_do_not_wrap(store: EventStore, org: str):
    big = "90000000000000000000000000"  # 9 x 10^25, the largest order a value may have
    events = [Event(f"t{n}", "cus_1", "api", START, {"v": big}, value=big) for n in range(3)]
    await store.ingest(org, events, END)
    total = Decimal(big) * 3
    for field in ("v", ""):
        assert (await store.aggregate(org, "cus_1", "api", "sum", field, START, END)).value == total
        summary = rollups.Summary("cus_1", "api", "sum", field, START, END)
        assert await store.summarize(org, summary) == (total, 3)


@pytest.fixture
async def tokens(tenant: Tenant) -> Tenant:
    metric = {"code": "api_requests", "name": "API", "aggregation_type": "sum", "field_name": "tokens"}
    assert (await tenant.http.post("/v1/billable_metrics", json=metric)).status_code == 201
    return tenant


def sent(key: str, tokens) -> dict:
    return {
        "transaction_id": key,
        "customer_id": "cus_1",
        "code": "api_requests",
        "timestamp": "2026-03-10T00:00:00Z",
        "properties": {"tokens": tokens},
    }


async def total(tenant: Tenant) -> str:
    body = {"customer_id": "cus_1", "metric_key": "api_requests", "period_start": "2026-03-01T00:00:00Z",
            "period_end": "2026-04-01T00:00:00Z"}  # fmt: skip
    response = await tenant.http.post("/v1/usage/compute", json=body)
    assert response.status_code == 200, response.text
    return response.json()["value"]


async def test_a_property_a_metric_adds_up_must_be_a_number_it_can_count(tokens: Tenant):
    bad = ["1e26", "abc", "1_000", " 7 ", "0.1234567890123"]
    events = [sent(f"b{n}", value) for n, value in enumerate(bad)] + [sent("good", "5"), sent("json", 1.5)]
    results = (await tokens.http.post("/v1/events/batch", json={"events": events})).json()["results"]
    assert [r["status"] for r in results] == [400] * 5 + [202, 202]
    assert {(r["reason"], r["field"]) for r in results[:5]} == {
        ("INVALID_NUMBER", f"events[{n}].properties.tokens") for n in range(5)
    }
    single = await tokens.http.post("/v1/events", json=sent("one", "abc"))
    error = single.json()["error"]
    assert (single.status_code, error["field"], error["reason"]) == (400, "properties.tokens", "INVALID_NUMBER")
    assert await total(tokens) == "6.5"
    listed = (await tokens.http.get("/v1/events", params={"status": "rejected"})).json()["events"]
    refused = sorted(e["transaction_id"] for e in listed if e["reason"] == "INVALID_NUMBER")
    assert refused == ["b0", "b1", "b2", "b3", "b4", "one"]


async def test_a_property_of_a_metric_that_reads_no_number_is_not_checked(tenant: Tenant):
    metric = {"code": "seats", "name": "Seats", "aggregation_type": "unique_count", "field_name": "tokens"}
    assert (await tenant.http.post("/v1/billable_metrics", json=metric)).status_code == 201
    response = await tenant.http.post("/v1/events", json={**sent("u1", "user a"), "code": "seats"})
    assert response.status_code == 200, response.text


async def test_direct_ingestion_refuses_such_a_property_too(stack: Stack, tokens: Tenant):
    event = pb.UsageEvent(
        transaction_id="d1", customer_id="cus_1", code="api_requests", properties={"tokens": "abc"},
        timestamp=to_proto(START),
    )  # fmt: skip
    async with stack.channel("metering") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await usage_events_pb2_grpc.EventServiceStub(channel).IngestEvents(
                pb.IngestEventsRequest(events=[event]), metadata=tenancy.metadata(tokens.organization_id)
            )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(refused.value).metadata["field"] == "properties.tokens"


def test_an_unstorable_event_is_answered_rejected_with_its_reason():
    assert outcome_of(Unstorable("refused")) == pb.INGEST_OUTCOME_REJECTED
    result = submit_result(Unstorable("ClickHouse refused the event: constraint"))
    assert (result.outcome, result.error.reason, result.error.message) == (
        pb.INGEST_OUTCOME_REJECTED,
        "UNSTORABLE",
        "ClickHouse refused the event: constraint",
    )
    assert [outcome_of(True), outcome_of(False)] == [pb.INGEST_OUTCOME_ACCEPTED, pb.INGEST_OUTCOME_DUPLICATE]
