"""Coupons on invoices, hand-computed over several monthly periods: each
duration, the carry-over of a fixed amount, application order, limits to
plans and metrics, currency, removal, and the discount on a draft."""

from __future__ import annotations

import pytest

from tests.conftest import Tenant
from tests.service.invoicing_helpers import create_plan, on_clock, send, subscribe

STANDARD = [{"billable_metric_code": "api_requests", "charge_model": "standard", "properties": {"amount": "0.001"}}]
MONTHS = [f"2026-{m:02d}-01T00:00:00Z" for m in range(1, 11)]  # the ended periods of a Jan 1 subscription, on_clock


async def coupon(t: Tenant, code: str, **body) -> dict:
    response = await t.http.post("/v1/coupons", json={"code": code, **body})
    assert response.status_code == 201, response.text
    return response.json()


async def apply(t: Tenant, customer: str, code: str) -> dict:
    response = await t.http.post("/v1/applied_coupons", json={"customer_id": customer, "coupon_code": code})
    assert response.status_code == 201, response.text
    return response.json()


async def invoices(t: Tenant, customer: str) -> list[dict]:
    """The customer's invoices once the billing run has issued what is due."""
    await t.bill(customer)
    response = await t.http.get(f"/v1/customers/{customer}/invoices", params={"page_size": 100})
    assert response.status_code == 200, response.text
    return response.json()["invoices"]


async def discounts_by_month(t: Tenant, customer: str) -> list[int]:
    """The coupon total of each finalized monthly invoice, January first."""
    finalized = {i["period_start"]: i for i in await invoices(t, customer) if i["status"] == "finalized"}
    assert sorted(finalized) == MONTHS
    for invoice in finalized.values():
        assert invoice["total_amount_cents"] == invoice["subtotal_cents"] + invoice["coupons_amount_cents"]
        assert invoice["coupons_amount_cents"] == sum(c["discount_cents"] for c in invoice["coupons"])
    return [finalized[m]["coupons_amount_cents"] for m in MONTHS]


async def base_plan(t: Tenant, code: str = "base", **extra) -> None:
    await create_plan(t, code, STANDARD, amount_cents=4900, **extra)


@pytest.mark.parametrize(
    ("terms", "expected"),
    [
        ({"duration": "once"}, [-980] + [0] * 9),
        ({"duration": "recurring", "duration_in_months": 3}, [-980] * 3 + [0] * 7),
        ({"duration": "forever"}, [-980] * 10),
    ],
)
async def test_a_percentage_coupon_discounts_for_its_duration(tenant: Tenant, terms: dict, expected: list[int]):
    await on_clock(tenant, "c1")
    await base_plan(tenant)
    await coupon(tenant, "OFF20", discount_type="percentage", discount_value=20, **terms)
    await apply(tenant, "c1", "OFF20")
    await subscribe(tenant, "c1", "base", "2026-01-01T00:00:00Z")
    assert await discounts_by_month(tenant, "c1") == expected


async def test_a_fixed_coupon_larger_than_invoices_carries_its_remainder(tenant: Tenant):
    await on_clock(tenant, "c1")
    await base_plan(tenant)
    await coupon(tenant, "HUNDRED", discount_type="fixed_amount", discount_value=100, duration="once")
    await apply(tenant, "c1", "HUNDRED")
    await subscribe(tenant, "c1", "base", "2026-01-01T00:00:00Z")
    # $100 against $49 invoices: 49 + 49 + 2, then nothing is left.
    assert await discounts_by_month(tenant, "c1") == [-4900, -4900, -200] + [0] * 7
    totals = [i["total_amount_cents"] for i in sorted(await invoices(tenant, "c1"), key=lambda i: i["period_start"])]
    assert totals[:4] == [0, 0, 4700, 4900]


@pytest.mark.parametrize(
    ("terms", "expected"),
    [
        ({"duration": "recurring", "duration_in_months": 2}, [-1000, -1000] + [0] * 8),
        ({"duration": "forever"}, [-1000] * 10),
    ],
)
async def test_a_recurring_fixed_coupon_gives_its_amount_each_period(tenant: Tenant, terms, expected):
    await on_clock(tenant, "c1")
    await base_plan(tenant)
    await coupon(tenant, "TEN", discount_type="fixed_amount", amount_cents=1000, currency="USD", **terms)
    await apply(tenant, "c1", "TEN")
    await subscribe(tenant, "c1", "base", "2026-01-01T00:00:00Z")
    assert await discounts_by_month(tenant, "c1") == expected


async def test_a_per_period_amount_larger_than_the_invoice_does_not_carry(tenant: Tenant):
    await on_clock(tenant, "c1")
    await base_plan(tenant)
    await coupon(tenant, "BIG", discount_type="fixed_amount", discount_value="60.00", duration="forever")
    await apply(tenant, "c1", "BIG")
    await subscribe(tenant, "c1", "base", "2026-01-01T00:00:00Z")
    assert await discounts_by_month(tenant, "c1") == [-4900] * 10


@pytest.mark.parametrize(
    ("order", "expected"),
    [
        # 20% of 12400 = 2480, then $10 of the 9920 left.
        (("PCT", "FIX"), [("PCT", -2480), ("FIX", -1000)]),
        # $10 of 12400, then 20% of the 11400 left = 2280.
        (("FIX", "PCT"), [("FIX", -1000), ("PCT", -2280)]),
    ],
)
async def test_coupons_apply_in_application_order_each_to_what_is_left(tenant: Tenant, order, expected):
    await create_plan(tenant, "big", STANDARD, amount_cents=12400)
    await coupon(tenant, "PCT", discount_type="percentage", discount_value=20, duration="forever")
    await coupon(tenant, "FIX", discount_type="fixed_amount", discount_value=10, duration="forever")
    for code in order:
        await apply(tenant, "c1", code)
    await subscribe(tenant, "c1", "big", "2026-10-01T00:00:00Z")
    [october] = [i for i in await invoices(tenant, "c1") if i["period_start"] == "2026-10-01T00:00:00Z"]
    assert [(c["code"], c["discount_cents"]) for c in october["coupons"]] == expected
    assert (october["subtotal_cents"], october["total_amount_cents"]) == (12400, 12400 + sum(c for _, c in expected))


async def october(t: Tenant, customer: str) -> dict:
    [invoice] = [i for i in await invoices(t, customer) if i["period_start"] == "2026-10-01T00:00:00Z"]
    return invoice


async def test_a_coupon_limited_to_other_plans_discounts_nothing(tenant: Tenant):
    await base_plan(tenant)
    await base_plan(tenant, "other")
    await coupon(tenant, "ONLY", discount_type="percentage", discount_value=50, duration="forever")
    limited = {"discount_type": "percentage", "discount_value": 10, "duration": "forever"}
    await coupon(tenant, "ELSEWHERE", applies_to={"plan_codes": ["other"]}, **limited)
    await coupon(tenant, "HERE", applies_to={"plan_codes": ["base", "other"]}, **limited)
    for code in ("ELSEWHERE", "HERE"):
        await apply(tenant, "c1", code)
    await subscribe(tenant, "c1", "base", "2026-10-01T00:00:00Z")
    assert [(c["code"], c["discount_cents"]) for c in (await october(tenant, "c1"))["coupons"]] == [("HERE", -490)]


async def test_a_coupon_limited_to_a_metric_discounts_only_its_fees(tenant: Tenant):
    await base_plan(tenant)  # $49 base fee and api_requests at $0.001
    await coupon(
        tenant,
        "HALF",
        discount_type="percentage",
        discount_value=50,
        duration="forever",
        applies_to={"billable_metric_codes": ["api_requests"]},
    )
    await apply(tenant, "c1", "HALF")
    await subscribe(tenant, "c1", "base", "2026-10-01T00:00:00Z")
    await send(tenant, "c1", 123457, "2026-10-02T00:00:00Z")  # $123.457 -> 12346 cents
    invoice = await october(tenant, "c1")
    assert invoice["subtotal_cents"] == 4900 + 12346
    # Half of the usage fee only, rounded half up: 6173.
    assert [(c["code"], c["discount_cents"]) for c in invoice["coupons"]] == [("HALF", -6173)]
    assert invoice["total_amount_cents"] == 4900 + 12346 - 6173


async def test_a_fixed_coupon_discounts_only_invoices_in_its_currency(tenant: Tenant):
    await base_plan(tenant, "usd")
    await base_plan(tenant, "eur", currency="EUR")
    await coupon(tenant, "EURO", discount_type="fixed_amount", discount_value=5, currency="EUR", duration="forever")
    await apply(tenant, "c1", "EURO")
    await apply(tenant, "c2", "EURO")
    await subscribe(tenant, "c1", "usd", "2026-10-01T00:00:00Z")
    await subscribe(tenant, "c2", "eur", "2026-10-01T00:00:00Z")
    assert (await october(tenant, "c1"))["coupons"] == []
    assert (await october(tenant, "c2"))["coupons_amount_cents"] == -500


async def test_a_draft_shows_what_its_coupons_would_take_and_a_removed_coupon_takes_nothing(tenant: Tenant):
    await base_plan(tenant)
    await coupon(tenant, "ONE", discount_type="percentage", discount_value=20, duration="once")
    await coupon(tenant, "EVER", discount_type="fixed_amount", discount_value=1, duration="forever")
    await apply(tenant, "c1", "ONE")
    kept = await apply(tenant, "c1", "EVER")
    await subscribe(tenant, "c1", "base", "2026-10-01T00:00:00Z")
    drafts = [i for i in await invoices(tenant, "c1") if i["status"] == "draft"]
    assert [(c["code"], c["discount_cents"]) for c in drafts[0]["coupons"]] == [("EVER", -100)]  # ONE went to October
    assert [c["code"] for c in (await october(tenant, "c1"))["coupons"]] == ["ONE", "EVER"]
    assert (await tenant.http.delete(f"/v1/applied_coupons/{kept['id']}")).status_code == 200
    [draft] = [i for i in await invoices(tenant, "c1") if i["status"] == "draft"]
    assert (draft["coupons"], draft["total_amount_cents"]) == ([], draft["subtotal_cents"])
