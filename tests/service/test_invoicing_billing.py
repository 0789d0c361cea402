"""The billing run: hand-computed invoices, exactly once per period."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

import pytest

from services.invoicing.billing import Biller, Scheduler, failed
from services.invoicing.fees import FeeCalculator
from services.invoicing.pricing.money import AmountOutOfRange
from tests.conftest import Stack, Tenant, eventually
from tests.service.invoicing_helpers import InvoicingDb, at, create_plan, run_billing, send, subscribe

STANDARD = [{"billable_metric_code": "api_requests", "charge_model": "standard", "properties": {"amount": "0.001"}}]
PRO = [
    {
        "billable_metric_code": "api_requests",
        "charge_model": "graduated",
        "properties": {
            "graduated_ranges": [
                {"from": 0, "to": 100000, "per_unit": "0"},
                {"from": 100001, "to": None, "per_unit": "0.0005"},
            ]
        },
    }
]


async def test_walkthrough_02_base_fee_plus_graduated_overage_is_12400(tenant: Tenant):
    await create_plan(tenant, "pro", PRO, amount_cents=4900)
    await subscribe(tenant, "cus_9a4b2", "pro", "2026-09-01T00:00:00Z")
    await send(tenant, "cus_9a4b2", 250000, "2026-09-10T12:00:00Z")
    await tenant.bill("cus_9a4b2")

    body = (await tenant.http.get("/v1/customers/cus_9a4b2/invoices")).json()
    matching = [i for i in body["invoices"] if i["period_start"] == "2026-09-01T00:00:00Z"]
    assert len(matching) == 1, body
    [invoice] = matching
    subscription_fee, charge_fee = invoice["fees"]
    assert (subscription_fee["type"], subscription_fee["amount_cents"]) == ("subscription", 4900)
    assert (charge_fee["type"], charge_fee["amount_cents"], charge_fee["units"]) == ("charge", 7500, "250000")
    assert [(t["units"], t["amount"]) for t in charge_fee["tiers"]] == [("100000", "0"), ("150000", "75")]
    assert (invoice["subtotal_cents"], invoice["total_amount_cents"]) == (12400, 12400)


async def test_every_ended_period_is_billed_once_with_its_own_usage(
    stack: Stack, tenant: Tenant, invoicing_db: InvoicingDb
):
    await create_plan(tenant, "payg", STANDARD)
    sub = await subscribe(tenant, "c1", "payg", "2026-07-31T00:00:00Z")
    await send(tenant, "c1", 1000, "2026-07-31T00:00:00Z")  # first instant of the first period counts
    await send(tenant, "c1", 500, "2026-08-30T23:59:59.999Z")  # last millisecond of the first period
    await send(tenant, "c1", 7, "2026-08-31T00:00:00Z")  # first instant of the second period
    await invoicing_db.projected(sub["id"])

    assert await run_billing(stack, tenant, "c1") >= 3
    invoices = await invoicing_db.invoices(sub["id"])
    periods = [(i.period_start.isoformat(), i.period_end.isoformat(), i.total_amount_cents) for i in invoices[:3]]
    assert periods == [
        ("2026-07-31T00:00:00+00:00", "2026-08-31T00:00:00+00:00", 150),
        ("2026-08-31T00:00:00+00:00", "2026-09-30T00:00:00+00:00", 1),  # 0.007 rounds half up to 1 cent
        ("2026-09-30T00:00:00+00:00", "2026-10-31T00:00:00+00:00", 0),  # clamped from the Jul 31 anchor
    ]
    assert await run_billing(stack, tenant, "c1") == 0  # nothing left to bill


async def test_overlapping_runs_bill_each_period_exactly_once_with_gapless_numbers(
    tenant: Tenant, invoicing_db: InvoicingDb, biller: Biller
):
    await create_plan(tenant, "payg", STANDARD)
    subs = [await subscribe(tenant, f"cus_{n}", "payg", "2026-06-01T00:00:00Z") for n in range(4)]
    for n in range(4):
        await send(tenant, f"cus_{n}", 1000 * (n + 1), "2026-06-15T00:00:00Z")
    for sub in subs:
        await invoicing_db.projected(sub["id"])

    created = await asyncio.gather(*(biller.run(org=tenant.organization_id) for _ in range(3)))
    periods = len(await invoicing_db.invoices(subs[0]["id"]))
    assert sum(created) == 4 * periods  # three racing runs, one invoice per subscription and period

    numbers = []
    for n, sub in enumerate(subs):
        invoices = await invoicing_db.invoices(sub["id"])
        assert [i.period_start for i in invoices] == sorted({i.period_start for i in invoices})
        assert invoices[0].total_amount_cents == 100 * (n + 1)
        numbers += [int(i.number.removeprefix("INV-")) for i in invoices]
    assert sorted(numbers) == list(range(1, len(numbers) + 1))


async def test_scheduler_waits_the_settle_delay_after_a_backdated_subscription(
    tenant: Tenant, invoicing_db: InvoicingDb, biller: Biller
):
    await create_plan(tenant, "payg", STANDARD)
    sub = await subscribe(tenant, "late", "payg", "2026-08-01T00:00:00Z")
    row = await invoicing_db.projected(sub["id"])
    patient = Biller(biller.sessions, biller.fees, biller.relay, timedelta(hours=1))

    assert await patient.run(org=tenant.organization_id) == 0  # created just now: give its events time
    assert await patient.run(now=row.create_time + timedelta(hours=1), org=tenant.organization_id) > 0


async def test_settle_delay_holds_back_a_period_that_just_ended(
    tenant: Tenant, invoicing_db: InvoicingDb, biller: Biller
):
    await create_plan(tenant, "payg", STANDARD)
    sub = await subscribe(tenant, "edge", "payg", "2026-08-01T00:00:00Z")
    await invoicing_db.projected(sub["id"])
    patient = Biller(biller.sessions, biller.fees, biller.relay, timedelta(minutes=5))
    just_after = at("2026-09-01T00:04:59")
    assert await patient.run(now=just_after, org=tenant.organization_id, customer_id="edge") == 0
    assert await patient.run(now=at("2026-09-01T00:05:00"), org=tenant.organization_id, customer_id="edge") == 1


async def test_scheduler_bills_at_start_and_when_woken(tenant: Tenant, invoicing_db: InvoicingDb, biller: Biller):
    await create_plan(tenant, "payg", STANDARD)
    sub = await subscribe(tenant, "sched", "payg", "2026-08-01T00:00:00Z")
    await invoicing_db.projected(sub["id"])
    org = tenant.organization_id

    class OneOrganization(Biller):
        """The shared test database holds every test's subscriptions; bill only ours."""

        async def sweep(self, now=None, org_="", customer_id="", test_clock_id=""):
            return await super().sweep(now, org=org, customer_id=customer_id)

    scheduler = Scheduler(OneOrganization(biller.sessions, biller.fees, biller.relay, biller.settle), interval=3600)
    scheduler.start()
    try:

        async def billed():
            assert await invoicing_db.invoices(sub["id"])

        await eventually(billed)
        second = await subscribe(tenant, "sched2", "payg", "2026-08-01T00:00:00Z")
        await invoicing_db.projected(second["id"])
        scheduler.wake()

        async def billed_second():
            assert await invoicing_db.invoices(second["id"])

        await eventually(billed_second)
    finally:
        await scheduler.stop()
    await scheduler.stop()  # stopping twice is harmless


async def test_a_failing_run_is_logged_and_retried(biller: Biller, caplog):
    class Broken(Biller):
        calls = 0

        async def sweep(self, *args, **kwargs):
            Broken.calls += 1
            raise RuntimeError("database down")

    scheduler = Scheduler(Broken(biller.sessions, biller.fees, biller.relay, biller.settle), interval=0.01)
    scheduler.start()
    await eventually(lambda: _assert(Broken.calls >= 2))
    await scheduler.stop()
    assert "billing run failed" in caplog.text


async def _assert(condition: bool) -> None:
    assert condition


async def test_calendar_billing_prorates_the_first_base_fee_by_time(tenant: Tenant, invoicing_db: InvoicingDb):
    await create_plan(tenant, "cal", STANDARD, amount_cents=3000)
    sub = await subscribe(tenant, "cal1", "cal", "2026-09-21T00:00:00Z", billing_time="calendar")
    await invoicing_db.projected(sub["id"])
    body = (await tenant.http.get("/v1/customers/cal1/invoices")).json()
    first = next(i for i in body["invoices"] if i["period_start"] == "2026-09-21T00:00:00Z")
    assert first["period_end"] == "2026-10-01T00:00:00Z"
    base = first["fees"][0]
    # 10 of September's 30 days: 3000 * 10/30 = 1000 cents.
    assert (base["type"], base["amount_cents"], base["units"]) == (
        "subscription",
        1000,
        "0.3333333333333333333333333333",
    )
    october = next(i for i in body["invoices"] if i["period_start"] == "2026-10-01T00:00:00Z")
    assert october["fees"][0]["amount_cents"] == 3000


@pytest.mark.parametrize(("currency", "amount", "tokens", "expected"), [("JPY", "0.5", 3, 2), ("KWD", "0.0005", 3, 2)])
async def test_zero_and_three_decimal_currencies_round_half_up(
    tenant: Tenant, invoicing_db: InvoicingDb, currency, amount, tokens, expected
):
    charges = [{"billable_metric_code": "api_requests", "charge_model": "standard", "properties": {"amount": amount}}]
    await create_plan(tenant, f"p_{currency}", charges, currency=currency)
    sub = await subscribe(tenant, f"c_{currency}", f"p_{currency}", "2026-08-01T00:00:00Z")
    await send(tenant, f"c_{currency}", tokens, "2026-08-02T00:00:00Z")
    await invoicing_db.projected(sub["id"])
    invoice = (await tenant.http.get(f"/v1/customers/c_{currency}/invoices")).json()["invoices"][-1]
    # JPY: 3 x 0.5 = 1.5 yen -> 2; KWD: 3 x 0.0005 = 0.0015 dinar -> 2 fils.
    assert (invoice["currency"], invoice["total_amount_cents"]) == (currency, expected)


async def test_one_failing_subscription_does_not_stop_the_others(
    tenant: Tenant, invoicing_db: InvoicingDb, biller: Biller
):
    await create_plan(tenant, "payg", STANDARD, amount_cents=100)
    broken = await subscribe(tenant, "c1", "payg", "2026-07-01T00:00:00Z")
    fine = await subscribe(tenant, "c2", "payg", "2026-07-01T00:00:00Z")
    await invoicing_db.projected(broken["id"])
    await invoicing_db.projected(fine["id"])

    class OneBroken(FeeCalculator):
        async def jobs_fees(self, jobs):
            if any(subscription.id == broken["id"] for subscription, *_ in jobs):
                raise RuntimeError("metering down for this one")
            return await super().jobs_fees(jobs)

    fees = OneBroken(biller.fees.sessions, biller.fees.metering, biller.fees.catalog)
    # Both subscriptions are on one page, which fails; then each is billed on its own.
    failing = Biller(biller.sessions, fees, biller.relay, biller.settle)
    with pytest.raises(RuntimeError):
        await failing.run(org=tenant.organization_id)
    assert [i.period_start for i in await invoicing_db.invoices(fine["id"])][:2] == [
        at("2026-07-01T00:00:00"),
        at("2026-08-01T00:00:00"),
    ]
    assert await invoicing_db.invoices(broken["id"]) == []
    alone = await invoicing_db.projected(broken["id"])
    with pytest.raises(RuntimeError):  # a page of one fails as it is
        await failing.bill(alone, at("2026-09-02T00:00:00"), waits_after_creation=False)


async def test_a_page_failing_once_is_billed_again_one_subscription_at_a_time(
    tenant: Tenant, invoicing_db: InvoicingDb, biller: Biller
):
    await create_plan(tenant, "payg", STANDARD, amount_cents=100)
    subscriptions = [await subscribe(tenant, f"c{n}", "payg", "2026-07-01T00:00:00Z") for n in range(3)]
    for sub in subscriptions:
        await invoicing_db.projected(sub["id"])

    class FailsOnce(FeeCalculator):
        failed = 0

        async def jobs_fees(self, jobs):
            if not self.failed:
                self.failed += 1
                raise RuntimeError("a moment's outage")
            return await super().jobs_fees(jobs)

    fees = FailsOnce(biller.fees.sessions, biller.fees.metering, biller.fees.catalog)
    created = await Biller(biller.sessions, fees, biller.relay, biller.settle).run(org=tenant.organization_id)
    billed = [await invoicing_db.invoices(sub["id"]) for sub in subscriptions]
    assert fees.failed == 1
    assert len(billed[0]) >= 4  # July to October at least
    assert [len(invoices) for invoices in billed] == [len(billed[0])] * 3
    assert created == 3 * len(billed[0])


async def test_following_a_scope_bills_it_to_the_end_once_at_a_time_and_survives_a_failure(biller: Biller, caplog):
    sweeps: list[tuple] = []

    class Behind(Biller):
        """Two runs behind, then caught up; then failing."""

        async def sweep(self, now=None, org="", customer_id="", test_clock_id=""):
            sweeps.append((org, customer_id, test_clock_id))
            await asyncio.sleep(0.01)
            if len(sweeps) > 3:
                raise RuntimeError("database down")
            return 0, len(sweeps) < 3

    scheduler = Scheduler(Behind(biller.sessions, biller.fees, biller.relay, biller.settle), interval=3600)
    scheduler.follow("org_f", "c1")
    scheduler.follow("org_f", "c1")  # already followed: one task
    await eventually(lambda: _assert(scheduler._following == {}))
    assert sweeps == [("org_f", "c1", "")] * 3
    scheduler.follow("org_f", test_clock_id="clk")
    await eventually(lambda: _assert(scheduler._following == {}))
    assert "billing ('org_f', '', 'clk') in the background failed" in caplog.text
    await scheduler.stop()


def test_a_failed_run_is_logged_in_one_line_when_the_domain_expects_it(caplog):
    logger = logging.getLogger("bxb.test_billing")
    with caplog.at_level(logging.WARNING, logger="bxb.test_billing"):
        failed(logger, AmountOutOfRange("the charge of 'tokens' comes to too much"), "billing run failed")
        failed(logger, RuntimeError("database down"), "billing run failed")
    expected, unexpected = caplog.records
    assert (expected.levelname, expected.getMessage(), expected.exc_info) == (
        "WARNING",
        "billing run failed: the charge of 'tokens' comes to too much",
        None,
    )
    assert (unexpected.levelname, unexpected.getMessage()) == ("ERROR", "billing run failed")
    assert unexpected.exc_info[1].args == ("database down",)
