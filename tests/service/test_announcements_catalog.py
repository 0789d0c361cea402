"""The catalog's facts as public events: customers created and updated,
subscriptions started, changing plan and terminated, each announced once
with the resource as GET shows it, and queued for the endpoints subscribed."""

from __future__ import annotations

from services.common import bus
from tests.conftest import Tenant
from tests.service.announcement_helpers import Announcements, event_id
from tests.service.test_gateway_subscription_lifecycle import fetch, plan, subscribe

CATALOG = (bus.CATALOG, "payments-announcements-catalog")


async def test_a_customer_created_and_updated_is_announced_once_to_the_endpoints_that_want_it(
    tenant: Tenant, make_tenant, announcements: Announcements
):
    h, org = tenant.http, tenant.organization_id
    wants = await announcements.endpoint(org, "customer.created", "customer.updated")
    everything = await announcements.endpoint(org)
    await announcements.endpoint(org, "invoice.paid")
    await announcements.endpoint(org, "customer.created", enabled=False)
    other = await make_tenant()
    await announcements.endpoint(other.organization_id)
    await other.http.aclose()

    assert (await h.post("/v1/customers", json={"id": "cus_hook", "name": "Hook", "email": "a@hook.test"})).is_success
    created = await announcements.one(org, "customer.created")
    assert (created.customer_id, created.body["type"]) == ("cus_hook", "customer.created")
    assert created.data == {"customer": (await h.get("/v1/customers/cus_hook")).json()}
    assert created.body["timestamp"].endswith("Z")
    assert sorted(await announcements.deliveries(created.id)) == sorted(
        [(wants, "cus_hook", "DELIVERY_STATUS_PENDING"), (everything, "cus_hook", "DELIVERY_STATUS_PENDING")]
    )

    assert (await h.patch("/v1/customers/cus_hook", json={"name": "Hooked"})).is_success
    updated = await announcements.one(org, "customer.updated")
    assert updated.data == {"customer": (await h.get("/v1/customers/cus_hook")).json()}
    assert updated.data["customer"]["name"] == "Hooked"
    assert len(await announcements.deliveries(updated.id)) == 2
    assert await announcements.all(other.organization_id) == []

    subject = "bxb.catalog.v1.customer_updated"
    await announcements.redelivered_once(org, event_id(updated), *CATALOG, subject)
    assert len(await announcements.deliveries(updated.id)) == 2


async def test_subscriptions_started_changing_plan_and_terminated_are_announced(
    tenant: Tenant, announcements: Announcements
):
    h, org = tenant.http, tenant.organization_id
    hooked = await announcements.endpoint(org, "subscription.plan_changed")
    basic, pro = await plan(tenant, 1000), await plan(tenant, 2000)
    old = await subscribe(tenant, basic["code"])
    started = await announcements.one(org, "subscription.started")
    assert (started.customer_id, started.data["subscription"]) == ("cus_gw", await fetch(tenant, old["id"]))
    assert started.data["plan"] == (await h.get(f"/v1/plans/{basic['code']}")).json()
    assert started.data["customer"] == (await h.get("/v1/customers/cus_gw")).json()
    assert await announcements.deliveries(started.id) == []  # its endpoint wants plan changes only

    new = (await h.put(f"/v1/subscriptions/{old['id']}", json={"plan_code": pro["code"]})).json()  # an upgrade
    changed = await announcements.one(org, "subscription.plan_changed")
    assert changed.data == {"subscription": await fetch(tenant, old["id"])}
    assert changed.data["subscription"]["next_subscription_id"] == new["id"]
    assert await announcements.deliveries(changed.id) == [(hooked, "cus_gw", "DELIVERY_STATUS_PENDING")]

    async def both_started() -> None:
        found = await announcements.all(org, "subscription.started")
        assert [a.data["subscription"]["id"] for a in found] == [old["id"], new["id"]]

    await announcements.eventually(both_started)
    assert (await h.delete(f"/v1/subscriptions/{new['id']}")).is_success
    ended = await announcements.one(org, "subscription.terminated")
    assert ended.data == {"subscription": await fetch(tenant, new["id"])}
    assert ended.source_key == f"subscription.terminated:{new['id']}"
    subject = "bxb.catalog.v1.subscription_updated"
    await announcements.redelivered_once(org, event_id(changed), *CATALOG, subject)


async def test_terminating_a_subscription_with_a_pending_downgrade_is_a_termination(
    tenant: Tenant, announcements: Announcements
):
    h, org = tenant.http, tenant.organization_id
    pro, lite = await plan(tenant, 2000), await plan(tenant, 500)
    old = await subscribe(tenant, pro["code"])
    pending = (await h.put(f"/v1/subscriptions/{old['id']}", json={"plan_code": lite["code"]})).json()
    assert pending["status"] == "pending"
    await announcements.one(org, "subscription.plan_changed")
    assert (await h.delete(f"/v1/subscriptions/{old['id']}")).is_success

    async def both_terminated() -> list:
        found = await announcements.all(org, "subscription.terminated")
        assert [a.data["subscription"]["id"] for a in found] == [pending["id"], old["id"]]
        return found

    cancelled, ended = await announcements.eventually(both_terminated)
    assert cancelled.data == {"subscription": await fetch(tenant, pending["id"])}
    assert ended.data == {"subscription": await fetch(tenant, old["id"])}
    # It still names the replacement it had (cancelled): still one plan change.
    assert ended.data["subscription"]["next_subscription_id"] == pending["id"]
    assert len(await announcements.all(org, "subscription.plan_changed")) == 1
