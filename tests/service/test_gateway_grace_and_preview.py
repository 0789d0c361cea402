"""Grace periods (an ended period's invoice stays a draft, recomputed from
late events, until it is finalized) and previews with projected usage, on
test clocks so that time is exact."""

from __future__ import annotations

import asyncio

from sqlalchemy import delete

from services.common import peers
from services.invoicing.models import Subscription
from services.invoicing.projection import SubscriptionProjection
from tests.conftest import Stack, Tenant
from tests.service.invoicing_helpers import InvoicingDb
from tests.service.test_gateway_test_clocks import invoices, send, setup


async def on_clock(h, customer: str, **extra) -> str:
    clock = await setup(h)
    created = await h.post("/v1/customers", json={"id": customer, "test_clock_id": clock, **extra})
    assert created.status_code == 201, created.text
    assert (await h.post("/v1/subscriptions", json={"customer_id": customer, "plan_code": "pro"})).status_code == 201
    return clock


async def advance(h, clock: str, to: str) -> int:
    moved = await h.post(f"/v1/test_clocks/{clock}/advance", json={"frozen_time": to})
    assert moved.status_code == 200, moved.text
    return moved.json()["invoices_created"]


async def test_a_draft_in_its_grace_period_is_recomputed_from_late_events_then_finalized(tenant: Tenant):
    h = tenant.http
    clock = await on_clock(h, "cus_grace", invoice_grace_period=3)
    assert (await h.get("/v1/customers/cus_grace")).json()["invoice_grace_period"] == 3
    await send(h, "cus_grace", "2025-01-10T00:00:00Z", 110_000)  # 10,000 above the free tier: 500 cents

    assert await advance(h, clock, "2025-02-01T00:00:00Z") == 1  # January's draft
    [draft] = await invoices(h, "cus_grace")
    assert (draft["status"], draft["number"], draft["subtotal_cents"]) == ("draft", None, 4900 + 500)
    voided = await h.post(f"/v1/invoices/{draft['id']}/void")
    assert (voided.status_code, voided.json()["error"]["reason"]) == (409, "INVALID_TRANSITION")
    assert "is draft" in voided.json()["error"]["message"]

    assert (await h.get(f"/v1/invoices/{draft['id']}/pdf")).status_code == 409  # rendered once final
    # A late January event, inside the grace period: the draft takes it in.
    await send(h, "cus_grace", "2025-01-20T00:00:00Z", 4_000)
    assert await advance(h, clock, "2025-02-03T23:59:59Z") == 0
    [kept] = await invoices(h, "cus_grace")
    assert (kept["id"], kept["status"], kept["subtotal_cents"]) == (draft["id"], "draft", 4900 + 500 + 200)

    assert await advance(h, clock, "2025-02-04T00:00:00Z") == 1  # three days after the period: final
    [final] = await invoices(h, "cus_grace")
    assert (final["id"], final["status"], final["number"]) == (draft["id"], "finalized", "INV-000001")
    assert [(f["type"], f["amount_cents"]) for f in final["fees"]] == [("subscription", 4900), ("charge", 700)]
    assert final["total_amount_cents"] == 5600


async def test_a_draft_can_be_finalized_early_and_only_once(tenant: Tenant):
    h = tenant.http
    clock = await on_clock(h, "cus_early", invoice_grace_period=10)
    assert await advance(h, clock, "2025-02-02T00:00:00Z") == 1
    [draft] = await invoices(h, "cus_early")
    finalized = await h.post(f"/v1/invoices/{draft['id']}/finalize")
    assert finalized.status_code == 200, finalized.text
    assert (finalized.json()["status"], finalized.json()["number"]) == ("finalized", "INV-000001")
    assert finalized.json()["issued_at"] == "2025-02-02T00:00:00Z"  # at the clock's time
    assert finalized.json()["total_amount_cents"] == 4900
    again = await h.post(f"/v1/invoices/{draft['id']}/finalize")
    assert (again.status_code, again.json()["error"]["reason"]) == (409, "INVALID_TRANSITION")
    assert "is finalized" in again.json()["error"]["message"]
    # The run does not bill the period again once its grace period ends.
    assert await advance(h, clock, "2025-02-20T00:00:00Z") == 0
    assert [i["status"] for i in await invoices(h, "cus_early")] == ["finalized"]
    assert (await h.post("/v1/invoices/inv_nope/finalize")).status_code == 404


async def test_the_preview_shows_the_period_so_far_and_usage_projected_to_its_end(tenant: Tenant):
    h = tenant.http
    clock = await on_clock(h, "cus_preview")
    sub = (await h.get("/v1/subscriptions", params={"customer_id": "cus_preview"})).json()["subscriptions"][0]
    at_start = await h.post("/v1/invoices/preview", json={"subscription_id": sub["id"]})
    # At the very start of the period there is no pace yet: usage as it stands.
    assert (at_start.json()["elapsed_ratio"], at_start.json()["projected_usage_amount_cents"]) == ("0", 0)
    assert at_start.json()["invoice"]["subtotal_cents"] == 4900
    await send(h, "cus_preview", "2025-01-05T00:00:00Z", 110_000)

    await advance(h, clock, "2025-01-11T00:00:00Z")  # 10 of January's 31 days
    preview = (await h.post("/v1/invoices/preview", json={"subscription_id": sub["id"]})).json()
    assert preview["invoice"]["status"] == "draft"
    assert preview["invoice"]["subtotal_cents"] == 4900 + 500
    # 110,000 tokens in 10 days: 341,000 by the 31st, 241,000 above the free tier at 0.0005.
    [projected] = preview["projected_fees"]
    assert (projected["units"], projected["amount_cents"]) == ("341000", 12050)
    assert preview["projected_usage_amount_cents"] == 12050
    assert preview["elapsed_ratio"].startswith("0.32258064")

    missing = await h.post("/v1/invoices/preview", json={"subscription_id": "sub_nope"})
    assert (missing.status_code, missing.json()["error"]["field"]) == (404, "subscription_id")
    assert (await h.post("/v1/invoices/preview", json={})).status_code == 400


async def test_a_preview_right_after_subscribing_waits_for_the_subscription_on_its_way(
    stack: Stack, tenant: Tenant, invoicing_db: InvoicingDb
):
    h = tenant.http
    await on_clock(h, "cus_fresh")
    sub = (await h.get("/v1/subscriptions", params={"customer_id": "cus_fresh"})).json()["subscriptions"][0]
    await invoicing_db.projected(sub["id"])
    async with invoicing_db.sessions() as session, session.begin():  # as if its creation were still on its way
        await session.execute(delete(Subscription).where(Subscription.id == sub["id"]))
    previewing = asyncio.create_task(h.post("/v1/invoices/preview", json={"subscription_id": sub["id"]}))
    await asyncio.sleep(0.2)
    assert not previewing.done()  # waiting for it; writing nothing
    async with stack.channel("catalog") as catalog:  # its event arrives
        projection = SubscriptionProjection(invoicing_db.sessions, peers.Catalog(channel=catalog))
        await projection.catch_up(tenant.organization_id, "cus_fresh")
    preview = await previewing
    assert (preview.status_code, preview.json()["invoice"]["subtotal_cents"]) == (200, 4900)
    assert (await invoicing_db.projected(sub["id"])).test_clock_id == sub["test_clock_id"]


async def test_a_calculation_right_after_subscribing_waits_for_the_subscription_on_its_way(
    stack: Stack, tenant: Tenant, invoicing_db: InvoicingDb
):
    h = tenant.http
    await on_clock(h, "cus_calc")
    sub = (await h.get("/v1/subscriptions", params={"customer_id": "cus_calc"})).json()["subscriptions"][0]
    await invoicing_db.projected(sub["id"])
    async with invoicing_db.sessions() as session, session.begin():  # as if its creation were still on its way
        await session.execute(delete(Subscription).where(Subscription.id == sub["id"]))
    body = {"customer_id": "cus_calc", "subscription_id": sub["id"]}
    calculating = asyncio.create_task(h.post("/v1/pricing/calculate", json=body))
    await asyncio.sleep(0.2)
    async with stack.channel("catalog") as catalog:  # its event arrives
        projection = SubscriptionProjection(invoicing_db.sessions, peers.Catalog(channel=catalog))
        await projection.catch_up(tenant.organization_id, "cus_calc")
    calculated = await calculating
    assert (calculated.status_code, calculated.json()["subscription_id"]) == (200, sub["id"]), calculated.text
