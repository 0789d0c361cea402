"""Free trials, hand-computed: nothing is billed for the trial, usage in it is
tracked but not billed, and billing periods start when it ends; a trial
spanning a calendar boundary prorates the first period; trial_ended is
published once, and never for a subscription cancelled during its trial."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import nats
from nats.js.api import ConsumerConfig, DeliverPolicy

from bxb.invoicing.v1 import events_pb2
from services.common import bus
from services.invoicing.billing import TRIAL_ENDED, Biller
from tests.conftest import Infra, Stack, Tenant, eventually
from tests.service.invoicing_helpers import InvoicingDb, at, create_plan, run_billing, send, subscribe

STANDARD = [{"billable_metric_code": "api_requests", "charge_model": "standard", "properties": {"amount": "0.001"}}]


async def invoices(t: Tenant, customer: str) -> list[dict]:
    """The customer's invoices once the billing run has issued what is due."""
    await t.bill(customer)
    response = await t.http.get(f"/v1/customers/{customer}/invoices", params={"page_size": 100})
    assert response.status_code == 200, response.text
    return sorted(response.json()["invoices"], key=lambda i: i["period_start"])


async def usage(t: Tenant, customer: str, start: str, end: str) -> str:
    body = {"customer_id": customer, "code": "api_requests", "period_start": start, "period_end": end}
    response = await t.http.post("/v1/usage/compute", json=body)
    assert response.status_code == 200, response.text
    return response.json()["value"]


async def test_an_anniversary_trial_moves_the_periods_to_its_end(tenant: Tenant):
    await create_plan(tenant, "pro", STANDARD, amount_cents=4900)
    sub = await subscribe(tenant, "c1", "pro", "2026-01-10T00:00:00Z", trial_period_days=14)
    assert (sub["status"], sub["trial_end_date"]) == ("active", "2026-01-24T00:00:00Z")
    await send(tenant, "c1", 1_000_000, "2026-01-15T00:00:00Z")  # in the trial: tracked, not billed
    await send(tenant, "c1", 100, "2026-01-24T00:00:00Z")  # the trial's end is the first billed instant
    await send(tenant, "c1", 2000, "2026-02-24T00:00:00Z")  # the second period
    finalized = [i for i in await invoices(tenant, "c1") if i["status"] == "finalized"]
    first, second = finalized[:2]
    assert (first["period_start"], first["period_end"]) == ("2026-01-24T00:00:00Z", "2026-02-24T00:00:00Z")
    assert [(f["type"], f["amount_cents"]) for f in first["fees"]] == [("subscription", 4900), ("charge", 10)]
    assert [(f["type"], f["amount_cents"]) for f in second["fees"]] == [("subscription", 4900), ("charge", 200)]
    assert first["fees"][0]["units"] == "1"  # a whole period: not prorated
    assert await usage(tenant, "c1", "2026-01-10T00:00:00Z", "2026-01-24T00:00:00Z") == "1000000"


async def test_a_calendar_trial_spanning_a_month_end_prorates_the_first_period(tenant: Tenant):
    await create_plan(tenant, "pro", STANDARD, amount_cents=4900)
    await subscribe(tenant, "c1", "pro", "2026-01-20T00:00:00Z", trial_period_days=20, billing_time="calendar")
    await send(tenant, "c1", 500_000, "2026-01-25T00:00:00Z")  # January: all trial
    await send(tenant, "c1", 300, "2026-02-08T23:59:59Z")  # the trial's last second
    await send(tenant, "c1", 700, "2026-02-15T00:00:00Z")
    finalized = [i for i in await invoices(tenant, "c1") if i["status"] == "finalized"]
    assert finalized[0]["period_start"] == "2026-02-09T00:00:00Z"  # nothing for January
    first, second = finalized[:2]
    assert first["period_end"] == "2026-03-01T00:00:00Z"
    # 20 of February's 28 days: 4900 x 20/28 = 3500; 700 tokens at $0.001 = 70 cents.
    assert [(f["type"], f["amount_cents"]) for f in first["fees"]] == [("subscription", 3500), ("charge", 70)]
    assert (second["period_start"], second["fees"][0]["amount_cents"]) == ("2026-03-01T00:00:00Z", 4900)


async def test_the_plan_trial_applies_unless_the_subscription_says_otherwise(tenant: Tenant):
    await create_plan(tenant, "trialled", STANDARD, amount_cents=1000, trial_period_days=30)
    plain = await subscribe(tenant, "c1", "trialled", "2026-03-01T00:00:00Z")
    none = await subscribe(tenant, "c2", "trialled", "2026-03-01T00:00:00Z", trial_period_days=0)
    assert (plain["trial_end_date"], none["trial_end_date"]) == ("2026-03-31T00:00:00Z", None)
    assert (await invoices(tenant, "c1"))[0]["period_start"] == "2026-03-31T00:00:00Z"
    assert (await invoices(tenant, "c2"))[0]["period_start"] == "2026-03-01T00:00:00Z"
    for days in (-1, 3651):
        body = {"customer_id": "c3", "plan_code": "trialled", "trial_period_days": days}
        refused = await tenant.http.post("/v1/subscriptions", json=body)
        assert (refused.status_code, refused.json()["error"]["field"]) == (400, "trial_period_days")


async def test_during_the_trial_nothing_is_drafted_and_pricing_looks_at_the_first_paid_period(tenant: Tenant):
    await create_plan(tenant, "pro", STANDARD, amount_cents=4900)
    sub = (
        await tenant.http.post(
            "/v1/subscriptions", json={"customer_id": "c1", "plan_code": "pro", "trial_period_days": 14}
        )
    ).json()
    trial_end = datetime.fromisoformat(sub["trial_end_date"])
    assert trial_end - datetime.fromisoformat(sub["start_date"]) == timedelta(days=14)
    await send(tenant, "c1", 5000, sub["start_date"])
    assert await invoices(tenant, "c1") == []
    priced = await tenant.http.post("/v1/pricing/calculate", json={"customer_id": "c1", "subscription_id": sub["id"]})
    assert priced.status_code == 200, priced.text
    assert priced.json()["period_start"] == sub["trial_end_date"]
    assert priced.json()["total_amount_cents"] == 4900  # the trial's usage is not in it


async def test_a_plan_change_in_the_trial_takes_effect_now_and_keeps_the_rest_of_the_trial(tenant: Tenant):
    await create_plan(tenant, "pro", STANDARD, amount_cents=4900)
    await create_plan(tenant, "basic", STANDARD, amount_cents=100)
    sub = (
        await tenant.http.post(
            "/v1/subscriptions", json={"customer_id": "c1", "plan_code": "pro", "trial_period_days": 14}
        )
    ).json()
    changed = await tenant.http.put(f"/v1/subscriptions/{sub['id']}", json={"plan_code": "basic"})  # a downgrade
    assert changed.status_code == 200, changed.text
    new = changed.json()
    assert (new["status"], new["trial_end_date"]) == ("active", sub["trial_end_date"])
    assert datetime.fromisoformat(new["start_date"]) < datetime.fromisoformat(sub["trial_end_date"])


async def test_trial_ended_is_published_once_and_not_for_a_cancelled_trial(
    infra: Infra, stack: Stack, tenant: Tenant, invoicing_db: InvoicingDb, biller: Biller
):
    nc = await nats.connect(infra.nats.url)
    try:
        js = nc.jetstream()
        config = ConsumerConfig(filter_subject=TRIAL_ENDED, deliver_policy=DeliverPolicy.NEW)
        consumer = await js.pull_subscribe(TRIAL_ENDED, stream=bus.INVOICING.name, config=config)
        await create_plan(tenant, "pro", STANDARD, amount_cents=4900)
        ended = await subscribe(tenant, "c1", "pro", "2026-01-10T00:00:00Z", trial_period_days=14)
        recent = (datetime.now(UTC) - timedelta(days=1)).isoformat()
        cancelled = await subscribe(tenant, "c2", "pro", recent, trial_period_days=14)
        assert (await tenant.http.delete(f"/v1/subscriptions/{cancelled['id']}")).status_code == 200
        await invoicing_db.projected(ended["id"])

        async def cancellation_projected():
            assert (await invoicing_db.projected(cancelled["id"])).terminate_time is not None

        await eventually(cancellation_projected)
        await run_billing(stack, tenant, "c1")
        await run_billing(stack, tenant, "c1")  # a second run announces nothing again
        # First billed a month on, when the cancelled trial's end has passed too: it never converted.
        await biller.run(now=datetime.now(UTC) + timedelta(days=30), org=tenant.organization_id, customer_id="c2")
        assert (await invoicing_db.projected(cancelled["id"])).trial_end_announced is False
        messages = []
        while True:
            try:
                messages += await consumer.fetch(10, timeout=1)
            except TimeoutError:
                break
        mine = [
            events_pb2.TrialEnded.FromString(m.data)
            for m in messages
            if events_pb2.TrialEnded.FromString(m.data).organization_id == tenant.organization_id
        ]
        assert [(e.subscription_id, e.customer_id) for e in mine] == [(ended["id"], "c1")]
        assert mine[0].trial_end_time.ToDatetime(UTC) == at("2026-01-24T00:00:00")
        assert (await invoices(tenant, "c2")) == []  # cancelled in its trial: never billed
    finally:
        await nc.close()


async def test_a_run_that_lost_the_claim_announces_nothing(tenant: Tenant, invoicing_db: InvoicingDb, biller: Biller):
    await create_plan(tenant, "pro", STANDARD, amount_cents=4900)
    sub = await subscribe(tenant, "c1", "pro", "2026-01-10T00:00:00Z", trial_period_days=14)
    stale = await invoicing_db.projected(sub["id"])  # read before another run claims the announcement
    now = datetime.now(UTC)
    assert await biller.announce_trial_end(await invoicing_db.projected(sub["id"]), now) == 1
    assert await biller.announce_trial_end(stale, now) == 0
