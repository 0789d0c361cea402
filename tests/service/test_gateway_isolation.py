"""Organizations are isolated: one API key never sees another organization's
metrics, plans, customers, subscriptions, events or invoices, even when both
use the same codes and ids."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.conftest import Stack, Tenant, eventually, new_tenant


def month_start(months_ago: int) -> str:
    now = datetime.now(UTC)
    index = now.year * 12 + now.month - 1 - months_ago
    return datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC).isoformat().replace("+00:00", "Z")


async def populate(t: Tenant, amount: str) -> dict:
    """The same codes and ids in every organization; only the price differs."""
    h = t.http
    assert (
        await h.post("/v1/billable_metrics", json={"code": "calls", "aggregation_type": "count"})
    ).status_code == 201
    plan = {
        "code": "basic",
        "interval": "monthly",
        "charges": [{"billable_metric_code": "calls", "charge_model": "standard", "properties": {"amount": amount}}],
    }
    plan = (await h.post("/v1/plans", json=plan)).json()
    assert (
        await h.post("/v1/customers", json={"id": "cus_shared", "name": f"Customer at {amount}"})
    ).status_code == 201
    start = month_start(1)
    body = {"customer_id": "cus_shared", "plan_code": "basic", "start_date": start, "external_id": "ext_shared"}
    sub = await h.post("/v1/subscriptions", json=body)
    assert sub.status_code == 201, sub.text
    timestamp = (datetime.fromisoformat(start) + timedelta(days=1)).isoformat()
    event = {"transaction_id": "txn_shared", "customer_id": "cus_shared", "code": "calls", "timestamp": timestamp}
    accepted = await h.post("/v1/events", json={**event, "properties": {"price": amount}})
    assert accepted.json() == {"transaction_id": "txn_shared", "status": "accepted"}

    async def invoiced():
        await t.bill("cus_shared")
        listed = (await h.get("/v1/customers/cus_shared/invoices")).json()["invoices"]
        invoices = [i for i in listed if i["status"] == "finalized"]  # not the open period's draft
        assert len(invoices) == 1, invoices
        return invoices[0]

    return {"plan": plan, "subscription": sub.json(), "invoice": await eventually(invoiced)}


@pytest.fixture(scope="module")
async def pair(stack: Stack):
    first, second = await new_tenant(stack), await new_tenant(stack)
    yield (first, await populate(first, "1")), (second, await populate(second, "2"))
    await first.http.aclose()
    await second.http.aclose()


async def test_the_same_codes_and_ids_live_apart_in_each_organization(pair):
    for tenant, made in pair:
        amount = made["plan"]["charges"][0]["properties"]["amount"]
        h = tenant.http
        assert (await h.get("/v1/plans/basic")).json() == made["plan"]
        assert (await h.get("/v1/customers/cus_shared")).json()["name"] == f"Customer at {amount}"
        assert (await h.get("/v1/events/txn_shared")).json()["properties"] == {"price": amount}
        assert made["invoice"]["total_amount_cents"] == int(amount) * 100
        # The idempotent external_id is per organization too.
        assert made["subscription"]["external_id"] == "ext_shared"
    (_, first), (_, second) = pair
    assert first["subscription"]["id"] != second["subscription"]["id"]
    assert first["invoice"]["id"] != second["invoice"]["id"]


async def test_ids_of_another_organization_are_not_found(pair):
    (first, made_first), (second, made_second) = pair
    for tenant, other in ((first, made_second), (second, made_first)):
        for path in (f"/v1/subscriptions/{other['subscription']['id']}", f"/v1/invoices/{other['invoice']['id']}"):
            response = await tenant.http.get(path)
            assert response.status_code == 404, path
            assert response.json()["error"]["code"] == "NOT_FOUND"
        usage = await tenant.http.get(
            "/v1/customers/cus_shared/current_usage", params={"subscription_id": other["subscription"]["id"]}
        )
        assert usage.status_code == 404


async def test_a_fresh_organization_sees_nothing_of_the_others(pair, make_tenant):
    stranger = await make_tenant()
    try:
        h = stranger.http
        for path in (
            "/v1/billable_metrics/calls",
            "/v1/plans/basic",
            "/v1/customers/cus_shared",
            "/v1/events/txn_shared",
        ):
            assert (await h.get(path)).status_code == 404, path
        for path, key in (
            ("/v1/billable_metrics", "billable_metrics"),
            ("/v1/plans", "plans"),
            ("/v1/customers", "customers"),
            ("/v1/subscriptions", "subscriptions"),
            ("/v1/invoices", "invoices"),
            ("/v1/customers/cus_shared/invoices", "invoices"),
        ):
            assert (await h.get(path)).json()[key] == [], path
        assert (await h.get("/v1/customers/cus_shared/current_usage")).json()["subscriptions"] == []
    finally:
        await stranger.http.aclose()


async def test_lists_are_disjoint(pair):
    (first, _), (second, _) = pair
    for path, key in (
        ("/v1/billable_metrics", "billable_metrics"),
        ("/v1/plans", "plans"),
        ("/v1/customers", "customers"),
        ("/v1/subscriptions", "subscriptions"),
        ("/v1/invoices", "invoices"),
    ):
        mine = (await first.http.get(path)).json()[key]
        theirs = (await second.http.get(path)).json()[key]
        assert len(mine) == len(theirs) == 1, path
        assert mine[0] != theirs[0], path
