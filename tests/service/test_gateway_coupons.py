"""/v1/coupons and /v1/applied_coupons through the gateway: both spellings,
bad input naming its field with nothing stored, and one organization never
seeing another's coupons."""

from __future__ import annotations

import grpc
import pytest

from bxb.catalog.v1 import coupons_pb2 as cpb
from bxb.catalog.v1 import coupons_pb2_grpc as cpb_grpc
from services.common import tenancy
from services.common.errors import error_info
from tests.conftest import Stack, Tenant

LAUNCH20 = {
    "name": "Launch20",
    "code": "LAUNCH20",
    "discount_type": "percentage",
    "discount_value": 20,
    "duration": "recurring",
    "duration_in_months": 3,
}


async def test_the_seed_coupon_is_created_and_applied(tenant: Tenant):
    created = await tenant.http.post("/v1/coupons", json=LAUNCH20)
    assert created.status_code == 201, created.text
    body = created.json()
    assert {k: body[k] for k in ("code", "name", "discount_type", "discount_value", "duration")} == {
        "code": "LAUNCH20",
        "name": "Launch20",
        "discount_type": "percentage",
        "discount_value": "20",
        "duration": "recurring",
    }
    assert (body["duration_in_months"], body["percentage_rate"], body["amount_cents"]) == (3, "20", None)
    assert body["id"].startswith("coupon_")
    assert (await tenant.http.get("/v1/coupons/LAUNCH20")).json() == body
    assert (await tenant.http.get("/v1/coupons")).json()["coupons"] == [body]

    applied = await tenant.http.post(
        "/v1/applied_coupons", json={"customer_id": "cus_9a4b2", "coupon_code": "LAUNCH20"}
    )
    assert applied.status_code == 201, applied.text
    given = applied.json()
    assert (given["customer_id"], given["coupon_code"], given["status"]) == ("cus_9a4b2", "LAUNCH20", "active")
    assert given["coupon"] == body
    assert (await tenant.http.get("/v1/customers/cus_9a4b2")).status_code == 200  # created on the fly
    listed = (await tenant.http.get("/v1/applied_coupons", params={"customer_id": "cus_9a4b2"})).json()
    assert listed["applied_coupons"] == [given]
    assert (await tenant.http.get("/v1/applied_coupons", params={"customer_id": "other"})).json()[
        "applied_coupons"
    ] == []


async def test_lago_spelling_and_a_fixed_amount_in_minor_units(tenant: Tenant):
    body = {
        "code": "FIVE",
        "coupon_type": "fixed_amount",
        "amount_cents": 500,
        "amount_currency": "eur",
        "frequency": "once",
        "expiration_at": "2099-01-01T00:00:00Z",
    }
    created = (await tenant.http.post("/v1/coupons", json=body)).json()
    assert (created["discount_type"], created["discount_value"], created["amount_cents"]) == ("fixed_amount", "5", 500)
    assert (created["currency"], created["duration"], created["expiration_at"]) == (
        "EUR",
        "once",
        "2099-01-01T00:00:00Z",
    )
    assert (created["name"], created["duration_in_months"]) == ("FIVE", None)


@pytest.mark.parametrize(("currency", "value", "cents"), [("JPY", 500, 500), ("KWD", "1.25", 1250), ("USD", "0.5", 50)])
async def test_a_fixed_discount_value_is_in_major_units_of_its_currency(tenant: Tenant, currency, value, cents):
    body = {"code": "F", "discount_type": "fixed_amount", "discount_value": value, "currency": currency}
    created = await tenant.http.post("/v1/coupons", json={**body, "duration": "forever"})
    assert created.status_code == 201, created.text
    assert created.json()["amount_cents"] == cents


async def test_coupons_can_be_limited_to_existing_plans_and_metrics(tenant: Tenant):
    metric = {"code": "api_requests", "aggregation_type": "count"}
    assert (await tenant.http.post("/v1/billable_metrics", json=metric)).status_code == 201
    plan = {"code": "pro", "interval": "monthly", "amount_cents": 100}
    assert (await tenant.http.post("/v1/plans", json=plan)).status_code == 201
    body = {
        **LAUNCH20,
        "applies_to": {"plan_codes": ["pro"], "billable_metric_codes": ["api_requests"]},
    }
    created = await tenant.http.post("/v1/coupons", json=body)
    assert created.json()["applies_to"] == {"plan_codes": ["pro"], "billable_metric_codes": ["api_requests"]}


@pytest.mark.parametrize(
    ("change", "field", "reason"),
    [
        ({"discount_type": None}, "discount_type", "MISSING_FIELD"),
        ({"coupon_type": "percentage"}, "coupon_type", "CONFLICTING_FIELDS"),
        ({"discount_type": "bogus"}, "discount_type", "INVALID_VALUE"),
        ({"discount_value": 0}, "discount_value", "INVALID_ARGUMENT"),
        ({"discount_value": "100.01"}, "discount_value", "INVALID_ARGUMENT"),
        ({"discount_value": None, "percentage_rate": -5}, "percentage_rate", "INVALID_ARGUMENT"),
        ({"discount_value": "abc"}, "discount_value", "INVALID_VALUE"),
        ({"duration": None}, "duration", "MISSING_FIELD"),
        ({"duration_in_months": 0}, "duration_in_months", "INVALID_ARGUMENT"),
        ({"duration_in_months": 1201}, "duration_in_months", "INVALID_ARGUMENT"),
        ({"duration": "once"}, "duration_in_months", "INVALID_ARGUMENT"),
        ({"code": "has space"}, "code", "INVALID_ARGUMENT"),
        ({"code": None}, "code", "MISSING_FIELD"),
        ({"name": "x" * 201}, "name", "INVALID_VALUE"),
        ({"amount_cents": 5}, "amount_cents", "INVALID_ARGUMENT"),
        ({"currency": "USD"}, "amount_cents", "INVALID_ARGUMENT"),
        ({"applies_to": {"plan_codes": ["nope"]}}, "applies_to.plan_codes[0]", "UNKNOWN_PLAN"),
        ({"applies_to": {"billable_metric_codes": ["nope"]}}, "applies_to.billable_metric_codes[0]", "UNKNOWN_METRIC"),
        ({"applies_to": {"plan_codes": [""]}}, "applies_to.plan_codes[0]", "INVALID_ARGUMENT"),
        ({"expiration_at": "soon"}, "expiration_at", "INVALID_VALUE"),
    ],
)
async def test_a_bad_percentage_coupon_is_refused_naming_its_field(tenant: Tenant, change, field, reason):
    body = {**LAUNCH20, **change}
    response = await tenant.http.post("/v1/coupons", json={k: v for k, v in body.items() if v is not None})
    assert response.status_code == 400, response.text
    assert (response.json()["error"]["field"], response.json()["error"]["reason"]) == (field, reason)
    assert (await tenant.http.get("/v1/coupons")).json()["coupons"] == []


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"discount_value": 0}, "discount_value"),
        ({"discount_value": None, "amount_cents": -1}, "amount_cents"),
        ({"discount_value": "0.001"}, "discount_value"),
        ({"discount_value": "1e30"}, "discount_value"),
        ({"currency": "XYZ"}, "currency"),
        ({"currency": "USD", "amount_currency": "USD"}, "amount_currency"),
        ({"percentage_rate": 5}, "percentage_rate"),
    ],
)
async def test_a_bad_fixed_coupon_is_refused_naming_its_field(tenant: Tenant, change, field):
    body = {"code": "FIX", "discount_type": "fixed_amount", "discount_value": 10, "duration": "once", **change}
    response = await tenant.http.post("/v1/coupons", json={k: v for k, v in body.items() if v is not None})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["field"] == field
    assert (await tenant.http.get("/v1/coupons")).json()["coupons"] == []


async def test_a_coupon_code_is_unique(tenant: Tenant):
    assert (await tenant.http.post("/v1/coupons", json=LAUNCH20)).status_code == 201
    again = await tenant.http.post("/v1/coupons", json={**LAUNCH20, "discount_value": 30})
    assert again.status_code == 409
    assert again.json()["error"]["field"] == "code"
    assert (await tenant.http.get("/v1/coupons/LAUNCH20")).json()["discount_value"] == "20"


async def test_applying_refuses_unknown_expired_and_active_coupons(tenant: Tenant):
    h = tenant.http
    missing = await h.post("/v1/applied_coupons", json={"customer_id": "c1", "coupon_code": "NOPE"})
    assert (missing.status_code, missing.json()["error"]["field"]) == (404, "coupon_code")
    expired = {**LAUNCH20, "code": "OLD", "expiration_at": "2020-01-01T00:00:00Z"}
    assert (await h.post("/v1/coupons", json=expired)).status_code == 201
    late = await h.post("/v1/applied_coupons", json={"customer_id": "c1", "coupon_code": "OLD"})
    assert (late.status_code, late.json()["error"]["reason"]) == (409, "COUPON_EXPIRED")
    assert (await h.post("/v1/coupons", json=LAUNCH20)).status_code == 201
    first = await h.post("/v1/applied_coupons", json={"external_customer_id": "c1", "coupon_code": "LAUNCH20"})
    assert first.status_code == 201
    twice = await h.post("/v1/applied_coupons", json={"customer_id": "c1", "coupon_code": "LAUNCH20"})
    assert (twice.status_code, twice.json()["error"]["reason"]) == (409, "COUPON_ALREADY_APPLIED")
    for body, field in (
        ({"coupon_code": "LAUNCH20"}, "customer_id"),
        ({"customer_id": "c 1", "coupon_code": "LAUNCH20"}, "customer_id"),
        ({"customer_id": "c1", "coupon_code": ""}, "coupon_code"),
    ):
        response = await h.post("/v1/applied_coupons", json=body)
        assert (response.status_code, response.json()["error"]["field"]) == (400, field)
    listed = (await h.get("/v1/applied_coupons")).json()["applied_coupons"]
    assert [a["id"] for a in listed] == [first.json()["id"]]


async def test_removing_an_applied_coupon_lets_it_be_applied_again(tenant: Tenant):
    h = tenant.http
    assert (await h.post("/v1/coupons", json=LAUNCH20)).status_code == 201
    applied = (await h.post("/v1/applied_coupons", json={"customer_id": "c1", "coupon_code": "LAUNCH20"})).json()
    removed = await h.delete(f"/v1/applied_coupons/{applied['id']}")
    assert (removed.status_code, removed.json()["status"]) == (200, "terminated")
    assert removed.json()["terminated_at"] is not None
    again = await h.delete(f"/v1/applied_coupons/{applied['id']}")  # removing again changes nothing
    assert again.json() == removed.json()
    assert (await h.delete("/v1/applied_coupons/acp_nope")).status_code == 404
    reapplied = await h.post("/v1/applied_coupons", json={"customer_id": "c1", "coupon_code": "LAUNCH20"})
    assert reapplied.status_code == 201


async def test_an_organization_never_sees_another_organizations_coupons(tenant: Tenant, make_tenant):
    other = await make_tenant()
    try:
        assert (await tenant.http.post("/v1/coupons", json=LAUNCH20)).status_code == 201
        applied = (
            await tenant.http.post("/v1/applied_coupons", json={"customer_id": "c1", "coupon_code": "LAUNCH20"})
        ).json()
        assert (await other.http.get("/v1/coupons/LAUNCH20")).status_code == 404
        assert (await other.http.get("/v1/coupons")).json()["coupons"] == []
        assert (await other.http.get("/v1/applied_coupons")).json()["applied_coupons"] == []
        assert (await other.http.delete(f"/v1/applied_coupons/{applied['id']}")).status_code == 404
        refused = await other.http.post("/v1/applied_coupons", json={"customer_id": "c1", "coupon_code": "LAUNCH20"})
        assert refused.status_code == 404
        assert (await other.http.post("/v1/coupons", json=LAUNCH20)).status_code == 201  # codes are per organization
    finally:
        await other.http.aclose()


async def test_coupon_lists_are_paginated(tenant: Tenant):
    for n in range(3):
        assert (await tenant.http.post("/v1/coupons", json={**LAUNCH20, "code": f"C{n}"})).status_code == 201
        await tenant.http.post("/v1/applied_coupons", json={"customer_id": "c1", "coupon_code": f"C{n}"})
    first = (await tenant.http.get("/v1/coupons", params={"page_size": 2})).json()
    second = (await tenant.http.get("/v1/coupons", params={"page_token": first["next_page_token"]})).json()
    assert [c["code"] for c in first["coupons"] + second["coupons"]] == ["C0", "C1", "C2"]
    applied = (await tenant.http.get("/v1/applied_coupons", params={"page_size": 2})).json()
    assert len(applied["applied_coupons"]) == 2 and applied["next_page_token"]


@pytest.mark.parametrize(
    ("coupon", "field"),
    [
        (cpb.Coupon(code="X", duration=cpb.COUPON_DURATION_ONCE), "coupon.coupon_type"),
        (cpb.Coupon(code="X", coupon_type=cpb.COUPON_TYPE_PERCENTAGE, percentage="5"), "coupon.duration"),
    ],
)
async def test_the_catalog_refuses_a_coupon_without_type_or_duration(stack: Stack, tenant: Tenant, coupon, field):
    async with stack.channel("catalog") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await cpb_grpc.CouponServiceStub(channel).CreateCoupon(
                cpb.CreateCouponRequest(coupon=coupon), metadata=tenancy.metadata(tenant.organization_id)
            )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(refused.value).metadata["field"] == field


async def create_over_grpc(stack: Stack, tenant: Tenant, coupon: cpb.Coupon) -> cpb.Coupon:
    async with stack.channel("catalog") as channel:
        return await cpb_grpc.CouponServiceStub(channel).CreateCoupon(
            cpb.CreateCouponRequest(coupon=coupon), metadata=tenancy.metadata(tenant.organization_id)
        )


@pytest.mark.parametrize(
    ("currency", "amount", "cents"), [("JPY", "500", 500), ("KWD", "1.25", 1250), ("USD", "0.5", 50)]
)
async def test_over_grpc_a_fixed_amount_means_what_it_means_over_rest(
    stack: Stack, tenant: Tenant, currency, amount, cents
):
    """The catalog converts major units, as the gateway's discount_value
    reads: both paths store and answer the same coupon."""
    fixed = {"coupon_type": cpb.COUPON_TYPE_FIXED_AMOUNT, "duration": cpb.COUPON_DURATION_ONCE, "currency": currency}
    by_amount = await create_over_grpc(stack, tenant, cpb.Coupon(code="A", amount=amount, **fixed))
    by_cents = await create_over_grpc(stack, tenant, cpb.Coupon(code="C", amount_cents=cents, **fixed))
    assert (by_amount.amount, by_amount.amount_cents) == (by_cents.amount, by_cents.amount_cents) == (amount, cents)
    over_rest = (await tenant.http.get("/v1/coupons/A")).json()
    assert (over_rest["discount_value"], over_rest["amount_cents"]) == (amount, cents)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"amount": "10", "amount_cents": 1000}, "coupon.amount"),
        ({"amount": "0.001"}, "coupon.amount"),
        ({"amount": "0"}, "coupon.amount"),
        ({"amount": "ten"}, "coupon.amount"),
    ],
)
async def test_over_grpc_a_bad_fixed_amount_is_refused_naming_its_field(stack: Stack, tenant: Tenant, change, field):
    fixed = {"coupon_type": cpb.COUPON_TYPE_FIXED_AMOUNT, "duration": cpb.COUPON_DURATION_ONCE, "currency": "USD"}
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await create_over_grpc(stack, tenant, cpb.Coupon(code="B", **{**fixed, **change}))
    assert (refused.value.code(), error_info(refused.value).metadata["field"]) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        field,
    )


async def test_over_grpc_a_percentage_coupon_has_no_amount(stack: Stack, tenant: Tenant):
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await create_over_grpc(
            stack,
            tenant,
            cpb.Coupon(
                code="P",
                coupon_type=cpb.COUPON_TYPE_PERCENTAGE,
                percentage="5",
                amount="1",
                duration=cpb.COUPON_DURATION_ONCE,
            ),
        )
    assert error_info(refused.value).metadata["field"] == "coupon.amount"
