"""IntegrationService over HTTP: connecting ChartMogul (faked) checks the
key there first and stores it sealed, never answering it; status counts read
from the integration's deliveries; listing its deliveries; disconnecting;
and a resync of an organization's history sent to ChartMogul (faked) by the
sender, with its progress."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update

from bxb.catalog.v1 import customers_pb2
from services.common import db, peers
from services.common.timestamps import utcnow
from services.payments import history as history_module
from services.payments.announcing import Announcer, Draft
from services.payments.chartmogul import ACCEPTS
from services.payments.history import History
from services.payments.models import (
    DELIVERY_FAILED,
    DELIVERY_SUCCEEDED,
    PAYMENT_SUCCEEDED,
    RESYNC_GATHERING,
    Announcement,
    Delivery,
    Integration,
    Payment,
    Resync,
)
from services.payments.vendors import VendorSettings, vendors
from tests.conftest import Infra, Stack, Tenant, eventually
from tests.service.invoicing_helpers import create_plan, subscribe


class Db:
    def __init__(self, infra: Infra):
        self.engine = db.create_engine(infra.postgres.url("payments"), pool_size=2)
        self.sessions = db.sessions(self.engine)

    async def integration(self, org: str) -> Integration | None:
        async with self.sessions() as session:
            return await session.scalar(select(Integration).where(Integration.organization_id == org))

    async def announced(self, org: str) -> set[str]:
        """The types announced live for the organization (no resync's)."""
        async with self.sessions() as session:
            found = await session.scalars(
                select(Announcement.type).where(Announcement.organization_id == org, Announcement.resync_id == "")
            )
            return set(found)

    async def failures(self, integration_id: str) -> list[tuple[str, str, str]]:
        """(type, customer, last error) of the integration's failed deliveries."""
        async with self.sessions() as session:
            rows = await session.execute(
                select(Announcement.type, Delivery.customer_id, Delivery.last_error)
                .join(Announcement, Announcement.id == Delivery.announcement_id)
                .where(Delivery.integration_id == integration_id, Delivery.status == DELIVERY_FAILED)
            )
            return [tuple(row) for row in rows]

    async def deliveries(self, integration_id: str, resync_id: str | None = None) -> list[tuple[str, str, str]]:
        """(type, customer, status) of the integration's deliveries (a resync's
        only, when named), in queue order."""
        async with self.sessions() as session:
            query = (
                select(Announcement.type, Delivery.customer_id, Delivery.status)
                .join(Announcement, Announcement.id == Delivery.announcement_id)
                .where(Delivery.integration_id == integration_id)
                .order_by(Delivery.sequence)
            )
            if resync_id is not None:
                query = query.where(Delivery.resync_id == resync_id)
            return [tuple(row) for row in await session.execute(query)]


@pytest.fixture
async def payments(infra: Infra) -> AsyncIterator[Db]:
    handle = Db(infra)
    yield handle
    await handle.engine.dispose()


async def connect(t: Tenant, stack: Stack, **body) -> tuple[str, dict]:
    key = stack.chartmogul.add_account()
    connected = await t.http.post("/v1/integrations/chartmogul", json={"api_key": key, **body})
    assert connected.status_code == 200, connected.text
    return key, connected.json()


async def test_a_refused_key_is_a_400_naming_api_key_and_stores_nothing(tenant: Tenant, payments: Db):
    refused = await tenant.http.post("/v1/integrations/chartmogul", json={"api_key": "wrong-key-123456"})
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"]["field"] == "api_key"
    assert "wrong-key-123456" not in refused.text
    assert await payments.integration(tenant.organization_id) is None
    assert (await tenant.http.get("/v1/integrations/chartmogul")).status_code == 404


async def test_connecting_seals_the_key_and_never_answers_it(
    tenant: Tenant, stack: Stack, payments: Db, caplog, monkeypatch
):
    caplog.set_level(logging.DEBUG)
    key, shown = await connect(tenant, stack)
    [source] = stack.chartmogul.store(key).data_sources
    assert shown == {
        "provider": "chartmogul",
        "api_key_hint": f"{key[:3]}...{key[-4:]}",
        "data_source_id": source,
        "create_time": shown["create_time"],
        "last_sync_time": None,
        "synced_count": 0,
        "pending_count": 0,
        "failed_count": 0,
        "last_error": "",
        "last_error_time": None,
        "resync": None,
    }
    got = await tenant.http.get("/v1/integrations/chartmogul")
    listed = await tenant.http.get("/v1/integrations")
    assert got.json() == shown and listed.json() == {"integrations": [shown]}
    row = await payments.integration(tenant.organization_id)
    assert row.api_key_sealed.startswith("v1.") and key not in row.api_key_sealed
    assert key not in got.text + listed.text + caplog.text
    # Connecting again with a data source of the organization's choosing replaces the key.
    other = stack.chartmogul.add_account()
    chosen = stack.chartmogul.add_data_source(other)
    again = await tenant.http.post("/v1/integrations/chartmogul", json={"api_key": other, "data_source_id": chosen})
    assert (again.status_code, again.json()["data_source_id"]) == (200, chosen)
    assert (await payments.integration(tenant.organization_id)).id == row.id
    # No sealing key.
    monkeypatch.delenv("BXB_SECRET_KEY")
    unsealed = await tenant.http.post("/v1/integrations/chartmogul", json={"api_key": other})
    assert (unsealed.status_code, unsealed.json()["error"]["reason"]) == (409, "SECRET_KEY_NOT_CONFIGURED")


async def test_status_counts_deliveries_and_disconnecting(tenant: Tenant, stack: Stack, payments: Db):
    await connect(tenant, stack)
    integration = await payments.integration(tenant.organization_id)
    org, now = tenant.organization_id, utcnow()
    async with payments.sessions() as session, session.begin():
        announcer = Announcer({"chartmogul": ACCEPTS})
        for n in range(3):
            draft = Draft(org, "customer.created", f"c{n}", f"test:{n}", now, {"customer": {"id": f"c{n}"}})
            assert len(await announcer.announce(session, draft, now)) == 1
        ignored = Draft(org, "invoice.voided", "c0", "test:voided", now, {})
        assert await announcer.announce(session, ignored, now) == []  # ChartMogul does not sync it
    async with payments.sessions() as session, session.begin():
        first, second, _ = (
            await session.scalars(
                select(Delivery).where(Delivery.integration_id == integration.id).order_by(Delivery.sequence)
            )
        ).all()
        first.status, first.finish_time = DELIVERY_SUCCEEDED, now
        second.status, second.last_error = DELIVERY_FAILED, "ChartMogul answered 422"
        await session.execute(
            update(Integration)
            .where(Integration.id == integration.id)
            .values(last_error="ChartMogul answered 422", last_error_time=now)
        )
    status = (await tenant.http.get("/v1/integrations/chartmogul")).json()
    assert (status["synced_count"], status["pending_count"], status["failed_count"]) == (1, 1, 1)
    assert status["last_sync_time"] is not None and status["last_error"] == "ChartMogul answered 422"

    listed = (await tenant.http.get("/v1/integrations/chartmogul/deliveries")).json()
    assert [d["event_type"] for d in listed["deliveries"]] == ["customer.created"] * 3
    assert [d["status"] for d in listed["deliveries"]] == ["pending", "failed", "succeeded"]  # newest first
    assert (
        listed["deliveries"][0]["next_attempt_time"] is not None
        and listed["deliveries"][2]["next_attempt_time"] is None
    )
    failed = (await tenant.http.get("/v1/integrations/chartmogul/deliveries", params={"status": "failed"})).json()
    assert [d["id"] for d in failed["deliveries"]] == [second.id]
    page = (await tenant.http.get("/v1/integrations/chartmogul/deliveries", params={"page_size": 2})).json()
    rest = (
        await tenant.http.get("/v1/integrations/chartmogul/deliveries", params={"page_token": page["next_page_token"]})
    ).json()
    assert [d["id"] for d in page["deliveries"] + rest["deliveries"]] == [d["id"] for d in listed["deliveries"]]
    assert rest["next_page_token"] in ("", None)

    gone = await tenant.http.delete("/v1/integrations/chartmogul")
    assert gone.status_code in (200, 204), gone.text
    assert await payments.deliveries(integration.id) == []  # cascaded
    again = await tenant.http.delete("/v1/integrations/chartmogul")
    assert (again.status_code, again.json()["error"]["field"]) == (404, "provider")
    assert (await tenant.http.get("/v1/integrations/chartmogul/deliveries")).status_code == 404


async def billed_history(t: Tenant, payments: Db) -> dict:
    """c1: a subscription billed once, paid, credited in part, then terminated; c2: a subscription only."""
    for customer in ("c1", "c2"):
        body = {"external_id": customer, "name": customer.upper()}
        assert (await t.http.post("/v1/customers", json=body)).status_code == 201
    await create_plan(t, "pro", [], amount_cents=10000, name="Pro")
    first = await subscribe(t, "c1", "pro", "2026-10-01T00:00:00Z")
    await subscribe(t, "c2", "pro", "2026-10-05T00:00:00Z")
    invoiced = await t.http.post("/v1/invoices", json={"customer_id": "c1", "cutoff_date": "2026-10-31T23:59:59Z"})
    assert invoiced.status_code == 201, invoiced.text
    invoice = invoiced.json()

    async def recorded() -> None:
        async with payments.sessions() as session, session.begin():
            paid = await session.execute(
                update(Payment).where(Payment.invoice_id == invoice["id"]).values(status=PAYMENT_SUCCEEDED)
            )
            assert paid.rowcount == 1  # as a charge would have left it

    await eventually(recorded)
    note = await t.http.post("/v1/credit_notes", json={"invoice_id": invoice["id"], "amount_cents": 2500})
    assert note.status_code == 201, note.text
    assert (await t.http.delete(f"/v1/subscriptions/{first['id']}")).status_code == 200

    async def announced() -> None:  # before anything connects: none of it is sent live to the integration
        assert {"credit_note.created", "subscription.terminated"} <= await payments.announced(t.organization_id)

    await eventually(announced)
    return invoice


EXPECTED = [
    ("customer.created", "c1"),
    ("subscription.started", "c1"),
    ("subscription.terminated", "c1"),
    ("invoice.finalized", "c1"),
    ("payment.succeeded", "c1"),
    ("credit_note.created", "c1"),
    ("customer.created", "c2"),
    ("subscription.started", "c2"),
]


async def test_a_resync_queues_the_history_and_reports_progress(
    tenant: Tenant, stack: Stack, payments: Db, monkeypatch
):
    monkeypatch.setattr(history_module, "PAGE_SIZE", 1)  # a page of customers per customer
    invoice = await billed_history(tenant, payments)
    key, _ = await connect(tenant, stack)
    integration = await payments.integration(tenant.organization_id)

    stack.chartmogul.fail_next(503)  # ChartMogul down for a moment: the resync waits, then goes on
    asked = await tenant.http.post("/v1/integrations/chartmogul/resync", json={})
    assert asked.status_code in (200, 201), asked.text
    resync_id = asked.json()["resync"]["id"]
    # Asked again while it runs: the same resync.
    again = await tenant.http.post("/v1/integrations/chartmogul/resync", json={})
    assert again.json()["resync"]["id"] == resync_id

    async def done(resync: str) -> dict:
        status = (await tenant.http.get("/v1/integrations/chartmogul")).json()
        assert (status["resync"]["id"], status["resync"]["state"]) == (resync, "done"), status
        return status

    finished = (await eventually(lambda: done(resync_id), timeout=30))["resync"]
    assert finished == {
        "id": resync_id,
        "state": "done",
        "total_count": len(EXPECTED),
        "done_count": len(EXPECTED),
        "failed_count": 0,
        "progress_percent": "100.0",
        "create_time": finished["create_time"],
        "finish_time": finished["finish_time"],
    }, await payments.failures(integration.id)
    assert finished["finish_time"] is not None
    sent = await payments.deliveries(integration.id, resync_id)
    assert [(kind, customer) for kind, customer, _ in sent] == EXPECTED
    assert {status for _, _, status in sent} == {DELIVERY_SUCCEEDED}
    # What ChartMogul now holds: both customers, the plan, the invoice with its line and transactions.
    store = stack.chartmogul.store(key)
    assert sorted(c["external_id"] for c in store.customers.values()) == ["c1", "c2"]
    assert [p["external_id"] for p in store.plans.values()] == ["pro:v1"]
    [imported] = store.invoices.values()
    assert imported["external_id"] == invoice["id"]
    assert [line["amount_in_cents"] for line in imported["line_items"]] == [10000]
    assert [(t["type"], t["result"]) for t in imported["transactions"]] == [
        ("payment", "successful"),
        ("refund", "successful"),
    ]
    # A later resync sends everything again, under its own keys; ChartMogul holds nothing twice.
    later = (await tenant.http.post("/v1/integrations/chartmogul/resync", json={})).json()["resync"]
    assert later["id"] != resync_id
    await eventually(lambda: done(later["id"]), timeout=30)
    assert len(await payments.deliveries(integration.id, later["id"])) == len(EXPECTED)
    assert (len(store.customers), len(store.plans), len(store.invoices)) == (2, 1, 1)


async def test_a_resync_resumed_after_a_crash_duplicates_nothing(tenant: Tenant, stack: Stack, payments: Db):
    await billed_history(tenant, payments)
    await connect(tenant, stack)
    integration = await payments.integration(tenant.organization_id)
    catalog, invoicing = peers.Catalog(stack.catalog), peers.Invoicing(stack.invoicing)
    tools = vendors(VendorSettings(chartmogul_api_base=stack.chartmogul.url), catalog)
    replica = History(payments.sessions, catalog, invoicing, tools)
    # A replica took the resync and died mid-gathering: its lease still holds.
    resync = Resync(
        id="rsy_crashed",
        organization_id=tenant.organization_id,
        integration_id=integration.id,
        state=RESYNC_GATHERING,
        lease_until=datetime.now(UTC) + timedelta(hours=1),
    )
    async with payments.sessions() as session, session.begin():
        session.add(resync)
    # The first customer's history was announced before the crash.
    listed = await catalog.list_customers(tenant.organization_id, customers_pb2.ListCustomersRequest(page_size=1))
    first = list(listed.customers)
    facts = await replica._facts(tenant.organization_id, first)
    await replica._announce(resync, facts, frozenset())  # a tool that syncs none of them
    assert await payments.deliveries(integration.id) == []
    await replica._announce(resync, facts, ACCEPTS)
    assert len(await payments.deliveries(integration.id)) == 6
    assert await replica.step() is False  # the lease holds: nobody takes it up yet

    # The lease runs out; another replica takes it up from the start.
    async with payments.sessions() as session, session.begin():
        await session.execute(
            update(Resync).where(Resync.id == resync.id).values(lease_until=utcnow() - timedelta(seconds=1))
        )

    async def resumed() -> None:
        await replica.step()
        async with payments.sessions() as session:
            state = await session.scalar(select(Resync.state).where(Resync.id == resync.id))
        assert state != RESYNC_GATHERING

    await eventually(resumed)
    queued = await payments.deliveries(integration.id)
    assert [(kind, customer) for kind, customer, _ in queued] == EXPECTED  # nothing twice
    async with payments.sessions() as session:
        total = await session.scalar(select(Resync.total_count).where(Resync.id == resync.id))
    assert total == len(EXPECTED)
    await catalog.close()
    await invoicing.close()
