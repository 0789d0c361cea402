"""References: which new events name a metric or customer the catalog lacks,
asked of the real catalog service."""

from __future__ import annotations

from datetime import UTC, datetime

import grpc
import pytest

from bxb.catalog.v1 import event_references_pb2, event_references_pb2_grpc
from bxb.metering.v1 import usage_pb2, usage_pb2_grpc
from deploy.embedded import free_port
from services.common import peers, tenancy
from services.common.errors import error_info
from services.common.timestamps import to_proto
from services.metering import references as references_module
from services.metering.references import References
from services.metering.store import Event
from tests.conftest import Stack, Tenant, organization

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
        refs = References(peers.Catalog(channel=channel))
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
        assert await refs.unknown(
            await organization(stack), [event("cus_1", "api_calls")]
        )  # names are per organization


async def test_known_names_are_remembered_for_the_ttl(stack: Stack, tenant: Tenant, monkeypatch: pytest.MonkeyPatch):
    await known(tenant)
    org = tenant.organization_id
    async with stack.channel("catalog") as channel:
        remembered, forgetful = (
            References(peers.Catalog(channel=channel)),
            References(peers.Catalog(channel=channel), ttl=0),
        )
        for refs in (remembered, forgetful):
            assert await refs.unknown(org, [event("cus_1", "api_calls")]) == []
        monkeypatch.setattr(references_module, "KEPT", 1)
        bounded = References(peers.Catalog(channel=channel))
        assert await bounded.unknown(org, [event("cus_1", "api_calls")]) == []
        assert len(bounded._known) == 1  # two names known, the oldest went first
        assert (await tenant.http.delete("/v1/metrics/api_calls")).status_code in (200, 204)
        assert await remembered.unknown(org, [event("cus_1", "api_calls")]) == []  # still remembered
        assert [r.error.reason for r in await forgetful.unknown(org, [event("cus_1", "api_calls")])] == [
            "UNKNOWN_METRIC"
        ]


async def test_an_unreachable_catalog_flags_nothing():
    async with grpc.aio.insecure_channel(f"127.0.0.1:{free_port()}") as channel:
        assert await References(peers.Catalog(channel=channel)).unknown("org_1", [event("cus_1", "api_calls")]) == []


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


class Counting(grpc.aio.UnaryUnaryClientInterceptor):
    """Counts the calls made through a channel, by method."""

    def __init__(self):
        self.calls: list[str] = []

    async def intercept_unary_unary(self, continuation, client_call_details, request):
        self.calls.append(client_call_details.method.decode().rsplit("/", 1)[-1])
        return await continuation(client_call_details, request)


async def test_a_batch_is_resolved_in_one_call_and_unknown_names_are_remembered_too(stack: Stack, tenant: Tenant):
    await known(tenant)
    org = tenant.organization_id
    counting = Counting()
    async with grpc.aio.insecure_channel(stack.catalog, interceptors=[counting]) as channel:
        refs = References(peers.Catalog(channel=channel))
        batch = [event(f"cus_{n}", code) for n in range(200) for code in ("api_calls", "nope")]
        found = await refs.unknown(org, batch)
        assert len(found) == 400 - 1  # only cus_1 with api_calls names what exists
        assert await refs.unknown(org, batch) == found  # all remembered, known and unknown alike
        assert counting.calls == ["ResolveEventReferences"]
        impatient = References(peers.Catalog(channel=channel), unknown_ttl=0)
        for _ in range(2):
            await impatient.unknown(org, [event("cus_1", "nope")])
        assert counting.calls == ["ResolveEventReferences"] * 3  # an unknown name asked again once forgotten


async def test_a_stored_event_whose_aggregated_property_is_no_number_is_listed(stack: Stack, tenant: Tenant):
    metric = {"code": "tokens", "name": "Tokens", "aggregation_type": "sum", "field_name": "tokens"}
    assert (await tenant.http.post("/v1/billable_metrics", json=metric)).status_code == 201
    assert (await tenant.http.post("/v1/customers", json={"id": "cus_1"})).status_code == 201
    bad = Event("t1", "cus_1", "tokens", AT, {"tokens": "1_000"})
    async with stack.channel("catalog") as channel:
        [listed] = await References(peers.Catalog(channel=channel)).unknown(
            tenant.organization_id, [bad, event("cus_1", "tokens")]
        )
    assert (listed.event.transaction_id, listed.error.reason, listed.error.field) == (
        "t1",
        "INVALID_NUMBER",
        "properties.tokens",
    )
    assert listed.stored and listed.error.message.endswith("the event is kept but this value is not counted")


async def test_the_catalog_resolves_at_most_1000_names_a_call(stack: Stack, tenant: Tenant):
    async with stack.channel("catalog") as channel:
        stub = event_references_pb2_grpc.EventReferenceServiceStub(channel)
        request = event_references_pb2.ResolveEventReferencesRequest(customer_ids=[f"c{n}" for n in range(1001)])
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.ResolveEventReferences(request, metadata=tenancy.metadata(tenant.organization_id))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(refused.value).metadata["field"] == "customer_ids"
