"""When invoices are issued: in advance at a period's start, in arrears at its
end, up to a subscription's termination; hand-computed amounts."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from bxb.catalog.v1 import events_pb2 as catalog_events
from bxb.catalog.v1 import plans_pb2, subscriptions_pb2
from services.common import peers
from services.common.periods import add_months
from services.common.timestamps import format_rfc3339, parse_rfc3339, to_proto, utcnow
from services.invoicing.billing import Biller, has_advance_fees
from services.invoicing.fees import FeeCalculator
from services.invoicing.models import Invoice, Subscription
from services.invoicing.projection import SubscriptionProjection
from tests.conftest import Stack, Tenant, unique
from tests.service.invoicing_helpers import InvoicingDb, at, create_plan, send, subscribe

CENT = [{"billable_metric_code": "api_requests", "charge_model": "standard", "properties": {"amount": "0.01"}}]


async def terminate(invoicing_db: InvoicingDb, tenant: Tenant, sub: dict, when: str) -> None:
    """What the catalog announces when it terminates a subscription (or schedules its end)."""
    event = catalog_events.SubscriptionUpdated(
        event_id=unique("evt"),
        organization_id=tenant.organization_id,
        subscription=subscriptions_pb2.Subscription(
            id=sub["id"], customer_id=sub["customer_id"], plan_code=sub["plan_code"], terminate_time=to_proto(at(when))
        ),
    )
    await SubscriptionProjection(invoicing_db.sessions).handle(
        "bxb.catalog.v1.subscription_updated", event.SerializeToString()
    )


def summary(invoice: Invoice) -> tuple:
    """(timing, period start, period end, [(fee type, amount)], total) in short form."""
    return (
        invoice.timing.removeprefix("BILLING_TIMING_"),
        invoice.period_start.date().isoformat(),
        invoice.period_end.date().isoformat(),
        [(f["type"].removeprefix("FEE_TYPE_"), int(f.get("amount_cents", 0))) for f in invoice.fees],
        invoice.total_amount_cents,
    )


async def issued(invoicing_db: InvoicingDb, sub: dict) -> list[Invoice]:
    return sorted(await invoicing_db.invoices(sub["id"]), key=lambda i: i.number)


def test_a_plan_has_advance_fees_with_a_base_fee_paid_in_advance_or_a_charge_paid_in_advance():
    assert has_advance_fees(plans_pb2.Plan(pay_in_advance=True, amount_cents=1))
    assert not has_advance_fees(plans_pb2.Plan(pay_in_advance=True))  # nothing to pay
    assert not has_advance_fees(plans_pb2.Plan(amount_cents=1, charges=[plans_pb2.Charge()]))
    assert has_advance_fees(plans_pb2.Plan(charges=[plans_pb2.Charge(), plans_pb2.Charge(pay_in_advance=True)]))


async def test_a_base_fee_paid_in_advance_is_invoiced_at_each_period_start(
    tenant: Tenant, invoicing_db: InvoicingDb, biller: Biller
):
    await create_plan(tenant, "adv", CENT, amount_cents=3000, pay_in_advance=True)
    sub = await subscribe(tenant, "adv1", "adv", "2026-09-01T00:00:00Z")
    await send(tenant, "adv1", 500, "2026-09-10T00:00:00Z")
    await invoicing_db.projected(sub["id"])
    org = tenant.organization_id

    assert await biller.run(now=at("2026-08-31T23:59:59"), org=org, customer_id="adv1") == 0  # not started
    assert await biller.run(now=at("2026-09-01T00:00:00"), org=org, customer_id="adv1") == 1  # no settle wait
    [september] = await issued(invoicing_db, sub)
    assert summary(september) == ("IN_ADVANCE", "2026-09-01", "2026-10-01", [("SUBSCRIPTION", 3000)], 3000)
    assert (september.issue_time, september.number) == (at("2026-09-01T00:00:00"), "INV-000001")
    assert await biller.run(now=at("2026-09-30T23:59:59"), org=org, customer_id="adv1") == 0

    # At the boundary: September's usage in arrears (its base fee was paid), October's base fee in advance.
    assert await biller.run(now=at("2026-10-01T00:00:00"), org=org, customer_id="adv1") == 2
    assert [summary(i) for i in await issued(invoicing_db, sub)] == [
        ("IN_ADVANCE", "2026-09-01", "2026-10-01", [("SUBSCRIPTION", 3000)], 3000),
        ("IN_ARREARS", "2026-09-01", "2026-10-01", [("CHARGE", 500)], 500),  # 500 tokens x 0.01 = 5.00
        ("IN_ADVANCE", "2026-10-01", "2026-11-01", [("SUBSCRIPTION", 3000)], 3000),
    ]
    assert [i.number for i in await issued(invoicing_db, sub)] == ["INV-000001", "INV-000002", "INV-000003"]
    assert await biller.run(now=at("2026-10-01T00:00:00"), org=org, customer_id="adv1") == 0


async def test_a_flat_charge_paid_in_advance_goes_to_the_advance_invoice_and_the_base_fee_to_arrears(
    tenant: Tenant, invoicing_db: InvoicingDb, biller: Biller
):
    flat = [
        {
            "billable_metric_code": "seats",
            "charge_model": "flat",
            "properties": {"amount": "20"},
            "pay_in_advance": True,
        }
    ]
    await create_plan(tenant, "seat", flat, amount_cents=1000)
    sub = await subscribe(tenant, "seat1", "seat", "2026-09-01T00:00:00Z")
    await invoicing_db.projected(sub["id"])

    assert await biller.run(now=at("2026-10-01T00:00:00"), org=tenant.organization_id, customer_id="seat1") == 3
    assert [summary(i) for i in await issued(invoicing_db, sub)] == [
        ("IN_ADVANCE", "2026-09-01", "2026-10-01", [("CHARGE", 2000)], 2000),
        ("IN_ARREARS", "2026-09-01", "2026-10-01", [("SUBSCRIPTION", 1000)], 1000),
        ("IN_ADVANCE", "2026-10-01", "2026-11-01", [("CHARGE", 2000)], 2000),
    ]


async def test_a_period_without_arrears_fees_gets_no_arrears_invoice_and_is_not_priced_again(
    tenant: Tenant, invoicing_db: InvoicingDb, biller: Biller
):
    await create_plan(tenant, "upfront", [], amount_cents=2500, pay_in_advance=True)
    sub = await subscribe(tenant, "up1", "upfront", "2026-09-01T00:00:00Z")
    await invoicing_db.projected(sub["id"])

    assert await biller.run(now=at("2026-10-15T00:00:00"), org=tenant.organization_id, customer_id="up1") == 2
    assert [summary(i) for i in await issued(invoicing_db, sub)] == [
        ("IN_ADVANCE", "2026-09-01", "2026-10-01", [("SUBSCRIPTION", 2500)], 2500),
        ("IN_ADVANCE", "2026-10-01", "2026-11-01", [("SUBSCRIPTION", 2500)], 2500),
    ]
    async with invoicing_db.sessions() as session:
        row = await session.get(Subscription, sub["id"])
    assert (row.billed_through, row.advance_billed_through) == (at("2026-10-01T00:00:00"), at("2026-11-01T00:00:00"))


async def test_termination_mid_period_prorates_the_base_fee_and_counts_usage_up_to_the_end(
    tenant: Tenant, invoicing_db: InvoicingDb, biller: Biller
):
    await create_plan(tenant, "basic", CENT, amount_cents=3100)
    sub = await subscribe(tenant, "term1", "basic", "2026-01-01T00:00:00Z")
    await send(tenant, "term1", 100, "2026-03-10T00:00:00Z")
    await send(tenant, "term1", 900, "2026-03-16T00:00:00Z")  # the instant it ends: not counted
    await send(tenant, "term1", 700, "2026-04-02T00:00:00Z")
    await invoicing_db.projected(sub["id"])
    await terminate(invoicing_db, tenant, sub, "2026-03-16T00:00:00")
    org = tenant.organization_id
    patient = Biller(biller.sessions, biller.fees, biller.relay, timedelta(minutes=5))

    assert await patient.run(now=at("2026-03-16T00:04:59"), org=org, customer_id="term1") == 2  # Jan, Feb
    assert await patient.run(now=at("2026-03-16T00:05:00"), org=org, customer_id="term1") == 1  # settled
    assert await patient.run(now=at("2026-06-01T00:00:00"), org=org, customer_id="term1") == 0  # no period after
    assert [summary(i) for i in await issued(invoicing_db, sub)] == [
        ("IN_ARREARS", "2026-01-01", "2026-02-01", [("SUBSCRIPTION", 3100), ("CHARGE", 0)], 3100),
        ("IN_ARREARS", "2026-02-01", "2026-03-01", [("SUBSCRIPTION", 3100), ("CHARGE", 0)], 3100),
        # 15 of March's 31 days: 3100 x 15/31 = 1500; 100 tokens x 0.01 = 1.00.
        ("IN_ARREARS", "2026-03-01", "2026-03-16", [("SUBSCRIPTION", 1500), ("CHARGE", 100)], 1600),
    ]


async def test_a_subscription_ending_before_it_starts_is_never_billed(
    tenant: Tenant, invoicing_db: InvoicingDb, biller: Biller
):
    await create_plan(tenant, "later", CENT, amount_cents=1000, pay_in_advance=True)
    sub = await subscribe(tenant, "never", "later", "2026-05-01T00:00:00Z")
    await invoicing_db.projected(sub["id"])
    await terminate(invoicing_db, tenant, sub, "2026-05-01T00:00:00")  # a pending subscription cancelled
    assert await biller.run(now=at("2026-09-01T00:00:00"), org=tenant.organization_id, customer_id="never") == 0
    assert await invoicing_db.invoices(sub["id"]) == []


async def test_an_upgrade_bills_the_old_plan_up_to_the_switch_and_the_new_one_from_it(
    tenant: Tenant, invoicing_db: InvoicingDb, biller: Biller
):
    await create_plan(tenant, "small", CENT, amount_cents=3100)
    await create_plan(tenant, "large", CENT, amount_cents=6200)
    old = await subscribe(tenant, "upg", "small", "2026-01-01T00:00:00Z")
    await send(tenant, "upg", 100, "2026-03-10T00:00:00Z")  # while the old plan runs
    await send(tenant, "upg", 200, "2026-03-20T00:00:00Z")  # after the switch
    await invoicing_db.projected(old["id"])
    await terminate(invoicing_db, tenant, old, "2026-03-16T00:00:00")
    new = await subscribe(tenant, "upg", "large", "2026-03-16T00:00:00Z")
    await invoicing_db.projected(new["id"])

    assert await biller.run(now=at("2026-04-16T00:00:00"), org=tenant.organization_id, customer_id="upg") == 4
    assert [summary(i) for i in await issued(invoicing_db, old)][-1] == (
        "IN_ARREARS",
        "2026-03-01",
        "2026-03-16",
        [("SUBSCRIPTION", 1500), ("CHARGE", 100)],  # 3100 x 15/31, and 100 tokens
        1600,
    )
    assert [summary(i) for i in await issued(invoicing_db, new)] == [
        ("IN_ARREARS", "2026-03-16", "2026-04-16", [("SUBSCRIPTION", 6200), ("CHARGE", 200)], 6400),
    ]


async def test_racing_runs_issue_one_invoice_per_period_and_timing_with_gapless_numbers(
    stack: Stack, tenant: Tenant, invoicing_db: InvoicingDb, biller: Biller
):
    await create_plan(tenant, "race", CENT, amount_cents=1000, pay_in_advance=True)
    subs = [await subscribe(tenant, f"race{n}", "race", "2026-06-01T00:00:00Z") for n in range(3)]
    for n, sub in enumerate(subs):
        await send(tenant, f"race{n}", 100 * (n + 1), "2026-06-15T00:00:00Z")
        await invoicing_db.projected(sub["id"])
    await terminate(invoicing_db, tenant, subs[0], "2026-07-16T00:00:00")
    metering = peers.Metering(stack.metering)  # a second biller, as a second invoicing process
    other = Biller(invoicing_db.sessions, FeeCalculator(invoicing_db.sessions, metering), biller.relay, timedelta(0))
    try:
        now, org = at("2026-08-10T00:00:00"), tenant.organization_id
        runs = [b.run(now=now, org=org, customer_id=f"race{n}") for n in range(3) for b in (biller, other, biller)]
        created = await asyncio.gather(*runs)
    finally:
        await metering.close()

    # The terminated one: June and the cut July, each in advance and in arrears. The others: June, July
    # and August in advance; June and July in arrears.
    counts = [len(await invoicing_db.invoices(sub["id"])) for sub in subs]
    assert counts == [4, 5, 5]
    assert sum(created) == 14
    numbers = []
    for sub in subs:
        invoices = await invoicing_db.invoices(sub["id"])
        keys = [(i.period_start, i.timing) for i in invoices]
        assert len(keys) == len(set(keys))
        numbers += [int(i.number.removeprefix("INV-")) for i in invoices]
    assert sorted(numbers) == list(range(1, 15))
    cut = [
        summary(i) for i in await invoicing_db.invoices(subs[0]["id"]) if i.period_start == at("2026-07-01T00:00:00")
    ]
    # The end was known before July was billed: 15 of its 31 days of 10.00 in advance (483.87 cents).
    assert sorted(cut) == [
        ("IN_ADVANCE", "2026-07-01", "2026-07-16", [("SUBSCRIPTION", 484)], 484),
        ("IN_ARREARS", "2026-07-01", "2026-07-16", [("CHARGE", 0)], 0),
    ]


async def test_terminating_through_the_api_bills_the_cut_period(tenant: Tenant, invoicing_db: InvoicingDb):
    await create_plan(tenant, "stop", CENT, amount_cents=3000)
    start = (utcnow() - timedelta(days=40)).replace(microsecond=0)  # one ended period, the second one open
    sub = await subscribe(tenant, "stopper", "stop", format_rfc3339(start))
    await invoicing_db.projected(sub["id"])
    await send(tenant, "stopper", 300, format_rfc3339(utcnow() - timedelta(hours=1)))

    response = await tenant.http.delete(f"/v1/subscriptions/{sub['id']}")
    assert response.status_code == 200, response.text
    ended = response.json()["terminated_at"]
    await tenant.bill("stopper")
    body = (await tenant.http.get("/v1/customers/stopper/invoices")).json()
    last, first = body["invoices"]  # no draft: nothing is open any more
    assert (first["period_start"], first["period_end"]) == (format_rfc3339(start), format_rfc3339(add_months(start, 1)))
    assert (last["status"], last["period_start"], last["period_end"]) == ("finalized", first["period_end"], ended)
    base, charge = last["fees"]
    assert (charge["units"], charge["amount_cents"]) == ("300", 300)
    cut = parse_rfc3339(ended) - add_months(start, 1)
    full = add_months(start, 2) - add_months(start, 1)
    assert abs(base["amount_cents"] - 3000 * (cut / full)) <= 0.5  # the base fee of the time it ran
