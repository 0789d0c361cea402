"""POST /v1/pricing/calculate and GET /v1/pricing/calculations/{id}: a
subscription priced over a window with the fees an invoice would bill, split
at period boundaries, stored. Amounts are hand-computed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import grpc
import pytest

from bxb.invoicing.v1 import calculations_pb2, calculations_pb2_grpc
from services.common import tenancy
from services.common.errors import error_info
from tests.conftest import Stack, Tenant, unique
from tests.service.invoicing_helpers import create_plan, subscribe
from tests.service.pricing_helpers import Desk, charge, metric, open_desk, plan, price_filter, props

STANDARD = [{"billable_metric_code": "api_requests", "charge_model": "standard", "properties": {"amount": "0.01"}}]


@pytest.fixture
async def desk(stack: Stack, tenant: Tenant):
    async with open_desk(stack, tenant) as opened:
        yield opened


async def calculate(t: Tenant, **body):
    return await t.http.post("/v1/pricing/calculate", json=body)


def month_start(months_ago: int) -> datetime:
    now = datetime.now(UTC)
    index = now.year * 12 + now.month - 1 - months_ago
    return datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)


def rfc3339(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


async def test_a_window_across_two_periods_is_priced_slice_by_slice(tenant: Tenant, desk: Desk):
    plan_json = await create_plan(tenant, "pro", STANDARD, amount_cents=3000)
    sub = await subscribe(tenant, "cus", "pro", "2026-09-01T00:00:00Z")
    await desk.send("cus", "api_requests", "2026-09-10", tokens=999)  # before the window
    await desk.send("cus", "api_requests", "2026-09-20", tokens=100)
    await desk.send("cus", "api_requests", "2026-10-05", tokens=50)

    response = await calculate(
        tenant, customer_id="cus", period_start="2026-09-16T00:00:00Z", period_end="2026-10-16T00:00:00Z"
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["calculation_id"].startswith("calc_")
    created = datetime.fromisoformat(body.pop("created_at"))
    assert abs(datetime.now(UTC) - created) < timedelta(minutes=1)
    charge_id = plan_json["charges"][0]["id"]
    # September's second half: 30.00 x 15/30 = 15.00, 100 x 0.01 = 1.00.
    # October's first 15 days: 30.00 x 15/31 = 14.516... -> 14.52, 50 x 0.01 = 0.50.
    assert body == {
        "calculation_id": body["calculation_id"],
        "customer_id": "cus",
        "subscription_id": sub["id"],
        "plan_code": "pro",
        "plan_version": 1,
        "currency": "USD",
        "period_start": "2026-09-16T00:00:00Z",
        "period_end": "2026-10-16T00:00:00Z",
        "total_amount": "31.02",
        "total_amount_cents": 3102,
        "line_items": [
            {
                "type": "subscription",
                "description": "pro base fee",
                "metric_key": None,
                "charge_id": None,
                "filter": None,
                "group": None,
                "period_start": "2026-09-16T00:00:00Z",
                "period_end": "2026-10-01T00:00:00Z",
                "units": "0.5",
                "unit_amount": "30",
                "amount": "15.00",
                "amount_cents": 1500,
                "precise_amount": "15",
                "events_count": 0,
                "tiers": [],
            },
            {
                "type": "charge",
                "description": "api_requests: 100 units",
                "metric_key": "api_requests",
                "charge_id": charge_id,
                "filter": None,
                "group": None,
                "period_start": "2026-09-16T00:00:00Z",
                "period_end": "2026-10-01T00:00:00Z",
                "units": "100",
                "unit_amount": "0.01",
                "amount": "1.00",
                "amount_cents": 100,
                "precise_amount": "1",
                "events_count": 1,
                "tiers": [],
            },
            {
                "type": "subscription",
                "description": "pro base fee",
                "metric_key": None,
                "charge_id": None,
                "filter": None,
                "group": None,
                "period_start": "2026-10-01T00:00:00Z",
                "period_end": "2026-10-16T00:00:00Z",
                "units": "0.4838709677419354838709677419",
                "unit_amount": "30",
                "amount": "14.52",
                "amount_cents": 1452,
                "precise_amount": "14.51612903225806451612903226",
                "events_count": 0,
                "tiers": [],
            },
            {
                "type": "charge",
                "description": "api_requests: 50 units",
                "metric_key": "api_requests",
                "charge_id": charge_id,
                "filter": None,
                "group": None,
                "period_start": "2026-10-01T00:00:00Z",
                "period_end": "2026-10-16T00:00:00Z",
                "units": "50",
                "unit_amount": "0.01",
                "amount": "0.50",
                "amount_cents": 50,
                "precise_amount": "0.5",
                "events_count": 1,
                "tiers": [],
            },
        ],
    }

    stored = await tenant.http.get(f"/v1/pricing/calculations/{body['calculation_id']}")
    assert stored.status_code == 200
    assert stored.json() == {**body, "created_at": stored.json()["created_at"]}


async def test_filters_groups_tiers_and_minimums_show_as_line_items(tenant: Tenant, desk: Desk):
    filtered = charge(
        invoice_display_name="API",
        min_amount_cents=300,
        filters=[price_filter({"region": ["us"]}, "US", amount="0.02")],
    )
    tiers = [
        {"from_value": "0", "to_value": "10", "per_unit_amount": "0", "flat_amount": "0"},
        {"from_value": "11", "to_value": "", "per_unit_amount": "0.1", "flat_amount": "1"},
    ]
    grouped = charge(metric("tokens", "Tokens"), "GRADUATED", props(graduated_ranges=tiers, grouped_by=["model"]))
    pinned = plan(filtered, grouped, minimum_commitment_cents=1000)
    sub = await desk.subscribe("cus", pinned, "2026-09-01")
    await desk.send("cus", "requests", "2026-09-02", tokens=100, region="us")
    await desk.send("cus", "requests", "2026-09-03", tokens=50, region="eu")
    await desk.send("cus", "tokens", "2026-09-03", tokens=30, model="gpt")

    response = await calculate(
        tenant,
        customer_id="cus",
        subscription_id=sub.id,
        period_start="2026-09-01T00:00:00Z",
        period_end="2026-10-01T00:00:00Z",
    )

    assert response.status_code == 200, response.text
    body = response.json()
    # US 100 x 0.02 = 2.00 and the rest 50 x 0.01 = 0.50: 2.50 under the 3.00 minimum, topped up by 0.50.
    # Tokens for gpt: 10 free, 20 x 0.1 + 1 = 3.00. Commitment: 10.00 - 6.00 = 4.00.
    summary = [(i["type"], i["filter"], i["group"], i["amount"]) for i in body["line_items"]]
    assert summary == [
        ("charge", "US", None, "2.00"),
        ("charge", None, None, "0.50"),
        ("true_up", None, None, "0.50"),
        ("charge", None, {"model": "gpt"}, "3.00"),
        ("commitment", None, None, "4.00"),
    ]
    assert (body["total_amount"], body["total_amount_cents"]) == ("10.00", 1000)
    assert body["line_items"][2]["charge_id"] == filtered.id
    assert body["line_items"][3]["tiers"] == [
        {"from": 0, "to": 10, "units": "10", "per_unit_amount": "0", "flat_amount": "0", "amount": "0"},
        {"from": 11, "to": None, "units": "20", "per_unit_amount": "0.1", "flat_amount": "1", "amount": "3"},
    ]


@pytest.mark.parametrize(
    ("currency", "amount", "tokens", "total", "cents"),
    [
        ("USD", "0.5", 255, "127.50", 12750),
        ("JPY", "0.5", 255, "128", 128),  # 127.5 yen rounds half up
        ("KWD", "0.0005", 2550, "1.275", 1275),
    ],
)
async def test_amounts_are_written_at_the_currency_scale(
    tenant: Tenant, desk: Desk, currency, amount, tokens, total, cents
):
    pinned = plan(charge(properties=props(amount=amount)), currency=currency)
    await desk.subscribe("cus", pinned, "2026-09-01")
    await desk.send("cus", "requests", "2026-09-02", tokens=tokens)

    response = await calculate(
        tenant, customer_id="cus", period_start="2026-09-01T00:00:00Z", period_end="2026-10-01T00:00:00Z"
    )

    body = response.json()
    assert (body["currency"], body["total_amount"], body["total_amount_cents"]) == (currency, total, cents)
    assert (body["line_items"][0]["amount"], body["line_items"][0]["amount_cents"]) == (total, cents)


async def test_the_default_window_is_the_open_period(tenant: Tenant, desk: Desk):
    await create_plan(tenant, "live", STANDARD, amount_cents=1000)
    await subscribe(tenant, "cus", "live", rfc3339(month_start(1)))
    await desk.send("cus", "api_requests", rfc3339(datetime.now(UTC) - timedelta(seconds=5)), tokens=200)

    body = (await calculate(tenant, customer_id="cus")).json()

    assert (body["period_start"], body["period_end"]) == (rfc3339(month_start(0)), rfc3339(month_start(-1)))
    assert [i["amount_cents"] for i in body["line_items"]] == [1000, 200]
    assert body["total_amount"] == "12.00"


async def test_pay_in_advance_fees_come_before_the_arrears_ones(tenant: Tenant, desk: Desk):
    seats = charge(metric("seats", "Seats"), "FLAT", props(amount="5"), pay_in_advance=True)
    pinned = plan(seats, charge(), amount_cents=2000, pay_in_advance=True)
    sub = await desk.subscribe("cus", pinned, "2026-09-01")
    await desk.send("cus", "requests", "2026-09-02", tokens=100)

    body = (
        await calculate(
            tenant, customer_id="cus", period_start="2026-09-01T00:00:00Z", period_end="2026-10-01T00:00:00Z"
        )
    ).json()

    assert body["subscription_id"] == sub.id
    assert [(i["type"], i["amount_cents"]) for i in body["line_items"]] == [
        ("subscription", 2000),
        ("charge", 500),
        ("charge", 100),
    ]


async def test_the_open_period_of_a_future_a_terminated_and_a_cancelled_subscription(tenant: Tenant, desk: Desk):
    pinned = plan(charge(), amount_cents=3000)
    future = await desk.subscribe("future", pinned, "2099-03-10")
    ended = await desk.subscribe("ended", pinned, "2026-09-01", terminate="2026-10-11")
    cancelled = await desk.subscribe("cancelled", pinned, "2026-09-01", terminate="2026-09-01")

    first = (await calculate(tenant, customer_id="future")).json()
    assert (first["subscription_id"], first["period_start"], first["period_end"]) == (
        future.id,
        "2099-03-10T00:00:00Z",
        "2099-04-10T00:00:00Z",
    )
    assert first["total_amount_cents"] == 3000

    last = (await calculate(tenant, customer_id="ended")).json()
    assert (last["subscription_id"], last["period_start"], last["period_end"]) == (
        ended.id,
        "2026-10-01T00:00:00Z",
        "2026-10-11T00:00:00Z",
    )
    assert last["total_amount_cents"] == 968  # 30.00 x 10/31 = 9.677...

    none = (await calculate(tenant, customer_id="cancelled")).json()
    assert (none["subscription_id"], none["period_start"], none["period_end"]) == (
        cancelled.id,
        "2026-09-01T00:00:00Z",
        "2026-09-01T00:00:00Z",
    )
    assert (none["line_items"], none["total_amount"]) == ([], "0.00")


async def test_the_subscription_may_be_omitted_only_when_there_is_one(tenant: Tenant, desk: Desk):
    pinned = plan(charge(), amount_cents=100)
    await desk.subscribe("upgraded", pinned, "2026-01-01", terminate="2026-06-01")
    current = await desk.subscribe("upgraded", pinned, "2026-06-01")
    await desk.subscribe("two", pinned, "2026-01-01")
    await desk.subscribe("two", pinned, "2026-02-01")

    chosen = (await calculate(tenant, customer_id="upgraded")).json()
    assert chosen["subscription_id"] == current.id  # the one active now

    ambiguous = await calculate(tenant, customer_id="two")
    assert ambiguous.status_code == 400
    assert ambiguous.json()["error"]["field"] == "subscription_id"
    nobody = await calculate(tenant, customer_id=unique("cus"))
    assert nobody.status_code == 404
    assert nobody.json()["error"]["field"] == "customer_id"
    unknown = await calculate(tenant, customer_id="two", subscription_id="sub_nope")
    assert unknown.status_code == 404
    assert unknown.json()["error"]["field"] == "subscription_id"


async def test_a_window_outside_the_subscription_prices_nothing(tenant: Tenant, desk: Desk):
    await desk.subscribe("cus", plan(charge(), amount_cents=100), "2026-09-01", terminate="2026-10-01")
    for start, end in (("2026-08-01", "2026-09-01"), ("2026-10-01", "2026-11-01")):
        body = (
            await calculate(tenant, customer_id="cus", period_start=f"{start}T00:00:00Z", period_end=f"{end}T00:00:00Z")
        ).json()
        assert (body["line_items"], body["total_amount_cents"]) == ([], 0)


async def test_a_window_needs_both_bounds_in_order(tenant: Tenant, desk: Desk):
    await desk.subscribe("cus", plan(charge()), "2026-09-01")
    cases = [
        ({"period_start": "2026-09-01T00:00:00Z"}, "period_end"),
        ({"period_end": "2026-09-01T00:00:00Z"}, "period_start"),
        ({"period_start": "2026-09-02T00:00:00Z", "period_end": "2026-09-01T00:00:00Z"}, "period_end"),
        ({"period_start": "2026-09-01T00:00:00Z", "period_end": "2026-09-01T00:00:00Z"}, "period_end"),
        ({"period_start": "yesterday"}, "period_start"),
        # 121 monthly periods (at most 120), and a window ending after the last year bxb takes.
        ({"period_start": "2026-09-01T00:00:00Z", "period_end": "2036-09-02T00:00:00Z"}, "period_end"),
        ({"period_start": "2026-09-01T00:00:00Z", "period_end": "9999-12-31T23:59:59Z"}, "period_end"),
    ]
    for window, field in cases:
        response = await calculate(tenant, customer_id="cus", **window)
        assert response.status_code == 400, window
        assert response.json()["error"]["field"] == field, window
    missing = await calculate(tenant, subscription_id="sub_1")
    assert missing.json()["error"]["field"] == "customer_id"


async def test_the_service_requires_a_customer(stack: Stack, tenant: Tenant):
    async with grpc.aio.insecure_channel(stack.invoicing) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await calculations_pb2_grpc.CalculationServiceStub(channel).CreateCalculation(
                calculations_pb2.CreateCalculationRequest(), metadata=tenancy.metadata(tenant.organization_id)
            )
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(failure.value).metadata["field"] == "customer_id"


async def test_a_calculation_is_visible_to_its_organization_only(tenant: Tenant, desk: Desk, make_tenant):
    await desk.subscribe("cus", plan(charge()), "2026-09-01")
    body = (await calculate(tenant, customer_id="cus")).json()
    stranger = await make_tenant()
    try:
        other = await stranger.http.get(f"/v1/pricing/calculations/{body['calculation_id']}")
    finally:
        await stranger.http.aclose()
    assert other.status_code == 404
    assert other.json()["error"]["field"] == "id"
    unknown = await tenant.http.get("/v1/pricing/calculations/calc_nope")
    assert unknown.status_code == 404


async def test_a_filtered_plan_made_through_the_api_prices_as_its_invoice(tenant: Tenant, desk: Desk):
    metric_body = {
        "code": "calls",
        "name": "Calls",
        "aggregation_type": "sum",
        "field_name": "units",
        "filters": [{"key": "region", "values": ["us", "eu"]}],
    }
    assert (await tenant.http.post("/v1/billable_metrics", json=metric_body)).status_code == 201
    priced = {
        "billable_metric_code": "calls",
        "charge_model": "standard",
        "properties": {"amount": "0.01"},
        "filters": [{"values": {"region": ["us"]}, "properties": {"amount": "0.02"}}],
    }
    await create_plan(tenant, "regional", [priced])
    sub = await subscribe(tenant, "cus", "regional", "2026-09-01T00:00:00Z")
    await desk.send("cus", "calls", "2026-09-02", units=100, region="us")
    await desk.send("cus", "calls", "2026-09-03", units=50, region="eu")

    body = (
        await calculate(
            tenant, customer_id="cus", period_start="2026-09-01T00:00:00Z", period_end="2026-10-01T00:00:00Z"
        )
    ).json()

    # us: 100 x 0.02 = 2.00; the default: 50 x 0.01 = 0.50.
    assert body["subscription_id"] == sub["id"]
    assert [(i["filter"], i["units"], i["amount"]) for i in body["line_items"]] == [
        ("region: us", "100", "2.00"),
        (None, "50", "0.50"),
    ]
    assert body["total_amount"] == "2.50"
