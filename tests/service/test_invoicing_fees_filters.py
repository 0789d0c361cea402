"""FeeCalculator against real metering (chdb) and invoicing's PostgreSQL:
charge filters and groups as fee lines, minimum spend true-ups, the plan's
minimum commitment, what is billed in advance and in arrears, and which
subscription of a customer counts an event. Amounts are hand-computed."""

from __future__ import annotations

from datetime import timedelta

import pytest

from bxb.catalog.v1 import billable_metrics_pb2
from bxb.invoicing.v1 import invoices_pb2 as pb
from services.common import peers
from services.common.timestamps import from_proto
from services.invoicing.fees import FeeCalculator
from tests.conftest import Stack, Tenant
from tests.service.invoicing_helpers import at
from tests.service.pricing_helpers import Desk, charge, metric, open_desk, period, plan, price_filter, props

ADVANCE, ARREARS = pb.BILLING_TIMING_IN_ADVANCE, pb.BILLING_TIMING_IN_ARREARS
SEPTEMBER = period("2026-09-01", "2026-10-01")


@pytest.fixture
async def desk(stack: Stack, tenant: Tenant):
    async with open_desk(stack, tenant) as opened:
        yield opened


def lines(fees: list[pb.Fee]) -> list[tuple]:
    """(type, filter, group, units, events, amount in cents) of each fee."""
    return [
        (
            pb.FeeType.Name(f.type).removeprefix("FEE_TYPE_"),
            f.filter,
            dict(f.group),
            f.units,
            f.events_count,
            f.amount_cents,
        )
        for f in fees
    ]


async def test_each_filter_prices_its_events_and_the_default_prices_the_rest(desk: Desk):
    priced = charge(
        properties=props(amount="0.01"),
        invoice_display_name="API calls",
        filters=[
            price_filter({"region": ["us-east-1"]}, amount="0.02"),
            # Declared later but more specific: an event matching both filters is priced here.
            price_filter({"region": ["us-east-1"], "tier": ["premium"]}, amount="0.05"),
            price_filter({"region": ["eu-west-1", "eu-central-1"]}, "Europe", amount="0.03"),
        ],
    )
    sub = await desk.subscribe("cus", plan(priced), "2026-09-01")
    await desk.send("cus", "requests", "2026-09-02", tokens=60, region="us-east-1")
    await desk.send("cus", "requests", "2026-09-03", tokens=40, region="us-east-1", tier="basic")
    await desk.send("cus", "requests", "2026-09-04", tokens=10, region="us-east-1", tier="premium")
    await desk.send("cus", "requests", "2026-09-05", tokens=20, region="eu-central-1")
    await desk.send("cus", "requests", "2026-09-06", tokens=50, region="ap-south-1")
    await desk.send("cus", "requests", "2026-09-07", tokens=30)

    fees = await desk.fees.period_fees(sub, plan(priced), SEPTEMBER, ARREARS)

    # 100 x 0.02 = 2.00; 10 x 0.05 = 0.50; 20 x 0.03 = 0.60; (50 + 30) x 0.01 = 0.80.
    assert lines(fees) == [
        ("CHARGE", "region: us-east-1", {}, "100", 2, 200),
        ("CHARGE", "region: us-east-1; tier: premium", {}, "10", 1, 50),
        ("CHARGE", "Europe", {}, "20", 1, 60),
        ("CHARGE", "", {}, "80", 2, 80),
    ]
    assert [f.description for f in fees] == [
        "API calls (region: us-east-1): 100 units",
        "API calls (region: us-east-1; tier: premium): 10 units",
        "API calls (Europe): 20 units",
        "API calls: 80 units",
    ]
    assert {f.charge_id for f in fees} == {priced.id}
    assert {(from_proto(f.period_start), from_proto(f.period_end)) for f in fees} == {
        (at("2026-09-01"), at("2026-10-01"))
    }


async def test_each_filter_is_priced_with_its_own_model_properties(desk: Desk):
    ranges = [
        {"from_value": "0", "to_value": "10", "per_unit_amount": "1", "flat_amount": "0"},
        {"from_value": "11", "to_value": "", "per_unit_amount": "0.5", "flat_amount": "2"},
    ]
    tiered = charge(
        model="GRADUATED",
        properties=props(graduated_ranges=[ranges[0], {**ranges[1], "per_unit_amount": "0.1"}]),
        filters=[price_filter({"region": ["us"]}, graduated_ranges=ranges)],
    )
    sub = await desk.subscribe("cus", plan(tiered), "2026-09-01")
    await desk.send("cus", "requests", "2026-09-02", tokens=15, region="us")
    await desk.send("cus", "requests", "2026-09-02", tokens=15, region="eu")

    us, default = await desk.fees.period_fees(sub, plan(tiered), SEPTEMBER)

    # us: 10 x 1 + 5 x 0.5 + 2 = 14.50; default: 10 x 1 + 5 x 0.1 + 2 = 12.50.
    assert (us.amount_cents, [t.amount for t in us.tiers]) == (1450, ["10", "4.5"])
    assert (default.amount_cents, [t.amount for t in default.tiers]) == (1250, ["10", "2.5"])


async def test_a_grouped_charge_bills_one_line_per_group(desk: Desk):
    grouped = charge(properties=props(amount="0.5", grouped_by=["region"]))
    sub = await desk.subscribe("cus", plan(grouped), "2026-09-01")
    await desk.send("cus", "requests", "2026-09-02", tokens=4, region="us")
    await desk.send("cus", "requests", "2026-09-03", tokens=2, region="eu")
    await desk.send("cus", "requests", "2026-09-04", tokens=1, region="eu")
    await desk.send("cus", "requests", "2026-09-05", tokens=6)

    fees = await desk.fees.period_fees(sub, plan(grouped), SEPTEMBER)

    assert lines(fees) == [
        ("CHARGE", "", {"region": ""}, "6", 1, 300),
        ("CHARGE", "", {"region": "eu"}, "3", 2, 150),
        ("CHARGE", "", {"region": "us"}, "4", 1, 200),
    ]
    assert fees[1].description == "Requests (region: eu): 3 units"


async def test_groups_split_each_filter_and_the_default(desk: Desk):
    both = charge(
        properties=props(amount="0.1", grouped_by=["model"]),
        filters=[
            price_filter({"region": ["us"]}, "US", amount="1", grouped_by=["model"]),
            price_filter({"region": ["eu"]}, "EU", amount="2", grouped_by=["model"]),
        ],
    )
    sub = await desk.subscribe("cus", plan(both), "2026-09-01")
    await desk.send("cus", "requests", "2026-09-02", tokens=2, region="us", model="gpt")
    await desk.send("cus", "requests", "2026-09-02", tokens=3, region="us", model="claude")
    await desk.send("cus", "requests", "2026-09-02", tokens=10, region="ap", model="gpt")

    fees = await desk.fees.period_fees(sub, plan(both), SEPTEMBER)

    # A filter without events still shows its price, at zero.
    assert lines(fees) == [
        ("CHARGE", "US", {"model": "claude"}, "3", 1, 300),
        ("CHARGE", "US", {"model": "gpt"}, "2", 1, 200),
        ("CHARGE", "EU", {}, "0", 0, 0),
        ("CHARGE", "", {"model": "gpt"}, "10", 1, 100),
    ]
    assert fees[0].description == "Requests (US; model: claude): 3 units"


async def test_charges_without_usage_still_have_their_lines(desk: Desk):
    plain = charge(metric("calls", "Calls"))
    grouped = charge(metric("tokens", "Tokens"), properties=props(amount="1", grouped_by=["region"]))
    filtered = charge(metric("bytes", "Bytes"), filters=[price_filter({"region": ["us"]}, amount="1")])
    setup = charge(metric("seats", "Seats"), model="FLAT", properties=props(amount="9.99"))
    pinned = plan(plain, grouped, filtered, setup)
    sub = await desk.subscribe("cus", pinned, "2026-09-01")

    fees = await desk.fees.period_fees(sub, pinned, SEPTEMBER)

    assert lines(fees) == [
        ("CHARGE", "", {}, "0", 0, 0),
        ("CHARGE", "", {}, "0", 0, 0),
        ("CHARGE", "region: us", {}, "0", 0, 0),
        ("CHARGE", "", {}, "0", 0, 0),
        ("CHARGE", "", {}, "0", 0, 999),  # flat: whatever the usage
    ]
    assert [f.unit_amount for f in fees] == ["0"] * 5


async def test_a_charge_below_its_minimum_spend_gets_a_true_up(desk: Desk):
    low = charge(min_amount_cents=500, filters=[price_filter({"region": ["us"]}, amount="0.02")])
    high = charge(metric("calls", "Calls"), min_amount_cents=100, invoice_display_name="Calls")
    pinned = plan(low, high)
    sub = await desk.subscribe("cus", pinned, "2026-09-01")
    await desk.send("cus", "requests", "2026-09-02", tokens=50, region="us")
    await desk.send("cus", "requests", "2026-09-20", tokens=50)
    await desk.send("cus", "calls", "2026-09-02", tokens=200)

    fees = await desk.fees.period_fees(sub, pinned, SEPTEMBER)

    # requests: 50 x 0.02 + 50 x 0.01 = 1.50, topped up to 5.00; calls: 2.00 is above 1.00.
    assert lines(fees) == [
        ("CHARGE", "region: us", {}, "50", 1, 100),
        ("CHARGE", "", {}, "50", 1, 50),
        ("TRUE_UP", "", {}, "1", 0, 350),
        ("CHARGE", "", {}, "200", 1, 200),
    ]
    true_up = fees[2]
    assert (true_up.charge_id, true_up.billable_metric_code, true_up.precise_amount) == (low.id, "requests", "3.5")
    assert true_up.description == "Requests minimum spend"

    # Half of September (15 of 30 days): the minimum is 2.50, usage in it 0.50.
    second_half = period("2026-09-16", "2026-10-01", "2026-09-01", "2026-10-01")
    fees = await desk.fees.period_fees(sub, pinned, second_half)
    assert [(f.type, f.amount_cents) for f in fees if f.charge_id == low.id] == [
        (pb.FEE_TYPE_CHARGE, 0),
        (pb.FEE_TYPE_CHARGE, 50),
        (pb.FEE_TYPE_TRUE_UP, 200),
    ]
    assert [f.amount_cents for f in fees if f.charge_id == high.id] == [0, 50]  # 1.00 / 2 = 0.50


async def test_advance_fees_are_billed_at_the_start_and_everything_else_at_the_end(desk: Desk):
    seats = charge(metric("seats", "Seats"), model="FLAT", properties=props(amount="3"), pay_in_advance=True)
    usage = charge()
    in_advance = plan(seats, usage, amount_cents=1000, pay_in_advance=True)
    sub = await desk.subscribe("cus", in_advance, "2026-09-01")
    await desk.send("cus", "requests", "2026-09-02", tokens=100)
    await desk.send("cus", "seats", "2026-09-02", tokens=7)

    start = await desk.fees.period_fees(sub, in_advance, SEPTEMBER, ADVANCE)
    end = await desk.fees.period_fees(sub, in_advance, SEPTEMBER, ARREARS)

    assert [(f.type, f.amount_cents, f.charge_id) for f in start] == [
        (pb.FEE_TYPE_SUBSCRIPTION, 1000, ""),
        (pb.FEE_TYPE_CHARGE, 300, seats.id),
    ]
    assert start[1].units == "0"  # priced before any usage, which a flat fee ignores anyway
    assert [(f.type, f.amount_cents, f.charge_id) for f in end] == [(pb.FEE_TYPE_CHARGE, 100, usage.id)]

    in_arrears = plan(seats, usage, amount_cents=1000)
    sub = await desk.subscribe("cus2", in_arrears, "2026-09-01")
    start = await desk.fees.period_fees(sub, in_arrears, SEPTEMBER, ADVANCE)
    end = await desk.fees.period_fees(sub, in_arrears, SEPTEMBER, ARREARS)
    assert [(f.type, f.amount_cents) for f in start] == [(pb.FEE_TYPE_CHARGE, 300)]
    assert [(f.type, f.amount_cents) for f in end] == [(pb.FEE_TYPE_SUBSCRIPTION, 1000), (pb.FEE_TYPE_CHARGE, 0)]
    assert await desk.fees.period_fees(sub, plan(usage), SEPTEMBER, ADVANCE) == []


async def test_the_commitment_tops_both_invoices_up_in_arrears(desk: Desk):
    seats = charge(
        metric("seats", "Seats"), model="FLAT", properties=props(amount="3"), pay_in_advance=True, min_amount_cents=400
    )
    usage = charge()
    committed = plan(seats, usage, amount_cents=1000, pay_in_advance=True, minimum_commitment_cents=5000)
    sub = await desk.subscribe("cus", committed, "2026-09-01")
    await desk.send("cus", "requests", "2026-09-02", tokens=500)

    end = await desk.fees.period_fees(sub, committed, SEPTEMBER, ARREARS)

    # In advance: base 10.00 + seats 3.00. In arrears, in plan order: the seats' true-up 1.00,
    # usage 5.00, and the commitment 50.00 - (10.00 + 3.00 + 1.00 + 5.00) = 31.00.
    assert [(f.type, f.amount_cents, f.charge_id) for f in end] == [
        (pb.FEE_TYPE_TRUE_UP, 100, seats.id),
        (pb.FEE_TYPE_CHARGE, 500, usage.id),
        (pb.FEE_TYPE_COMMITMENT, 3100, ""),
    ]
    assert (end[2].description, end[2].units, end[2].precise_amount) == ("Pro minimum commitment", "1", "31")

    # The last third of the month: the seats' 3.00 is above its prorated 1.33 minimum; the
    # commitment is 16.666... - (base 3.33 + seats 3.00 + usage 0) = 10.3366... -> 10.34.
    third = period("2026-09-21", "2026-10-01", "2026-09-01", "2026-10-01")
    end = await desk.fees.period_fees(sub, committed, third, ARREARS)
    assert [(f.type, f.amount_cents) for f in end] == [(pb.FEE_TYPE_CHARGE, 0), (pb.FEE_TYPE_COMMITMENT, 1034)]

    met = plan(usage, amount_cents=5000, minimum_commitment_cents=5000)
    assert [f.type for f in await desk.fees.period_fees(sub, met, SEPTEMBER)] == [
        pb.FEE_TYPE_SUBSCRIPTION,
        pb.FEE_TYPE_CHARGE,
    ]


@pytest.mark.parametrize(
    ("currency", "us_price", "default_price", "expected"),
    [
        # 3 x 0.5 = 1.5 yen -> 2; 5 x 0.3 = 1.5 -> 2; minimum 10 yen: true-up 6.
        ("JPY", "0.5", "0.3", [2, 2, 6]),
        # 3 x 0.0005 = 0.0015 dinar -> 2 fils; 5 x 0.0003 = 0.0015 -> 2; minimum 10 fils: true-up 6.
        ("KWD", "0.0005", "0.0003", [2, 2, 6]),
    ],
)
async def test_each_filter_line_is_rounded_once_in_the_currency(
    desk: Desk, currency, us_price, default_price, expected
):
    priced = charge(
        properties=props(amount=default_price),
        min_amount_cents=10,
        filters=[price_filter({"region": ["us"]}, amount=us_price)],
    )
    pinned = plan(priced, currency=currency)
    sub = await desk.subscribe("cus", pinned, "2026-09-01")
    await desk.send("cus", "requests", "2026-09-02", tokens=3, region="us")
    await desk.send("cus", "requests", "2026-09-02", tokens=5)

    fees = await desk.fees.period_fees(sub, pinned, SEPTEMBER)

    assert [f.amount_cents for f in fees] == expected
    assert [f.precise_amount for f in fees[:2]] == ["1.5" if currency == "JPY" else "0.0015"] * 2


async def test_unassigned_events_go_to_the_earliest_active_subscription_charging_the_metric(desk: Desk):
    requests = plan(charge())
    other = plan(charge(metric("calls", "Calls")))
    await desk.subscribe("cus", other, "2026-08-01")  # earliest, but does not charge requests
    first = await desk.subscribe("cus", requests, "2026-09-01", terminate="2026-09-20")
    second = await desk.subscribe("cus", requests, "2026-09-10")
    await desk.send("cus", "requests", "2026-09-03", tokens=10000)  # only the first is active
    await desk.send("cus", "requests", "2026-09-05", first.id, tokens=1)
    await desk.send("cus", "requests", "2026-09-12", tokens=100)  # both active: the earlier start
    await desk.send("cus", "requests", "2026-09-15", second.id, tokens=10)
    await desk.send("cus", "requests", "2026-09-25", tokens=1000)  # the first has ended
    await desk.send("cus", "requests", "2026-09-26", "sub_someone_else", tokens=5)

    [first_fee] = await desk.fees.period_fees(
        first, requests, period("2026-09-01", "2026-09-20", "2026-09-01", "2026-10-01")
    )
    [second_fee] = await desk.fees.period_fees(second, requests, period("2026-09-10", "2026-10-10"))

    assert (first_fee.units, first_fee.events_count) == ("10101", 3)
    assert (second_fee.units, second_fee.events_count) == ("1010", 2)


async def test_ties_in_start_go_to_the_earlier_created_then_the_lower_id(desk: Desk):
    requests = plan(charge())
    created = at("2026-08-01")
    late = await desk.subscribe("cus", requests, "2026-09-01", created=created + timedelta(hours=1))
    b = await desk.subscribe("cus", requests, "2026-09-01", created=created, subscription_id=f"{late.id}_b")
    a = await desk.subscribe("cus", requests, "2026-09-01", created=created, subscription_id=f"{late.id}_a")

    owned = {row.id: (await desk.fees.windows(row, ["requests", "calls"], SEPTEMBER)) for row in (late, b, a)}

    assert owned[a.id] == {
        "requests": [(at("2026-09-01"), at("2026-10-01"))],
        "calls": [(at("2026-09-01"), at("2026-10-01"))],
    }
    assert owned[b.id]["requests"] == []
    assert owned[late.id]["requests"] == []
    assert owned[late.id]["calls"] == [(at("2026-09-01"), at("2026-10-01"))]  # nobody else charges calls


async def test_one_metering_call_prices_every_charge_of_a_period(desk: Desk):
    calls = []

    class Counting(peers.Metering):
        async def batch_aggregate_usage(self, org, request):
            calls.append(len(request.requests))
            return await super().batch_aggregate_usage(org, request)

    metering = Counting(desk.fees.metering.address)
    counted = FeeCalculator(desk.fees.sessions, metering)
    count = billable_metrics_pb2.AGGREGATION_TYPE_COUNT
    pinned = plan(charge(), charge(metric("calls", "Calls", count, "")), charge(metric("bytes", "Bytes")))
    sub = await desk.subscribe("cus", pinned, "2026-09-01")
    await desk.send("cus", "calls", "2026-09-02")

    fees = await counted.period_fees(sub, pinned, SEPTEMBER)
    await metering.close()

    assert calls == [3]
    assert [f.units for f in fees] == ["0", "1", "0"]


async def test_a_plan_without_charges_asks_metering_nothing(desk: Desk):
    nowhere = FeeCalculator(desk.fees.sessions, peers.Metering("127.0.0.1:1"))  # any metering call would fail
    base_only = plan(amount_cents=1500)
    sub = await desk.subscribe("cus", base_only, "2026-09-01")

    fees = await nowhere.period_fees(sub, base_only, SEPTEMBER)

    assert [(f.type, f.amount_cents, f.units) for f in fees] == [(pb.FEE_TYPE_SUBSCRIPTION, 1500, "1")]


async def test_current_usage_lines_are_every_charge_as_it_stands_without_minimums(desk: Desk):
    seats = charge(metric("seats", "Seats"), model="FLAT", properties=props(amount="3"), pay_in_advance=True)
    usage = charge(min_amount_cents=1000, filters=[price_filter({"region": ["us"]}, amount="0.02")])
    pinned = plan(seats, usage, amount_cents=1000, minimum_commitment_cents=9000)
    sub = await desk.subscribe("cus", pinned, "2026-09-01")
    await desk.send("cus", "seats", "2026-09-02", tokens=4)
    await desk.send("cus", "requests", "2026-09-02", tokens=100, region="us")

    fees = await desk.fees.charge_fees(sub, pinned, SEPTEMBER)

    assert lines(fees) == [
        ("CHARGE", "", {}, "4", 1, 300),  # measured too, though its price ignores usage
        ("CHARGE", "region: us", {}, "100", 1, 200),
        ("CHARGE", "", {}, "0", 0, 0),
    ]
