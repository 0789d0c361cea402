"""Volume, package, percentage, graduated percentage and flat charges billed
end to end: plan through the gateway, events into metering, the invoice read
back. Amounts are hand-computed."""

from __future__ import annotations

from tests.conftest import Tenant, eventually
from tests.service.invoicing_helpers import create_plan, send, subscribe

START = "2026-09-01T00:00:00Z"


async def september_fees(t: Tenant, customer: str) -> tuple[dict, dict]:
    """The September invoice's fees by metric code, and the invoice."""

    async def invoiced():
        body = (await t.http.get(f"/v1/customers/{customer}/invoices")).json()
        matching = [i for i in body["invoices"] if i["period_start"] == START]
        assert matching, body
        return matching[0]

    invoice = await eventually(invoiced)
    return invoice, {fee["billable_metric_code"]: fee for fee in invoice["fees"]}


def charge(metric: str, model: str, **properties) -> dict:
    return {"billable_metric_code": metric, "charge_model": model, "properties": properties}


async def test_percentage_fee_rates_each_event_in_time_order(tenant: Tenant):
    payments = charge(
        "payments",
        "percentage",
        rate="2",
        fixed_amount="0.10",
        free_units_per_events=1,
        per_transaction_min_amount="0.05",
    )
    transfers = charge("transfers", "percentage", rate="1.5", free_units_per_total_aggregation="100")
    await create_plan(tenant, "take_rate", [payments, transfers])
    await subscribe(tenant, "merchant", "take_rate", START)
    # Sent out of time order: the first event in time is the free one.
    await send(tenant, "merchant", 1, "2026-09-20T00:00:00Z", code="payments")
    await send(tenant, "merchant", 100, "2026-09-05T00:00:00Z", code="payments")
    await send(tenant, "merchant", 50, "2026-09-10T00:00:00Z", code="payments")
    await send(tenant, "merchant", "60.5", "2026-09-02T00:00:00Z", code="transfers")
    await send(tenant, "merchant", "80.25", "2026-09-03T00:00:00Z", code="transfers")

    invoice, fees = await september_fees(tenant, "merchant")

    # 100 free; 50 x 2% + 0.10 = 1.10; 1 x 2% = 0.02, raised to 0.05, + 0.10 = 0.15.
    paid = fees["payments"]
    assert (paid["units"], paid["events_count"], paid["precise_amount"], paid["amount_cents"]) == (
        "151",
        3,
        "1.25",
        125,
    )
    # 60.5 free; the running total 140.75 crosses 100 inside the second: 40.75 x 1.5% = 0.61125.
    moved = fees["transfers"]
    assert (moved["units"], moved["precise_amount"], moved["amount_cents"]) == ("140.75", "0.61125", 61)
    assert "tiers" not in paid
    assert invoice["total_amount_cents"] == 186


async def test_volume_package_graduated_percentage_and_flat_fees(tenant: Tenant):
    # A count metric: asking metering for per-event values of a count is refused, so
    # billing it at all shows only percentage charges ask for them.
    calls = {"code": "api_calls", "name": "API calls", "aggregation_type": "count"}
    assert (await tenant.http.post("/v1/billable_metrics", json=calls)).status_code == 201
    charges = [
        charge(
            "storage",
            "volume",
            volume_ranges=[
                {"from": 0, "to": 100, "per_unit": "0.10", "flat_amount": "5"},
                {"from": 101, "to": None, "per_unit": "0.05"},
            ],
        ),
        charge("api_calls", "package", amount="5", package_size=2, free_units=0),
        charge(
            "gmv",
            "graduated_percentage",
            graduated_percentage_ranges=[
                {"from": 0, "to": 1000, "rate": "2", "flat_amount": "1"},
                {"from": 1001, "to": None, "rate": "1"},
            ],
        ),
        charge("seats", "flat", amount="49.99"),
    ]
    await create_plan(tenant, "mixed", charges)
    await subscribe(tenant, "acme", "mixed", START)
    await send(tenant, "acme", 70, "2026-09-02T00:00:00Z", code="storage")
    await send(tenant, "acme", 80, "2026-09-03T00:00:00Z", code="storage")
    for day in ("04", "05", "06"):
        await send(tenant, "acme", 0, f"2026-09-{day}T00:00:00Z", code="api_calls")
    await send(tenant, "acme", 1500, "2026-09-07T00:00:00Z", code="gmv")
    # No seats events: the flat charge bills anyway.

    invoice, fees = await september_fees(tenant, "acme")

    # 150 lands above 100: every unit at 0.05, no flat fee.
    storage = fees["storage"]
    assert (storage["units"], storage["amount_cents"]) == ("150", 750)
    assert storage["tiers"] == [
        {"from": 101, "to": None, "units": "150", "per_unit": "0.05", "flat_amount": "0", "amount": "7.5"}
    ]
    # 3 calls in packages of 2: two started packages.
    assert (fees["api_calls"]["units"], fees["api_calls"]["amount_cents"]) == ("3", 1000)
    # 1000 x 2% + 1, then 500 x 1%.
    gmv = fees["gmv"]
    assert (gmv["precise_amount"], gmv["amount_cents"]) == ("26", 2600)
    assert [(t["units"], t["per_unit"], t["amount"]) for t in gmv["tiers"]] == [
        ("1000", "0.02", "21"),
        ("500", "0.01", "5"),
    ]
    seats = fees["seats"]
    assert (seats["units"], seats["events_count"], seats["amount_cents"]) == ("0", 0, 4999)
    assert invoice["total_amount_cents"] == 750 + 1000 + 2600 + 4999
