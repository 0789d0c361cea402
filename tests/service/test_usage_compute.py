"""POST /v1/usage/compute and metering's UsageService.ComputeUsage: the exact usage of
a customer and metric over a window, scoped to a subscription as its invoice
counts it."""

from __future__ import annotations

import grpc
import pytest

from bxb.metering.v1 import usage_pb2, usage_pb2_grpc
from services.common import peers, tenancy
from services.common.errors import Unavailable, error_info
from services.common.timestamps import to_proto
from services.metering.definitions import Definitions
from tests.conftest import Stack, Tenant, unique
from tests.service.invoicing_helpers import at, create_plan, subscribe
from tests.service.pricing_helpers import Desk, open_desk

SEPTEMBER = {"period_start": "2026-09-01T00:00:00Z", "period_end": "2026-10-01T00:00:00Z"}


@pytest.fixture
async def desk(stack: Stack, tenant: Tenant):
    async with open_desk(stack, tenant) as opened:
        yield opened


async def compute(t: Tenant, **body):
    return await t.http.post("/v1/usage/compute", json=body)


async def test_usage_of_every_event_of_the_customer_in_the_window(tenant: Tenant, desk: Desk):
    body = {"code": "tokens", "name": "Tokens", "aggregation_type": "sum", "field_name": "tokens"}
    assert (await tenant.http.post("/v1/billable_metrics", json=body)).status_code == 201
    await desk.send("cus", "tokens", "2026-09-01", tokens=40000)  # first instant counts
    await desk.send("cus", "tokens", "2026-09-30T23:59:59.999Z", "sub_any", tokens=45000)
    await desk.send("cus", "tokens", "2026-10-01", tokens=7)  # the end is exclusive
    await desk.send("other", "tokens", "2026-09-02", tokens=1)

    response = await compute(tenant, customer_id="cus", metric_key="tokens", **SEPTEMBER)

    assert response.status_code == 200, response.text
    assert response.json() == {
        "customer_id": "cus",
        "metric_key": "tokens",
        "subscription_id": None,
        **SEPTEMBER,
        "value": "85000",
        "events_count": 2,
        "meta": {"consistency": "exact"},
    }
    by_code = await compute(tenant, customer_id="cus", code="tokens", **SEPTEMBER)
    assert by_code.json() == response.json()


async def test_a_subscription_counts_its_own_events_and_the_unassigned_ones_it_owns(tenant: Tenant, desk: Desk):
    charges = [{"billable_metric_code": "api_requests", "charge_model": "standard", "properties": {"amount": "1"}}]
    await create_plan(tenant, "api", charges)
    # Subscribed through the catalog: computing catches the projection up first.
    first = await subscribe(tenant, "cus", "api", "2026-09-01T00:00:00Z")
    second = await subscribe(tenant, "cus", "api", "2026-09-10T00:00:00Z")
    await desk.send("cus", "api_requests", "2026-09-12", tokens=100)  # the earlier start owns it
    await desk.send("cus", "api_requests", "2026-09-13", first["id"], tokens=10)
    await desk.send("cus", "api_requests", "2026-09-14", second["id"], tokens=1)

    for sub, value, count in ((first, "110", 2), (second, "1", 1)):
        response = await compute(
            tenant, customer_id="cus", metric_key="api_requests", subscription_id=sub["id"], **SEPTEMBER
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert (body["subscription_id"], body["value"], body["events_count"]) == (sub["id"], value, count)

    everything = await compute(tenant, customer_id="cus", metric_key="api_requests", **SEPTEMBER)
    assert (everything.json()["value"], everything.json()["events_count"]) == ("111", 3)


async def test_usage_is_read_as_the_catalog_defines_the_metric_over_grpc_too(stack: Stack, tenant: Tenant):
    body = {"code": "peak", "name": "Peak", "aggregation_type": "sum", "field_name": "tokens"}
    assert (await tenant.http.post("/v1/billable_metrics", json=body)).status_code == 201
    for day, tokens in (("2026-09-02", 5), ("2026-09-03", 7)):
        event = {"transaction_id": unique("txn"), "customer_id": "cus", "code": "peak", "timestamp": day}
        event["properties"] = {"tokens": tokens}
        assert (await tenant.http.post("/v1/events", json=event)).status_code == 200
    meta = tenancy.metadata(tenant.organization_id)
    window = {"start_time": to_proto(at("2026-09-01")), "end_time": to_proto(at("2026-10-01"))}
    asked = {"customer_id": "cus", "code": "peak", **window}
    async with grpc.aio.insecure_channel(stack.metering) as channel:
        usage = usage_pb2_grpc.UsageServiceStub(channel)
        computed = await usage.ComputeUsage(
            usage_pb2.ComputeUsageRequest(customer_id="cus", metric_code="peak", **window), metadata=meta
        )
        assert (computed.value, computed.event_count) == ("12", 2)
        # Unset: the metric's own aggregation and field.
        summed = await usage.AggregateUsage(usage_pb2.AggregateUsageRequest(**asked), metadata=meta)
        assert (summed.value, summed.event_count) == ("12", 2)
        # MAX of a SUM metric, or another field, is refused, never answered with the sum.
        for request, field, reason in (
            (
                usage_pb2.AggregateUsageRequest(**asked, aggregation=usage_pb2.AGGREGATION_MAX),
                "aggregation",
                "AGGREGATION_MISMATCH",
            ),
            (
                usage_pb2.SummarizeUsageRequest(**asked, aggregation=usage_pb2.AGGREGATION_SUM, field_name="other"),
                "field_name",
                "FIELD_MISMATCH",
            ),
        ):
            method = (
                usage.AggregateUsage if isinstance(request, usage_pb2.AggregateUsageRequest) else usage.SummarizeUsage
            )
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await method(request, metadata=meta)
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert (error_info(refused.value).reason, error_info(refused.value).metadata["field"]) == (reason, field)
        batch = usage_pb2.BatchAggregateUsageRequest(
            requests=[
                usage_pb2.AggregateUsageRequest(**asked),
                usage_pb2.AggregateUsageRequest(**asked, aggregation=usage_pb2.AGGREGATION_COUNT),
            ]
        )
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await usage.BatchAggregateUsage(batch, metadata=meta)
        assert error_info(refused.value).metadata["field"] == "requests[1].aggregation"
        with pytest.raises(grpc.aio.AioRpcError) as unknown:
            await usage.UsageHistogram(
                usage_pb2.UsageHistogramRequest(**{**asked, "code": "nope"}, interval=usage_pb2.HISTOGRAM_INTERVAL_DAY),
                metadata=meta,
            )
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    # REST asks the same service and gets the same number.
    rest = await compute(tenant, customer_id="cus", metric_key="peak", **SEPTEMBER)
    assert rest.json()["value"] == "12"


async def test_refusals_name_the_field_as_the_client_spelled_it(tenant: Tenant):
    await create_plan(
        tenant, "req", [{"billable_metric_code": "requests", "charge_model": "standard", "properties": {"amount": "1"}}]
    )
    sub = await subscribe(tenant, "cus", "req", "2026-09-01T00:00:00Z")
    cases = [
        ({"customer_id": "cus", "metric_key": "nope", **SEPTEMBER}, 404, "metric_key"),
        ({"customer_id": "cus", "code": "calls", "subscription_id": sub["id"], **SEPTEMBER}, 400, "code"),
        (
            {"customer_id": "cus", "code": "requests", "subscription_id": "sub_nope", **SEPTEMBER},
            404,
            "subscription_id",
        ),
        (
            {"customer_id": "other", "code": "requests", "subscription_id": sub["id"], **SEPTEMBER},
            404,
            "subscription_id",
        ),
        (
            {"customer_id": "cus", "code": "requests", **SEPTEMBER, "period_end": SEPTEMBER["period_start"]},
            400,
            "period_end",
        ),
        ({"customer_id": "cus", "code": "requests", "metric_key": "requests", **SEPTEMBER}, 400, "code"),
        ({"customer_id": "cus", **SEPTEMBER}, 400, "metric_key"),
        ({"customer_id": "cus", "code": "requests", "period_start": "2026-09-01"}, 400, "period_end"),
    ]
    for body, status, field in cases:
        response = await compute(tenant, **body)
        assert response.status_code == status, (body, response.text)
        assert response.json()["error"]["field"] == field, body
    plain = await compute(tenant, customer_id="cus", code="calls", subscription_id=sub["id"], **SEPTEMBER)
    assert "does not charge metric 'calls'" in plain.json()["error"]["message"]


async def test_the_service_requires_customer_metric_and_window(stack: Stack, tenant: Tenant):
    meta = tenancy.metadata(tenant.organization_id)
    window = {"start_time": to_proto(at("2026-09-01")), "end_time": to_proto(at("2026-10-01"))}
    cases = [
        (usage_pb2.ComputeUsageRequest(metric_code="m", **window), "customer_id"),
        (usage_pb2.ComputeUsageRequest(customer_id="c", **window), "metric_code"),
        (usage_pb2.ComputeUsageRequest(customer_id="c", metric_code="m"), "start_time"),
        (
            usage_pb2.ComputeUsageRequest(customer_id="c", metric_code="m", start_time=window["start_time"]),
            "end_time",
        ),
        (
            usage_pb2.ComputeUsageRequest(
                customer_id="c", metric_code="m", start_time=window["start_time"], end_time=window["start_time"]
            ),
            "end_time",
        ),
    ]
    async with grpc.aio.insecure_channel(stack.metering) as channel:
        stub = usage_pb2_grpc.UsageServiceStub(channel)
        for request, field in cases:
            with pytest.raises(grpc.aio.AioRpcError) as failure:
                await stub.ComputeUsage(request, metadata=meta)
            assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert error_info(failure.value).metadata["field"] == field


async def test_ownership_reads_every_page_of_the_customers_subscriptions(stack: Stack, tenant: Tenant):
    charges = [{"billable_metric_code": "api_requests", "charge_model": "standard", "properties": {"amount": "1"}}]
    await create_plan(tenant, "paged", charges)
    first = await subscribe(tenant, "cus", "paged", "2026-09-01T00:00:00Z")
    second = await subscribe(tenant, "cus", "paged", "2026-09-10T00:00:00Z")
    catalog = peers.Catalog(stack.catalog)
    try:
        definitions = Definitions(catalog, page=1)  # one subscription a call
        window = (at("2026-09-01"), at("2026-10-01"))
        _, windows = await definitions.scope(tenant.organization_id, "cus", second["id"], "api_requests", window)
        assert windows == []  # the earlier one owns the unassigned events
        _, windows = await definitions.scope(tenant.organization_id, "cus", first["id"], "api_requests", window)
        assert windows == [window]
    finally:
        await catalog.close()


async def test_an_unreachable_catalog_is_not_mistaken_for_an_unknown_metric(tenant: Tenant):
    catalog = peers.Catalog("127.0.0.1:1", timeout=0.5)
    window = (at("2026-09-01"), at("2026-10-01"))
    try:
        for call in (
            Definitions(catalog).metric(tenant.organization_id, "tokens"),
            Definitions(catalog).scope(tenant.organization_id, "cus", "sub_1", "tokens", window),
        ):
            with pytest.raises(Unavailable):
                await call
        named = usage_pb2.AggregateUsageRequest(code="tokens", aggregation=usage_pb2.AGGREGATION_COUNT)
        await Definitions(catalog).settle(tenant.organization_id, [named], [""])  # served as asked
        with pytest.raises(Unavailable):
            await Definitions(catalog).settle(tenant.organization_id, [usage_pb2.AggregateUsageRequest(code="t")], [""])
    finally:
        await catalog.close()
