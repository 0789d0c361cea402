"""Walkthrough "03 Bill by Subscription + Usage + Free Trial + Coupon": the
coupon, its application and the trial exactly as written, and the first
invoice after the trial giving 12400 - 2480 = 9920."""

from __future__ import annotations

from datetime import datetime, timedelta

from tests.conftest import Tenant
from tests.service.test_gateway_coupons import LAUNCH20
from tests.service.test_walkthrough_bill_by_subscription import METRIC, PLAN

COUPON = LAUNCH20  # the walkthrough's coupon, as written
APPLY = {"customer_id": "cus_9a4b2", "coupon_code": "LAUNCH20"}


async def setup(h) -> None:
    assert (await h.post("/v1/billable_metrics", json=METRIC)).status_code == 201
    assert (await h.post("/v1/plans", json=PLAN)).status_code == 201
    assert (await h.post("/v1/coupons", json=COUPON)).status_code == 201
    applied = await h.post("/v1/applied_coupons", json=APPLY)
    assert applied.status_code == 201, applied.text


async def test_the_first_invoice_after_the_trial_is_9920(tenant: Tenant):
    h = tenant.http
    await setup(h)
    # The seed's dates: subscribed on 2025-02-10, the trial ends 2025-02-24.
    body = {"customer_id": "cus_9a4b2", "plan_code": "pro", "trial_period_days": 14, "start_date": "2025-02-10"}
    subscribed = await h.post("/v1/subscriptions", json=body)
    assert subscribed.status_code == 201, subscribed.text
    assert (subscribed.json()["status"], subscribed.json()["trial_end_date"]) == ("active", "2025-02-24T00:00:00Z")
    for timestamp, tokens in (("2025-02-20T10:00:00Z", 400000), ("2025-03-10T10:00:00Z", 250000)):
        event = {
            "customer_id": "cus_9a4b2",
            "code": "api_requests",
            "timestamp": timestamp,
            "properties": {"tokens": tokens},
        }
        assert (await h.post("/v1/events", json=event)).status_code == 200

    await tenant.bill("cus_9a4b2")
    listed = (await h.get("/v1/customers/cus_9a4b2/invoices", params={"page_size": 100})).json()["invoices"]
    by_start = {i["period_start"]: i for i in listed}
    assert min(by_start) == "2025-02-24T00:00:00Z"  # nothing billed for the trial
    first = by_start["2025-02-24T00:00:00Z"]
    assert [(f["type"], f["amount_cents"]) for f in first["fees"]] == [("subscription", 4900), ("charge", 7500)]
    assert first["subtotal_cents"] == 12400
    assert [(c["code"], c["discount_cents"]) for c in first["coupons"]] == [("LAUNCH20", -2480)]
    assert (first["total_amount_cents"], first["currency"]) == (9920, "USD")
    # 20% off for three months: the next two periods too, then full price.
    later = [by_start[f"2025-{m:02d}-24T00:00:00Z"]["total_amount_cents"] for m in (3, 4, 5)]
    assert later == [3920, 3920, 4900]


async def test_the_walkthrough_after_02_discounts_the_running_draft(tenant: Tenant):
    h = tenant.http
    assert (await h.post("/v1/billable_metrics", json=METRIC)).status_code == 201
    assert (await h.post("/v1/plans", json=PLAN)).status_code == 201
    assert (await h.post("/v1/subscriptions", json={"customer_id": "cus_9a4b2", "plan_code": "pro"})).status_code == 201
    event = {"customer_id": "cus_9a4b2", "code": "api_requests", "properties": {"tokens": 250000}}
    assert (await h.post("/v1/events", json=event)).status_code == 200
    assert (await h.post("/v1/coupons", json=COUPON)).status_code == 201
    assert (await h.post("/v1/applied_coupons", json=APPLY)).status_code == 201
    trial = await h.post(
        "/v1/subscriptions", json={"customer_id": "cus_9a4b2", "plan_code": "pro", "trial_period_days": 14}
    )
    assert trial.status_code == 201, trial.text
    started = datetime.fromisoformat(trial.json()["start_date"])
    assert datetime.fromisoformat(trial.json()["trial_end_date"]) - started == timedelta(days=14)

    [draft] = (await h.get("/v1/customers/cus_9a4b2/invoices")).json()["invoices"]  # the trial drafts nothing
    assert [(f["type"], f["amount_cents"]) for f in draft["fees"]] == [("subscription", 4900), ("charge", 7500)]
    assert draft["subtotal_cents"] == 12400
    assert [(c["code"], c["discount_cents"]) for c in draft["coupons"]] == [("LAUNCH20", -2480)]
    assert draft["total_amount_cents"] == 9920
