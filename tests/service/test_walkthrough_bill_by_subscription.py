"""Walkthrough "02 Bill by Subscription + Usage" exactly as written, through
the gateway app and the real services: no start date, an event with neither
transaction id nor timestamp, and the invoice list read at once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.conftest import Tenant

METRIC = {"name": "API Requests", "code": "api_requests", "aggregation_type": "sum", "field_name": "tokens"}
PLAN = {
    "name": "Pro",
    "code": "pro",
    "interval": "monthly",
    "amount_cents": 4900,
    "charges": [
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
    ],
}


async def test_walkthrough_shows_a_draft_of_4900_plus_7500_at_once(tenant: Tenant):
    h = tenant.http
    assert (await h.post("/v1/billable_metrics", json=METRIC)).status_code == 201
    assert (await h.post("/v1/plans", json=PLAN)).status_code == 201
    subscribed = await h.post("/v1/subscriptions", json={"customer_id": "cus_9a4b2", "plan_code": "pro"})
    assert subscribed.status_code == 201, subscribed.text
    assert subscribed.json()["status"] == "active"
    event = {"customer_id": "cus_9a4b2", "code": "api_requests", "properties": {"tokens": 250000}}
    ingested = await h.post("/v1/events", json=event)
    assert ingested.status_code == 200, ingested.text

    response = await h.get("/v1/customers/cus_9a4b2/invoices")  # no waiting: the draft is priced on read
    assert response.status_code == 200
    [draft] = response.json()["invoices"]  # the period has just begun: nothing is finalized yet
    assert (draft["status"], draft["id"], draft["number"], draft["timing"]) == ("draft", None, None, "in_arrears")
    assert [(f["type"], f["amount_cents"]) for f in draft["fees"]] == [("subscription", 4900), ("charge", 7500)]
    base, overage = draft["fees"]
    assert base["units"] == "1"  # a whole month from the subscription's start: not prorated
    assert (overage["units"], overage["events_count"]) == ("250000", 1)
    assert [(t["units"], t["amount"]) for t in overage["tiers"]] == [("100000", "0"), ("150000", "75")]
    assert (draft["subtotal_cents"], draft["total_amount_cents"], draft["currency"]) == (12400, 12400, "USD")
    subscription = subscribed.json()
    assert (draft["subscription_id"], draft["plan_code"]) == (subscription["id"], "pro")
    assert draft["period_start"] == subscription["start_date"]
    assert datetime.fromisoformat(draft["period_end"]) - datetime.now(UTC) > timedelta(days=27)
