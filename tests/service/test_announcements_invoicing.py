"""Invoicing's facts as public events: a draft stored for a grace period and
an invoice issued at once are each created once, finalized, voided, credit
notes, a trial's end and a usage threshold reached (progressive billing),
each with the resource as GET shows it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.common import bus
from tests.conftest import Stack, Tenant
from tests.service.announcement_helpers import Announcements, event_id
from tests.service.invoicing_helpers import create_plan, run_billing, send, subscribe
from tests.service.test_invoicing_on_request import STANDARD, issue
from tests.service.test_invoicing_progressive import CENT, THRESHOLDS

INVOICING = (bus.INVOICING, "payments-announcements-invoicing")


async def shown(tenant: Tenant, path: str) -> dict:
    response = await tenant.http.get(path)
    assert response.status_code == 200, response.text
    return response.json()


async def clock_customer(tenant: Tenant, frozen: str, **fields) -> str:
    """A customer "c1" on a new test clock frozen at `frozen`; the clock's id."""
    clock = await tenant.http.post("/v1/test_clocks", json={"name": "announced", "frozen_time": frozen})
    assert clock.status_code == 201, clock.text
    created = await tenant.http.post("/v1/customers", json={"id": "c1", "test_clock_id": clock.json()["id"], **fields})
    assert created.status_code == 201, created.text
    return clock.json()["id"]


async def advance(tenant: Tenant, clock: str, to: str) -> None:
    moved = await tenant.http.post(f"/v1/test_clocks/{clock}/advance", json={"frozen_time": to})
    assert moved.status_code == 200, moved.text


async def test_an_invoice_issued_at_once_is_created_and_finalized_then_credited_voided_archived(
    tenant: Tenant, announcements: Announcements
):
    org = tenant.organization_id
    hooked = await announcements.endpoint(org, "invoice.voided")
    await create_plan(tenant, "pro", STANDARD, amount_cents=4900)
    await subscribe(tenant, "c1", "pro", "2026-03-01T00:00:00Z")
    first = await issue(tenant, "c1", "2026-03-15T23:59:59Z")
    finalized = await announcements.one(org, "invoice.finalized")
    created = await announcements.one(org, "invoice.created")
    assert finalized.data == created.data == {"invoice": await shown(tenant, f"/v1/invoices/{first['id']}")}
    assert (created.customer_id, created.source_key) == ("c1", f"invoice.created:{first['id']}")
    assert finalized.data["invoice"]["status"] == "issued"  # on request: ABAXUS's name, as GET shows it
    await announcements.redelivered_once(org, event_id(finalized), *INVOICING, "bxb.invoicing.v1.invoice_finalized")

    note = await tenant.http.post("/v1/credit_notes", json={"invoice_id": first["id"], "amount_cents": 100})
    assert note.status_code == 201, note.text
    credited = await announcements.one(org, "credit_note.created")
    assert credited.data == {"credit_note": await shown(tenant, f"/v1/credit_notes/{note.json()['id']}")}
    assert credited.customer_id == "c1"

    second = await issue(tenant, "c1", "2026-03-31T23:59:59Z")
    assert (await tenant.http.post(f"/v1/invoices/{second['id']}/void")).status_code == 200
    voided = await announcements.one(org, "invoice.voided")
    assert voided.data == {"invoice": await shown(tenant, f"/v1/invoices/{second['id']}")}
    assert voided.source_key == f"invoice.voided:{second['id']}"
    assert await announcements.deliveries(voided.id) == [(hooked, "c1", "DELIVERY_STATUS_PENDING")]

    # Archiving announces nothing (no public event tells it).
    assert (await tenant.http.post(f"/v1/invoices/{first['id']}/archive")).status_code == 200
    await announcements.republish(*INVOICING, "bxb.invoicing.v1.not_yet_known", b"from a newer invoicing")
    assert sorted(await announcements.types(org)) == sorted(
        ["subscription.started", "credit_note.created", "invoice.voided"] + ["invoice.created", "invoice.finalized"] * 2
    )


async def test_a_draft_is_created_once_and_finalized(tenant: Tenant, announcements: Announcements):
    org = tenant.organization_id
    clock = await clock_customer(tenant, "2026-03-01T00:00:00Z", invoice_grace_period=3)
    await create_plan(tenant, "pro", STANDARD, amount_cents=4900)
    await subscribe(tenant, "c1", "pro", "2026-03-01T00:00:00Z")
    await advance(tenant, clock, "2026-04-02T00:00:00Z")  # March ended; its grace period has not
    created = await announcements.one(org, "invoice.created")
    draft = created.data["invoice"]
    assert (draft["status"], draft["period_start"]) == ("draft", "2026-03-01T00:00:00Z")
    assert created.data == {"invoice": await shown(tenant, f"/v1/invoices/{draft['id']}")}
    assert created.customer_id == "c1"

    assert (await tenant.http.post(f"/v1/invoices/{draft['id']}/finalize")).status_code == 200
    finalized = await announcements.one(org, "invoice.finalized")
    assert finalized.data == {"invoice": await shown(tenant, f"/v1/invoices/{draft['id']}")}
    assert finalized.data["invoice"]["status"] == "finalized"
    assert [a.data["invoice"]["status"] for a in await announcements.all(org, "invoice.created")] == ["draft"]


async def test_a_usage_threshold_reached_is_announced_with_its_invoice(tenant: Tenant, announcements: Announcements):
    org = tenant.organization_id
    clock = await clock_customer(tenant, "2026-03-01T00:00:00Z")
    await create_plan(tenant, "metered", CENT, usage_thresholds=THRESHOLDS)
    await subscribe(tenant, "c1", "metered", "2026-03-01T00:00:00Z")
    await send(tenant, "c1", 5000, "2026-03-02T00:00:00Z")
    await send(tenant, "c1", 11000, "2026-03-03T00:00:00Z")  # $160: $100 and then $50 once
    await advance(tenant, clock, "2026-03-06T00:00:00Z")
    reached = await announcements.one(org, "usage_threshold.reached")
    [progressive] = [a.data["invoice"] for a in await announcements.all(org, "invoice.finalized")]
    subscription = (await shown(tenant, "/v1/subscriptions?customer_id=c1"))["subscriptions"][0]
    assert reached.data == {
        "usage_threshold": {
            "subscription_id": subscription["id"],
            "customer_id": "c1",
            "usage_amount_cents": 16000,
            "threshold_amount_cents": 15000,
            "currency": "USD",
            "invoice_id": progressive["id"],
        }
    }
    assert (reached.customer_id, progressive["timing"], progressive["total_amount_cents"]) == (
        "c1",
        "progressive",
        16000,
    )


async def test_a_trial_s_end_is_announced(stack: Stack, tenant: Tenant, announcements: Announcements):
    org = tenant.organization_id
    await create_plan(tenant, "pro", STANDARD, amount_cents=4900)
    start = (datetime.now(UTC) - timedelta(days=20)).replace(microsecond=0)
    sub = await subscribe(tenant, "c1", "pro", start.isoformat().replace("+00:00", "Z"), trial_period_days=14)

    async def ended():
        await run_billing(stack, tenant, "c1")
        return await announcements.one(org, "subscription.trial_ended", timeout=0.5)

    trial = await announcements.eventually(ended)
    assert trial.data == {
        "subscription_id": sub["id"],
        "customer_id": "c1",
        "trial_end_time": (await shown(tenant, f"/v1/subscriptions/{sub['id']}"))["trial_end_date"],
    }
    assert trial.customer_id == "c1"
