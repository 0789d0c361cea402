"""POST /v1/usage/compute and InvoiceService.ComputeUsage: the exact usage of
a customer and metric over a window, scoped to a subscription as its invoice
counts it."""

from __future__ import annotations

import grpc
import pytest

from bxb.catalog.v1 import billable_metrics_pb2
from bxb.invoicing.v1 import invoices_pb2, invoices_pb2_grpc
from bxb.metering.v1 import usage_pb2_grpc
from services.common import tenancy
from services.common.errors import error_info
from services.common.timestamps import to_proto
from services.invoicing.calculations import Pricing
from services.invoicing.fees import FeeCalculator
from services.invoicing.projection import SubscriptionProjection
from tests.conftest import Stack, Tenant, unique
from tests.service.invoicing_helpers import InvoicingDb, at, create_plan, subscribe
from tests.service.pricing_helpers import Desk, charge, metric, open_desk, plan

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


async def test_the_metric_of_a_customer_plan_needs_no_catalog_entry(tenant: Tenant, desk: Desk):
    # The plan's snapshot of a count metric the catalog never had.
    counted = metric(unique("snap"), "Snap", billable_metrics_pb2.AGGREGATION_TYPE_COUNT, "")
    await desk.subscribe("cus", plan(charge(counted)), "2026-09-01")
    await desk.send("cus", counted.code, "2026-09-02", tokens=5)
    await desk.send("cus", counted.code, "2026-09-03", tokens=6)

    response = await compute(tenant, customer_id="cus", metric_key=counted.code, **SEPTEMBER)

    assert (response.json()["value"], response.json()["events_count"]) == ("2", 2)
    unknown = await compute(tenant, customer_id="someone", metric_key=counted.code, **SEPTEMBER)
    assert unknown.status_code == 404
    assert unknown.json()["error"]["field"] == "metric_key"


async def test_refusals_name_the_field_as_the_client_spelled_it(tenant: Tenant, desk: Desk):
    sub = await desk.subscribe("cus", plan(charge()), "2026-09-01")
    cases = [
        ({"customer_id": "cus", "metric_key": "nope", **SEPTEMBER}, 404, "metric_key"),
        ({"customer_id": "cus", "code": "calls", "subscription_id": sub.id, **SEPTEMBER}, 400, "code"),
        (
            {"customer_id": "cus", "code": "requests", "subscription_id": "sub_nope", **SEPTEMBER},
            404,
            "subscription_id",
        ),
        ({"customer_id": "other", "code": "requests", "subscription_id": sub.id, **SEPTEMBER}, 404, "subscription_id"),
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
    plain = await compute(tenant, customer_id="cus", code="calls", subscription_id=sub.id, **SEPTEMBER)
    assert "does not charge metric 'calls'" in plain.json()["error"]["message"]


async def test_the_service_requires_customer_metric_and_window(stack: Stack, tenant: Tenant):
    meta = tenancy.metadata(tenant.organization_id)
    window = {"start_time": to_proto(at("2026-09-01")), "end_time": to_proto(at("2026-10-01"))}
    cases = [
        (invoices_pb2.ComputeUsageRequest(metric_code="m", **window), "customer_id"),
        (invoices_pb2.ComputeUsageRequest(customer_id="c", **window), "metric_code"),
        (invoices_pb2.ComputeUsageRequest(customer_id="c", metric_code="m"), "start_time"),
        (
            invoices_pb2.ComputeUsageRequest(customer_id="c", metric_code="m", start_time=window["start_time"]),
            "end_time",
        ),
    ]
    async with grpc.aio.insecure_channel(stack.invoicing) as channel:
        stub = invoices_pb2_grpc.InvoiceServiceStub(channel)
        for request, field in cases:
            with pytest.raises(grpc.aio.AioRpcError) as failure:
                await stub.ComputeUsage(request, metadata=meta)
            assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert error_info(failure.value).metadata["field"] == field


async def test_an_unreachable_catalog_is_not_mistaken_for_an_unknown_metric(stack: Stack, tenant: Tenant):
    db = InvoicingDb(stack)
    async with grpc.aio.insecure_channel(stack.metering) as metering, grpc.aio.insecure_channel("127.0.0.1:1") as dead:
        fees = FeeCalculator(usage_pb2_grpc.UsageServiceStub(metering), db.sessions)
        pricing = Pricing(db.sessions, fees, SubscriptionProjection(db.sessions, catalog=dead, timeout=0.5))
        request = invoices_pb2.ComputeUsageRequest(
            customer_id="cus",
            metric_code="tokens",
            start_time=to_proto(at("2026-09-01")),
            end_time=to_proto(at("2026-10-01")),
        )
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await pricing.compute_usage(tenant.organization_id, request)
    await db.close()
    assert failure.value.code() == grpc.StatusCode.UNAVAILABLE
