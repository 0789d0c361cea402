"""References: which new events name a metric or customer the catalog lacks,
asked of the real catalog service."""

from __future__ import annotations

from datetime import UTC, datetime

import grpc
import pytest

from bxb.metering.v1 import usage_pb2, usage_pb2_grpc
from deploy.embedded import free_port
from services.common import tenancy
from services.common.timestamps import to_proto
from services.metering import references as references_module
from services.metering.references import References
from services.metering.store import Event
from tests.conftest import Stack, Tenant

AT = datetime(2026, 3, 1, tzinfo=UTC)


def event(customer: str, code: str) -> Event:
    return Event(transaction_id=f"{customer}-{code}", customer_id=customer, code=code, timestamp=AT, properties={})


async def known(tenant: Tenant) -> None:
    metric = {"key": "api_calls", "aggregation_type": "count"}
    assert (await tenant.http.post("/v1/metrics", json=metric)).status_code == 201
    assert (await tenant.http.post("/v1/customers", json={"id": "cus_1"})).status_code == 201


async def test_unknown_metrics_and_customers_are_reported_once_each_event(stack: Stack, tenant: Tenant):
    await known(tenant)
    org = tenant.organization_id
    async with stack.channel("catalog") as channel:
        refs = References(channel)
        events = [
            event("cus_1", "api_calls"),
            event("cus_1", "nope"),
            event("cus_2", "api_calls"),
            event("cus_2", "nope"),
        ]
        found = await refs.unknown(org, events)
        assert [(r.event.transaction_id, r.error.reason, r.stored) for r in found] == [
            ("cus_1-nope", "UNKNOWN_METRIC", True),
            ("cus_2-api_calls", "CUSTOMER_NOT_FOUND", True),
            ("cus_2-nope", "UNKNOWN_METRIC", True),  # the metric is reported first
        ]
        assert await refs.unknown("org_other", [event("cus_1", "api_calls")])  # names are per organization


async def test_known_names_are_remembered_for_the_ttl(stack: Stack, tenant: Tenant, monkeypatch: pytest.MonkeyPatch):
    await known(tenant)
    org = tenant.organization_id
    async with stack.channel("catalog") as channel:
        remembered, forgetful = References(channel), References(channel, ttl=0)
        for refs in (remembered, forgetful):
            assert await refs.unknown(org, [event("cus_1", "api_calls")]) == []
        monkeypatch.setattr(references_module, "KEPT", 1)
        bounded = References(channel)
        assert await bounded.unknown(org, [event("cus_1", "api_calls")]) == []
        assert len(bounded._known) == 1  # two names known, the oldest went first
        assert (await tenant.http.delete("/v1/metrics/api_calls")).status_code in (200, 204)
        assert await remembered.unknown(org, [event("cus_1", "api_calls")]) == []  # still remembered
        assert [r.error.reason for r in await forgetful.unknown(org, [event("cus_1", "api_calls")])] == [
            "UNKNOWN_METRIC"
        ]


async def test_an_unreachable_catalog_flags_nothing():
    async with grpc.aio.insecure_channel(f"127.0.0.1:{free_port()}") as channel:
        assert await References(channel).unknown("org_1", [event("cus_1", "api_calls")]) == []


async def test_a_histogram_needs_an_interval(stack: Stack, tenant: Tenant):
    async with stack.channel("metering") as channel:
        request = usage_pb2.UsageHistogramRequest(
            customer_id="cus_1",
            code="api_calls",
            aggregation=usage_pb2.AGGREGATION_COUNT,
            start_time=to_proto(AT),
            end_time=to_proto(AT),
        )
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await usage_pb2_grpc.UsageServiceStub(channel).UsageHistogram(
                request, metadata=tenancy.metadata(tenant.organization_id)
            )
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "interval" in raised.value.details()
