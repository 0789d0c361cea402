"""Rate limits through the real gateway: requests and events spend from the
key's and the organization's buckets, 429 with Retry-After when over, per
organization limits set by an operator, one organization's flood never
limiting another."""

from __future__ import annotations

import httpx

from bxb.catalog.v1 import organizations_pb2 as pb
from bxb.catalog.v1 import organizations_pb2_grpc
from tests.conftest import Stack, Tenant


async def limit(stack: Stack, tenant: Tenant, limits: pb.RateLimits, per_key: pb.RateLimits | None = None) -> None:
    """Sets the tenant's limits (before its key's first use: the gateway caches them with the key)."""
    async with stack.channel("catalog") as channel:
        await organizations_pb2_grpc.OrganizationServiceStub(channel).SetOrganizationRateLimits(
            pb.SetOrganizationRateLimitsRequest(
                organization_id=tenant.organization_id, rate_limits=limits, key_rate_limits=per_key
            )
        )


def assert_limited(response: httpx.Response, kind: str, retry_after: int) -> None:
    assert response.status_code == 429, response.text
    assert response.headers["retry-after"] == str(retry_after)
    assert response.json()["error"] == {
        "status": 429,
        "code": "RESOURCE_EXHAUSTED",
        "reason": "RATE_LIMITED",
        "message": f"rate limit of {kind} exceeded; retry later",
    }


def events(n: int, prefix: str) -> dict:
    return {"events": [{"transaction_id": f"{prefix}{i}", "customer_id": "c", "code": "m"} for i in range(n)]}


async def test_requests_over_the_organizations_limit_are_429_with_retry_after(
    stack: Stack, tenant: Tenant, make_tenant
):
    await limit(stack, tenant, pb.RateLimits(requests_per_second=1, request_burst=3))
    other = await make_tenant()
    try:
        for _ in range(3):
            assert (await tenant.http.get("/v1/customers")).status_code == 200
        assert_limited(await tenant.http.get("/v1/customers"), "requests", 1)
        assert_limited(await tenant.http.post("/v1/customers", json={}), "requests", 1)
        # Another organization is not limited by this one's flood.
        for _ in range(5):
            assert (await other.http.get("/v1/customers")).status_code == 200
    finally:
        await other.http.aclose()


async def test_ingestion_spends_events_not_requests(stack: Stack, tenant: Tenant):
    await limit(
        stack, tenant, pb.RateLimits(requests_per_second=1, request_burst=1, events_per_second=1, event_burst=10)
    )
    batch = await tenant.http.post("/v1/events/batch", json=events(8, "a"))
    assert batch.status_code == 207, batch.text
    single = await tenant.http.post("/v1/events", json={"transaction_id": "s1", "customer_id": "c", "code": "m"})
    assert single.status_code == 200, single.text  # 9 of 10 events spent; no request spent
    # 5 more events: about 1 is left, 4 short at 1 a second.
    assert_limited(await tenant.http.post("/v1/events/batch", json=events(5, "b")), "events", 4)
    assert (await tenant.http.get("/v1/customers")).status_code == 200  # requests are another bucket


async def test_a_batch_above_the_burst_passes_when_the_bucket_is_full(stack: Stack, tenant: Tenant):
    await limit(stack, tenant, pb.RateLimits(events_per_second=1, event_burst=3))
    assert (await tenant.http.post("/v1/events/batch", json=events(5, "big"))).status_code == 207
    assert_limited(await tenant.http.post("/v1/events/backfill", json=events(1, "more")), "events", 3)


async def test_each_key_has_its_own_bucket_within_its_organizations(stack: Stack, tenant: Tenant):
    await limit(
        stack, tenant, pb.RateLimits(request_burst=100), per_key=pb.RateLimits(requests_per_second=1, request_burst=2)
    )
    created = await tenant.http.post("/v1/api_keys", json={"role": "read"})  # spends the tenant's key's first
    assert created.status_code == 201
    second = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=stack.app),
        base_url="http://bxb.test",
        headers={"Authorization": f"Bearer {created.json()['secret']}"},
    )
    async with second:
        assert (await tenant.http.get("/v1/customers")).status_code == 200
        assert_limited(await tenant.http.get("/v1/customers"), "requests", 1)
        for _ in range(2):
            assert (await second.get("/v1/customers")).status_code == 200
        assert (await second.get("/v1/customers")).status_code == 429


async def test_an_unlimited_tenant_takes_the_generous_defaults(tenant: Tenant):
    for _ in range(50):
        assert (await tenant.http.get("/v1/customers")).status_code == 200
    assert (await tenant.http.post("/v1/events/batch", json=events(500, "d"))).status_code == 207
