"""Taxes, hand-computed: levied after coupons and rounded per line; the
plan's taxes win over the customer's, which win over the organization's;
drafts and invoices on request carry them; bad taxes name their field."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from bxb.catalog.v1 import taxes_pb2, taxes_pb2_grpc
from deploy.embedded import free_port
from services.common import peers, tenancy
from services.common.errors import error_info
from services.invoicing import taxation
from tests.conftest import Stack, Tenant, eventually
from tests.service.invoicing_helpers import create_plan, on_clock, subscribe

STANDARD = [{"billable_metric_code": "api_requests", "charge_model": "standard", "properties": {"amount": "0.001"}}]


async def tax(t: Tenant, code: str, rate, **extra) -> dict:
    response = await t.http.post("/v1/taxes", json={"code": code, "rate": rate, **extra})
    assert response.status_code == 201, response.text
    return response.json()


async def customer(t: Tenant, customer_id: str, **extra) -> None:
    response = await t.http.post("/v1/customers", json={"id": customer_id, **extra})
    assert response.status_code == 201, response.text


async def october(t: Tenant, customer_id: str) -> dict:
    await t.bill(customer_id)
    listed = (await t.http.get(f"/v1/customers/{customer_id}/invoices", params={"page_size": 100})).json()
    [invoice] = [i for i in listed["invoices"] if i["period_start"] == "2026-10-01T00:00:00Z"]
    return invoice


def lines(invoice: dict) -> list[tuple]:
    return [(t["code"], t["taxable_amount_cents"], t["amount_cents"]) for t in invoice["taxes"]]


async def test_a_tax_is_levied_after_coupons(tenant: Tenant):
    await tax(tenant, "vat", "20", name="VAT")
    await customer(tenant, "c1", tax_codes=["vat"])
    await create_plan(tenant, "pro", STANDARD, amount_cents=10000)
    body = {"code": "OFF20", "discount_type": "percentage", "discount_value": 20, "duration": "forever"}
    assert (await tenant.http.post("/v1/coupons", json=body)).status_code == 201
    assert (
        await tenant.http.post("/v1/applied_coupons", json={"customer_id": "c1", "coupon_code": "OFF20"})
    ).status_code == 201
    await subscribe(tenant, "c1", "pro", "2026-10-01T00:00:00Z")
    invoice = await october(tenant, "c1")
    # 10000 - 20% = 8000; VAT 20% of 8000 = 1600; total 9600.
    assert (invoice["subtotal_cents"], invoice["coupons_amount_cents"]) == (10000, -2000)
    assert lines(invoice) == [("vat", 8000, 1600)]
    assert (invoice["taxes"][0]["name"], invoice["taxes"][0]["rate"]) == ("VAT", "20")
    assert (invoice["taxes_amount_cents"], invoice["total_amount_cents"]) == (1600, 9600)


async def test_each_tax_line_is_rounded_on_its_own(tenant: Tenant):
    await tax(tenant, "state", "5")
    await tax(tenant, "city", "2.5")
    await customer(tenant, "c1", tax_codes=["state", "city"])
    await create_plan(tenant, "odd", STANDARD, amount_cents=4999)
    await subscribe(tenant, "c1", "odd", "2026-10-01T00:00:00Z")
    invoice = await october(tenant, "c1")
    # 5% of 49.99 = 2.4995 -> 2.50; 2.5% = 1.24975 -> 1.25 (each half up, not their sum 3.74925 -> 3.75).
    assert lines(invoice) == [("city", 4999, 125), ("state", 4999, 250)]
    assert invoice["total_amount_cents"] == 4999 + 375


async def test_the_plan_wins_over_the_customer_which_wins_over_the_organization(tenant: Tenant):
    await tax(tenant, "org", "10", applied_to_organization=True)
    await tax(tenant, "cust", "5")
    await tax(tenant, "plan", "7")
    await customer(tenant, "bare")
    await customer(tenant, "taxed", tax_codes=["cust"])
    await create_plan(tenant, "plain", STANDARD, amount_cents=10000)
    await create_plan(tenant, "taxing", STANDARD, amount_cents=10000, tax_codes=["plan"])
    for customer_id, plan in (("bare", "plain"), ("taxed", "plain"), ("bare2", "taxing")):
        await subscribe(tenant, customer_id, plan, "2026-10-01T00:00:00Z")
    assert lines(await october(tenant, "bare")) == [("org", 10000, 1000)]
    assert lines(await october(tenant, "taxed")) == [("cust", 10000, 500)]
    assert lines(await october(tenant, "bare2")) == [("plan", 10000, 700)]


async def test_a_three_decimal_currency_rounds_to_the_fils(tenant: Tenant):
    await tax(tenant, "kw", "12.5", applied_to_organization=True)
    await create_plan(tenant, "kwd", STANDARD, amount_cents=1001, currency="KWD")  # 1.001 KWD
    await subscribe(tenant, "c1", "kwd", "2026-10-01T00:00:00Z")
    # 12.5% of 1.001 = 0.125125 -> 0.125 KWD.
    assert lines(await october(tenant, "c1")) == [("kw", 1001, 125)]


async def test_drafts_and_invoices_on_request_carry_taxes(tenant: Tenant):
    await on_clock(tenant, "c1", "c2")  # November is open
    await tax(tenant, "vat", "20", applied_to_organization=True)
    await create_plan(tenant, "pro", STANDARD, amount_cents=4900)
    await subscribe(tenant, "c1", "pro", "2026-11-01T00:00:00Z")

    async def drafted() -> dict:
        invoices = (await tenant.http.get("/v1/customers/c1/invoices")).json()["invoices"]
        assert len(invoices) == 1, invoices  # listed once invoicing has heard of the subscription
        return invoices[0]

    draft = await eventually(drafted)
    assert (draft["status"], draft["taxes_amount_cents"], draft["total_amount_cents"]) == ("draft", 980, 5880)
    await create_plan(tenant, "pro2", STANDARD, amount_cents=3100)
    await subscribe(tenant, "c2", "pro2", "2026-10-01T00:00:00Z")
    invoice = await tenant.http.post("/v1/invoices", json={"customer_id": "c2", "cutoff_date": "2026-10-31T23:59:59Z"})
    assert (invoice.json()["taxes_amount_cents"], invoice.json()["total_amount_cents"]) == (620, 3720)


@pytest.mark.parametrize(
    ("body", "field", "reason"),
    [
        ({"code": "t"}, "rate", "MISSING_FIELD"),
        ({"code": "t", "rate": "100.5"}, "rate", "INVALID_ARGUMENT"),
        ({"code": "t", "rate": -1}, "rate", "INVALID_ARGUMENT"),
        ({"code": "t", "rate": "x"}, "rate", "INVALID_VALUE"),
        ({"code": "t t", "rate": 5}, "code", "INVALID_ARGUMENT"),
        ({"code": "t", "rate": 5, "applied_to_organization": "yes"}, "applied_to_organization", "INVALID_TYPE"),
    ],
)
async def test_a_bad_tax_is_refused_naming_its_field(tenant: Tenant, body, field, reason):
    response = await tenant.http.post("/v1/taxes", json=body)
    assert response.status_code == 400, response.text
    assert (response.json()["error"]["field"], response.json()["error"]["reason"]) == (field, reason)
    assert (await tenant.http.get("/v1/taxes")).json()["taxes"] == []


async def test_taxes_are_read_back_unique_and_must_exist_where_named(tenant: Tenant, make_tenant):
    created = await tax(tenant, "vat", "19.6")
    assert created["name"] == "vat" and created["applied_to_organization"] is False
    assert (await tenant.http.get("/v1/taxes/vat")).json() == created
    assert (await tenant.http.get("/v1/taxes")).json()["taxes"] == [created]
    assert (await tenant.http.post("/v1/taxes", json={"code": "vat", "rate": 5})).status_code == 409
    assert (await tenant.http.get("/v1/taxes/nope")).status_code == 404
    refused = await tenant.http.post("/v1/customers", json={"id": "c1", "tax_codes": ["vat", "nope"]})
    assert (refused.status_code, refused.json()["error"]["field"]) == (400, "tax_codes[1]")
    assert (await tenant.http.get("/v1/customers/c1")).status_code == 404
    plan = {"code": "p", "interval": "monthly", "tax_codes": ["nope"]}
    refused = await tenant.http.post("/v1/plans", json=plan)
    assert (refused.status_code, refused.json()["error"]["field"]) == (400, "tax_codes[0]")
    other = await make_tenant()
    try:
        assert (await other.http.get("/v1/taxes/vat")).status_code == 404
        assert (await other.http.get("/v1/taxes")).json()["taxes"] == []
    finally:
        await other.http.aclose()


async def test_taxes_are_resolved_for_many_invoices_in_one_call_up_to_a_limit(stack: Stack, tenant: Tenant):
    await tax(tenant, "vat", "20", applied_to_organization=True)
    await tax(tenant, "city", "1.5")
    await customer(tenant, "local", tax_codes=["city"])
    asked = [("local", []), ("nobody", []), ("local", ["vat", "city", "vat", "gone"])]
    async with stack.channel("catalog") as channel:
        stub = taxes_pb2_grpc.TaxServiceStub(channel)
        meta = tenancy.metadata(tenant.organization_id)
        reply = await stub.BatchResolveTaxes(
            taxes_pb2.BatchResolveTaxesRequest(
                requests=[taxes_pb2.ResolveTaxesRequest(customer_id=c, plan_tax_codes=codes) for c, codes in asked]
            ),
            metadata=meta,
        )
        # The customer's, else the organization's; a plan's own, each once, by code, unknown ones skipped.
        assert [[t.code for t in r.taxes] for r in reply.responses] == [["city"], ["vat"], ["city", "vat"]]
        too_many = taxes_pb2.BatchResolveTaxesRequest(requests=[taxes_pb2.ResolveTaxesRequest(customer_id="c")] * 1001)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.BatchResolveTaxes(too_many, metadata=meta)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(refused.value).metadata["field"] == "requests"


async def test_taxes_are_never_waited_for_while_the_catalog_is_away():
    """Reads price drafts, taxes included: with the catalog down, resolving
    taxes fails at once (a read answers 503) instead of waiting out the
    catalog's deadline for it to come back."""
    catalog = peers.Catalog(f"127.0.0.1:{free_port()}", timeout=10)
    started = asyncio.get_running_loop().time()
    try:
        with pytest.raises(grpc.aio.AioRpcError) as away:
            await taxation.resolve(catalog, "org_1", [("cus_1", [])])
    finally:
        await catalog.close()
    assert away.value.code() == grpc.StatusCode.UNAVAILABLE
    assert asyncio.get_running_loop().time() - started < 5
