"""Walkthrough "01 Bill by Usage" through the gateway app and real services."""

from __future__ import annotations

from tests.conftest import Tenant, eventually

METRIC = {"name": "API Requests", "code": "api_requests", "aggregation_type": "sum", "field_name": "tokens"}
PLAN = {
    "name": "Pay As You Go",
    "code": "payg",
    "interval": "monthly",
    "amount_cents": 0,
    "charges": [
        {"billable_metric_code": "api_requests", "charge_model": "standard", "properties": {"amount": "0.001"}}
    ],
}


async def setup_payg(t: Tenant, start: str = "2026-09-01T00:00:00Z") -> dict:
    assert (await t.http.post("/v1/billable_metrics", json=METRIC)).status_code == 201
    assert (await t.http.post("/v1/plans", json=PLAN)).status_code == 201
    sub = await t.http.post(
        "/v1/subscriptions", json={"customer_id": "cus_9a4b2", "plan_code": "payg", "start_date": start}
    )
    assert sub.status_code == 201, sub.text
    assert sub.json()["status"] == "active"
    return sub.json()


async def send(t: Tenant, txn: str, tokens: int, timestamp: str = "2026-09-15T00:00:00Z"):
    return await t.http.post(
        "/v1/events",
        json={
            "transaction_id": txn,
            "customer_id": "cus_9a4b2",
            "code": "api_requests",
            "timestamp": timestamp,
            "properties": {"tokens": tokens},
        },
    )


async def test_walkthrough_bills_234_cents_and_retries_count_once(tenant: Tenant):
    await setup_payg(tenant)
    for _ in range(2):  # every event twice: the retry changes nothing
        response = await send(tenant, "txn_8f3a1", 2340)
        assert response.status_code == 200
    assert response.json() == {"transaction_id": "txn_8f3a1", "status": "accepted"}  # skipped when stored

    async def september() -> dict:
        body = (await tenant.http.get("/v1/customers/cus_9a4b2/invoices")).json()
        first = [i for i in body["invoices"] if i["period_start"] == "2026-09-01T00:00:00Z"]
        assert len(first) == 1, body
        return first[0]

    # Until the billing run issues it, the ended period shows as a draft priced
    # as it stands (once invoicing has heard of the subscription).
    pending = await eventually(september)
    assert (pending["status"], pending["id"], pending["total_amount_cents"]) == ("draft", None, 234)
    await tenant.bill("cus_9a4b2")
    invoice = await september()
    assert invoice["status"] == "finalized" and invoice["number"]
    assert invoice["currency"] == "USD"
    assert invoice["total_amount_cents"] == 234
    assert invoice["period_end"] == "2026-10-01T00:00:00Z"
    [fee] = invoice["fees"]
    assert fee["type"] == "charge"
    assert (fee["units"], fee["amount_cents"], fee["events_count"]) == ("2340", 234, 1)
