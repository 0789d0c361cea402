"""Progressive billing, hand-computed: reaching a usage threshold invoices
the period so far at once, a recurring threshold repeats, and the period-end
invoice deducts what the threshold invoices billed."""

from __future__ import annotations

import asyncio

import pytest

from bxb.catalog.v1 import plans_pb2
from services.invoicing.billing import Biller, plan_of
from services.invoicing.fees import FeeCalculator
from services.invoicing.progressive import ProgressiveBilling
from services.invoicing.thresholds import crossings
from tests.conftest import Tenant
from tests.service.invoicing_helpers import InvoicingDb, at, create_plan, send, subscribe

CENT = [{"billable_metric_code": "api_requests", "charge_model": "standard", "properties": {"amount": "0.01"}}]
THRESHOLDS = [{"amount_cents": 10000, "threshold_display_name": "$100"}, {"amount_cents": 5000, "recurring": True}]


async def test_thresholds_invoice_the_period_so_far_and_the_period_end_deducts_them(
    tenant: Tenant, invoicing_db: InvoicingDb, biller: Biller
):
    plan = await create_plan(tenant, "metered", CENT, usage_thresholds=THRESHOLDS)
    assert plan["usage_thresholds"] == [
        {"amount_cents": 10000, "threshold_display_name": "$100", "recurring": False},
        {"amount_cents": 5000, "threshold_display_name": None, "recurring": True},
    ]
    sub = await subscribe(tenant, "c1", "metered", "2026-03-01T00:00:00Z")
    for units, day in ((5000, "03"), (7000, "05"), (3000, "20"), (4000, "25")):  # $50, $70, $30, $40
        await send(tenant, "c1", units, f"2026-03-{day}T00:00:00Z")
    await invoicing_db.projected(sub["id"])

    async def run(now: str) -> list:
        await biller.run(now=at(now), org=tenant.organization_id, customer_id="c1")
        issued = sorted(await invoicing_db.invoices(sub["id"]), key=lambda i: i.number)
        return [(i.timing.removeprefix("BILLING_TIMING_"), i.total_amount_cents) for i in issued]

    assert await run("2026-03-04T00:00:00") == []  # $50: below $100
    assert await run("2026-03-06T00:00:00") == [("PROGRESSIVE", 12000)]  # $120 reached $100
    assert await run("2026-03-07T00:00:00") == [("PROGRESSIVE", 12000)]  # nothing new reached
    # $150 reached $100 + $50 (the recurring one): March 6 to 21 bills 15000 - 12000.
    assert await run("2026-03-21T00:00:00") == [("PROGRESSIVE", 12000), ("PROGRESSIVE", 3000)]
    second = max(await invoicing_db.invoices(sub["id"]), key=lambda i: i.number)
    assert (second.period_start, second.period_end) == (at("2026-03-06T00:00:00"), at("2026-03-21T00:00:00"))
    # March's end: $190 in all, less the $150 already billed.
    after = await run("2026-04-02T00:00:00")
    assert after == [("PROGRESSIVE", 12000), ("PROGRESSIVE", 3000), ("IN_ARREARS", 4000)]
    final = max(await invoicing_db.invoices(sub["id"]), key=lambda i: i.number)
    assert [(f["type"], int(f["amount_cents"])) for f in final.fees] == [
        ("FEE_TYPE_CHARGE", 19000),
        ("FEE_TYPE_ALREADY_BILLED", -15000),
    ]
    listed = (await tenant.http.get("/v1/invoices", params={"customer_id": "c1", "page_size": 100})).json()["invoices"]
    assert {i["timing"] for i in listed if i["period_start"].startswith("2026-03")} == {"progressive", "in_arrears"}


@pytest.mark.parametrize(
    ("usage", "expected"),
    [(0, 0), (9999, 0), (10000, 1), (14999, 1), (15000, 2), (19999, 2), (20000, 3), (10**12, 199999999)],
)
def test_crossings_count_fixed_then_recurring_thresholds(usage, expected):
    given = [plans_pb2.UsageThreshold(amount_cents=10000), plans_pb2.UsageThreshold(amount_cents=5000, recurring=True)]
    assert crossings(given, usage) == expected


def test_a_recurring_threshold_alone_repeats_from_zero():
    assert crossings([plans_pb2.UsageThreshold(amount_cents=300, recurring=True)], 1000) == 3
    assert crossings([plans_pb2.UsageThreshold(amount_cents=100), plans_pb2.UsageThreshold(amount_cents=200)], 150) == 1


@pytest.mark.parametrize(
    ("thresholds", "field"),
    [
        ([{"amount_cents": 0}], "usage_thresholds[0].amount_cents"),
        ([{"amount_cents": 200}, {"amount_cents": 100}], "usage_thresholds"),
        ([{"amount_cents": 100}, {"amount_cents": 100}], "usage_thresholds"),
        ([{"amount_cents": 1, "recurring": True}, {"amount_cents": 2, "recurring": True}], "usage_thresholds"),
        ([{"amount_cents": 1, "threshold_display_name": "x" * 201}], "usage_thresholds[0].threshold_display_name"),
        ([{"amount_cents": 1}] * 51, "usage_thresholds"),
    ],
)
async def test_bad_thresholds_are_refused_naming_their_field(tenant: Tenant, thresholds, field):
    body = {"code": "p", "interval": "monthly", "usage_thresholds": thresholds}
    response = await tenant.http.post("/v1/plans", json=body)
    assert (response.status_code, response.json()["error"]["field"]) == (400, field), response.text


async def test_a_threshold_waits_for_the_periods_before_it_and_for_the_subscription_to_start(
    tenant: Tenant, invoicing_db: InvoicingDb, biller: Biller
):
    await create_plan(tenant, "metered", CENT, usage_thresholds=THRESHOLDS[:1])
    sub = await subscribe(tenant, "c1", "metered", "2026-02-01T00:00:00Z")
    await send(tenant, "c1", 20000, "2026-03-02T00:00:00Z")  # $200 in March
    await invoicing_db.projected(sub["id"])
    await biller.run(now=at("2026-01-15T00:00:00"), org=tenant.organization_id, customer_id="c1")  # not started
    # The scheduler's run waits the settle delay after a backdated creation: February is not closed yet.
    await biller.run(now=at("2026-03-06T00:00:00"), org=tenant.organization_id)
    assert await invoicing_db.invoices(sub["id"]) == []
    await biller.run(now=at("2026-03-06T00:00:00"), org=tenant.organization_id, customer_id="c1")
    february, march = await invoicing_db.invoices(sub["id"])  # February closes first (at 0), then March
    assert (february.timing, february.total_amount_cents) == ("BILLING_TIMING_IN_ARREARS", 0)
    assert (march.timing, march.period_start, march.total_amount_cents) == (
        "BILLING_TIMING_PROGRESSIVE",
        at("2026-03-01T00:00:00"),
        20000,
    )


class Paused(FeeCalculator):
    """Measures as invoicing does, but waits inside the threshold check until released."""

    def __init__(self, fees: FeeCalculator):
        super().__init__(fees.sessions, fees.metering, fees.catalog)
        self.measuring, self.release = asyncio.Event(), asyncio.Event()

    async def charge_fees(self, *args, **kwargs):
        self.measuring.set()
        await self.release.wait()
        return await super().charge_fees(*args, **kwargs)


async def test_a_threshold_invoice_that_lost_a_race_is_not_issued(
    tenant: Tenant, invoicing_db: InvoicingDb, biller: Biller
):
    await create_plan(tenant, "metered", CENT, usage_thresholds=THRESHOLDS[:1])
    sub = await subscribe(tenant, "c1", "metered", "2026-03-01T00:00:00Z")
    await send(tenant, "c1", 20000, "2026-03-02T00:00:00Z")
    row = await invoicing_db.projected(sub["id"])
    paused = Paused(biller.fees)
    progressive = ProgressiveBilling(biller.sessions, paused, biller.progressive.requested)
    checking = asyncio.create_task(progressive.check(row, plan_of(row), at("2026-03-06T00:00:00")))
    await paused.measuring.wait()
    body = {"customer_id": "c1", "cutoff_date": "2026-03-03T00:00:00Z"}
    assert (await tenant.http.post("/v1/invoices", json=body)).status_code == 201
    paused.release.set()
    assert await checking == 0
    assert [i.timing for i in await invoicing_db.invoices(sub["id"])] == ["BILLING_TIMING_ON_REQUEST"]
