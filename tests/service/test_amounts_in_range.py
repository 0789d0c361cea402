"""Numbers cannot overflow: what a plan, coupon or add-on names is bounded
where it is defined (a 400 naming the field, nothing stored), and usage
priced beyond what an invoice holds is AMOUNT_OUT_OF_RANGE, never a 500 on
every later read of that customer."""

from __future__ import annotations

from datetime import timedelta

import pytest

from services.common.timestamps import format_rfc3339, utcnow
from tests.conftest import Tenant
from tests.service.invoicing_helpers import create_plan, send, subscribe

BIG = 9223372036854775807
TOKENS = {"code": "tokens", "name": "Tokens", "aggregation_type": "sum", "field_name": "tokens"}


def charge(model: str, **properties) -> dict:
    return {"billable_metric_code": "tokens", "charge_model": model, "properties": properties}


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/plans", {"charges": [charge("standard", amount="1e90")]}, "charges[0].properties.amount"),
        (
            "/v1/plans",
            {
                "charges": [
                    charge(
                        "graduated", graduated_ranges=[{"from": 0, "to": None, "per_unit": "1", "flat_amount": "1e40"}]
                    )
                ]
            },
            "charges[0].properties.graduated_ranges[0].flat_amount",
        ),
        ("/v1/plans", {"amount_cents": BIG}, "amount_cents"),
        ("/v1/plans", {"minimum_commitment": {"amount_cents": BIG}}, "minimum_commitment.amount_cents"),
        ("/v1/plans", {"usage_thresholds": [{"amount_cents": BIG}]}, "usage_thresholds[0].amount_cents"),
        ("/v1/add_ons", {"code": "setup", "name": "Setup", "amount_cents": BIG}, "amount_cents"),
        (
            "/v1/coupons",
            {"code": "BIG", "discount_type": "fixed_amount", "amount_cents": BIG, "duration": "once"},
            "amount_cents",
        ),
    ],
)
async def test_an_amount_beyond_the_bound_is_refused_where_it_is_named(tenant: Tenant, path, body, field):
    assert (await tenant.http.post("/v1/billable_metrics", json=TOKENS)).status_code == 201
    if path == "/v1/plans":
        body = {"code": "huge", "interval": "monthly", "amount_cents": 0, **body}
    response = await tenant.http.post(path, json=body)
    error = response.json()["error"]
    assert (response.status_code, error["field"], error["reason"]) == (400, field, "AMOUNT_TOO_LARGE"), response.text
    listing = path.removeprefix("/v1/")
    assert (await tenant.http.get(path)).json()[listing] == []  # nothing stored


@pytest.mark.parametrize("tokens", ["90000000000000000000000000", "-100000000000000000000"])
async def test_usage_priced_beyond_what_an_invoice_holds_is_a_409_and_the_rest_still_reads(tenant: Tenant, tokens):
    await create_plan(tenant, "pricey", [charge("standard", amount="1000000")])
    start = format_rfc3339(utcnow() - timedelta(days=1))
    sub = await subscribe(tenant, "heavy", "pricey", start)
    await subscribe(tenant, "light", "pricey", start)
    now = format_rfc3339(utcnow() - timedelta(minutes=1))
    await send(tenant, "heavy", tokens, now, code="tokens")
    await send(tenant, "light", "1", now, code="tokens")
    h = tenant.http
    later = await subscribe(tenant, "heavy", "pricey", start)  # its usage went to the first subscription
    listed = await h.get("/v1/customers/heavy/invoices")
    # The first subscription's draft left out; the list still reads, the other draft in it.
    assert listed.status_code == 200
    assert [i["subscription_id"] for i in listed.json()["invoices"]] == [later["id"]]
    for response in (
        await h.get("/v1/customers/heavy/current_usage"),
        await h.post("/v1/pricing/calculate", json={"customer_id": "heavy", "subscription_id": sub["id"]}),
        await h.post("/v1/invoices/preview", json={"subscription_id": sub["id"]}),
    ):
        assert (response.status_code, response.json()["error"]["reason"]) == (409, "AMOUNT_OUT_OF_RANGE"), response.text
    [draft] = (await h.get("/v1/customers/light/invoices")).json()["invoices"]  # the same plan, other usage
    assert draft["total_amount_cents"] == 100000000


async def test_a_plan_too_large_to_travel_is_refused_whole_and_nothing_is_stored(tenant: Tenant):
    values = [f"{n:03d}".ljust(200, "v") for n in range(150)]  # 30 KB of filter values
    metric = {**TOKENS, "filters": [{"key": "region", "values": values}]}
    assert (await tenant.http.post("/v1/billable_metrics", json=metric)).status_code == 201
    filtered = {
        **charge("standard", amount="1"),
        "filters": [{"values": {"region": values[:1]}, "properties": {"amount": "2"}}],
    }  # each charge pins the metric: 100 copies of its 30 KB of filters
    plan = {"code": "wide", "interval": "monthly", "amount_cents": 0, "charges": [filtered] * 100}
    response = await tenant.http.post("/v1/plans", json=plan)
    error = response.json()["error"]
    assert (response.status_code, error["field"], error["reason"]) == (400, "charges", "TOO_LARGE"), response.text
    assert (await tenant.http.get("/v1/plans/wide")).status_code == 404


async def test_a_metric_s_filters_are_bounded_in_bytes(tenant: Tenant):
    filters = [{"key": f"k{n}", "values": [f"{n}-{v}".ljust(200, "x") for v in range(20)]} for n in range(10)]
    response = await tenant.http.post("/v1/billable_metrics", json={**TOKENS, "filters": filters})
    error = response.json()["error"]
    assert (response.status_code, error["field"], error["reason"]) == (400, "filters", "TOO_LARGE"), response.text


async def test_lines_each_in_range_whose_total_is_not_leave_the_draft_out(tenant: Tenant):
    assert (await tenant.http.post("/v1/billable_metrics", json=TOKENS)).status_code == 201
    tax = {"code": "all", "rate": "100", "applied_to_organization": True}
    assert (await tenant.http.post("/v1/taxes", json=tax)).status_code == 201
    await create_plan(tenant, "top", [charge("standard", amount="10000000000000")])  # the most a price may be
    sub = await subscribe(tenant, "twice", "top", format_rfc3339(utcnow() - timedelta(days=1)))
    # 6 x 10^16 cents: within a line's bound; doubled by the tax, beyond the total's.
    await send(tenant, "twice", "60", format_rfc3339(utcnow() - timedelta(minutes=1)), code="tokens")
    assert (await tenant.http.get("/v1/customers/twice/invoices")).json()["invoices"] == []
    preview = await tenant.http.post("/v1/invoices/preview", json={"subscription_id": sub["id"]})
    assert (preview.status_code, preview.json()["error"]["reason"]) == (409, "AMOUNT_OUT_OF_RANGE")
