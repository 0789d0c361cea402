"""Billing does bounded work: reads issue nothing and stay fast however far
behind billing is; a run bills at most MAX_DUE_PER_RUN invoices of one
subscription and the scheduler goes on at once; a terminated subscription
whose periods are all billed is never read by a run again."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from sqlalchemy import func, select

from services.common.timestamps import format_rfc3339, utcnow
from services.invoicing.billing import MAX_DUE_PER_RUN, Biller, Scheduler
from services.invoicing.models import Invoice, Subscription
from tests.conftest import Tenant, eventually
from tests.service.invoicing_helpers import InvoicingDb, create_plan, on_clock, subscribe

WEEKLY_BASE = {"interval": "weekly"}


async def count(invoicing_db: InvoicingDb, subscription_id: str) -> int:
    async with invoicing_db.sessions() as session:
        query = select(func.count()).select_from(Invoice).where(Invoice.subscription_id == subscription_id)
        return (await session.execute(query)).scalar_one()


async def test_a_subscription_years_behind_is_billed_in_chunks_while_reads_stay_fast(
    tenant: Tenant, invoicing_db: InvoicingDb, biller: Biller
):
    await create_plan(tenant, "weekly", [], amount_cents=100, **WEEKLY_BASE)
    sub = await subscribe(tenant, "old", "weekly", "2024-01-01T00:00:00Z")  # about 150 ended weeks
    await invoicing_db.projected(sub["id"])
    weeks = (utcnow() - (await invoicing_db.projected(sub["id"])).start_time) // timedelta(weeks=1)

    started = asyncio.get_running_loop().time()
    listed = (await tenant.http.get("/v1/customers/old/invoices", params={"page_size": 100})).json()["invoices"]
    assert asyncio.get_running_loop().time() - started < 2
    assert [i["status"] for i in listed] == ["draft"] * 13  # the open week and the 12 newest unbilled ones
    assert await count(invoicing_db, sub["id"]) == 0  # reading issued nothing

    assert await tenant.bill("old") == MAX_DUE_PER_RUN  # one bounded chunk, the oldest weeks first
    async with invoicing_db.sessions() as session:
        first = (await session.execute(select(func.min(Invoice.period_start)))).scalar_one()
    assert format_rfc3339(first) <= "2024-01-01T00:00:00Z"

    org = tenant.organization_id

    class OneOrganization(Biller):
        """The shared test database holds every test's subscriptions; bill only ours."""

        async def sweep(self, now=None, org_="", customer_id="", test_clock_id=""):
            return await super().sweep(now, org=org)

    scheduler = Scheduler(OneOrganization(biller.sessions, biller.fees, biller.relay, biller.settle), interval=3600)
    scheduler.start()
    try:

        async def caught_up():
            assert await count(invoicing_db, sub["id"]) == weeks

        await eventually(caught_up, timeout=60)  # in chunks, one run after another, never waiting the interval
    finally:
        await scheduler.stop()
    listed = (await tenant.http.get("/v1/customers/old/invoices")).json()["invoices"]
    assert [i["status"] for i in listed[:2]] == ["draft", "finalized"]  # only the open week is left a draft


async def test_a_test_clock_moved_by_decades_answers_at_once_and_bills_on_in_the_background(tenant: Tenant):
    await create_plan(tenant, "monthly", [], amount_cents=100)
    clock = await on_clock(tenant, "traveller", frozen="2025-01-01T00:00:00Z")
    await subscribe(tenant, "traveller", "monthly", "2025-01-01T00:00:00Z")
    started = asyncio.get_running_loop().time()
    moved = await tenant.http.post(f"/v1/test_clocks/{clock}/advance", json={"frozen_time": "2045-01-01T00:00:00Z"})
    assert moved.status_code == 200, moved.text
    assert asyncio.get_running_loop().time() - started < 10
    assert moved.json()["invoices_created"] == MAX_DUE_PER_RUN  # the request bills one bounded chunk

    async def all_billed():
        listed = await tenant.http.get("/v1/invoices", params={"customer_id": "traveller", "page_size": 500})
        issued = [i for i in listed.json()["invoices"] if i["status"] == "finalized"]
        assert len(issued) == 240, len(issued)  # 20 years of months

    await eventually(all_billed, timeout=60)  # the scheduler, woken by the chunk the advance billed


async def test_a_terminated_subscription_once_billed_is_never_read_again(
    tenant: Tenant, invoicing_db: InvoicingDb, biller: Biller
):
    await create_plan(tenant, "plain", [], amount_cents=100)
    start = utcnow() - timedelta(days=70)
    sub = await subscribe(tenant, "quitter", "plain", format_rfc3339(start))
    row = await invoicing_db.projected(sub["id"])
    assert (await tenant.http.delete(f"/v1/subscriptions/{sub['id']}")).status_code == 200

    async def terminated():
        assert (await invoicing_db.projected(sub["id"])).terminate_time is not None

    await eventually(terminated)
    patient = Biller(biller.sessions, biller.fees, biller.relay, timedelta(hours=1))
    # Created a moment ago: its arrears wait for the settle delay, so nothing is settled and it is not finished.
    await patient.run(org=tenant.organization_id)
    assert not (await invoicing_db.projected(sub["id"])).billing_finished
    await tenant.bill("quitter")  # every period billed
    await biller.run(org=tenant.organization_id)  # the run after finds nothing due, and marks it
    finished = await invoicing_db.projected(sub["id"])
    assert finished.billing_finished and finished.billed_through == finished.terminate_time
    assert row.start_time == finished.start_time
    async with invoicing_db.sessions() as session:
        unfinished = select(Subscription.id).where(
            Subscription.organization_id == tenant.organization_id, Subscription.billing_finished.is_(False)
        )
        assert (await session.execute(unfinished)).all() == []
