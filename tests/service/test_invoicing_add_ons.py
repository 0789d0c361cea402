"""Add-ons: one-off charges invoiced at once when applied, with their taxes
and without coupons; once per applied add-on whatever path issues it."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert

from bxb.catalog.v1 import add_ons_pb2, add_ons_pb2_grpc
from services.common import bus, peers, tenancy
from services.common.outbox import OutboxRelay
from services.invoicing.fees import FeeCalculator
from services.invoicing.models import Invoice, InvoiceSequence, Outbox
from services.invoicing.one_offs import OneOffInvoices
from services.invoicing.projection import SubscriptionProjection
from tests.conftest import Infra, Stack, Tenant, eventually, unique
from tests.service.invoicing_helpers import InvoicingDb

SETUP = {"code": "setup", "name": "Setup fee", "amount_cents": 50000}


async def post(t: Tenant, path: str, body: dict, expect: int = 201) -> dict:
    response = await t.http.post(path, json=body)
    assert response.status_code == expect, response.text
    return response.json()


async def one_offs(t: Tenant, customer: str) -> list[dict]:
    listed = (await t.http.get(f"/v1/customers/{customer}/invoices")).json()["invoices"]
    return [i for i in listed if i["timing"] == "one_off"]


async def issued(t: Tenant, customer: str) -> list[dict]:
    """The customer's one-off invoices, once add_on_applied has brought the first."""

    async def some():
        found = await one_offs(t, customer)
        assert found
        return found

    return await eventually(some)


async def test_an_applied_add_on_is_invoiced_at_once_with_its_taxes_and_no_coupon(tenant: Tenant):
    await post(tenant, "/v1/taxes", {"code": "vat", "rate": "20", "applied_to_organization": True})
    created = await post(tenant, "/v1/add_ons", SETUP)
    assert (created["amount_cents"], created["amount_currency"], created["tax_codes"]) == (50000, "USD", [])
    coupon = {"code": "OFF", "discount_type": "percentage", "discount_value": 50, "duration": "forever"}
    await post(tenant, "/v1/coupons", coupon)
    await post(tenant, "/v1/applied_coupons", {"customer_id": "c1", "coupon_code": "OFF"})
    applied = await post(tenant, "/v1/applied_add_ons", {"external_customer_id": "c1", "add_on_code": "setup"})
    assert (applied["customer_id"], applied["add_on_code"], applied["amount_cents"]) == ("c1", "setup", 50000)

    [invoice] = await issued(tenant, "c1")
    assert (invoice["status"], invoice["subscription_id"], invoice["plan_code"]) == ("finalized", None, None)
    assert [(f["type"], f["amount_cents"], f["description"]) for f in invoice["fees"]] == [
        ("add_on", 50000, "Setup fee")
    ]
    assert invoice["period_start"] == invoice["period_end"] == applied["created_at"]
    assert (invoice["coupons"], invoice["taxes_amount_cents"], invoice["total_amount_cents"]) == ([], 10000, 60000)
    assert len(await one_offs(tenant, "c1")) == 1  # reading again changes nothing


async def test_a_price_for_one_customer_and_the_add_on_s_own_taxes(tenant: Tenant):
    await post(tenant, "/v1/taxes", {"code": "org", "rate": "20", "applied_to_organization": True})
    await post(tenant, "/v1/taxes", {"code": "reduced", "rate": "5.5"})
    await post(tenant, "/v1/add_ons", {**SETUP, "tax_codes": ["reduced"]})
    body = {"customer_id": "c2", "add_on_code": "setup", "amount_cents": 1234, "amount_currency": "eur"}
    applied = await post(tenant, "/v1/applied_add_ons", body)
    assert (applied["amount_cents"], applied["amount_currency"]) == (1234, "EUR")
    [invoice] = await issued(tenant, "c2")
    # 5.5% of 12.34 EUR = 0.6787 -> 0.68.
    assert (invoice["currency"], invoice["taxes"][0]["code"], invoice["taxes_amount_cents"]) == ("EUR", "reduced", 68)
    listed = (await tenant.http.get("/v1/applied_add_ons", params={"customer_id": "c2"})).json()["applied_add_ons"]
    assert [a["id"] for a in listed] == [applied["id"]]


@pytest.mark.parametrize(
    ("path", "body", "status", "field"),
    [
        ("/v1/add_ons", {**SETUP, "amount_cents": 0}, 400, "amount_cents"),
        ("/v1/add_ons", {"code": "x"}, 400, "amount_cents"),
        ("/v1/add_ons", {**SETUP, "amount_currency": "ABC"}, 400, "amount_currency"),
        ("/v1/add_ons", {**SETUP, "tax_codes": ["nope"]}, 400, "tax_codes[0]"),
        ("/v1/add_ons", {**SETUP, "code": "a b"}, 400, "code"),
        ("/v1/applied_add_ons", {"customer_id": "c1", "add_on_code": "nope"}, 404, "add_on_code"),
        ("/v1/applied_add_ons", {"add_on_code": "setup"}, 400, "customer_id"),
        ("/v1/applied_add_ons", {"customer_id": "c1", "add_on_code": "setup", "amount_cents": -5}, 400, "amount_cents"),
        (
            "/v1/applied_add_ons",
            {"customer_id": "c1", "add_on_code": "setup", "amount_currency": "XX"},
            400,
            "amount_currency",
        ),
        ("/v1/applied_add_ons", {"customer_id": "c 1", "add_on_code": "setup"}, 400, "customer_id"),
    ],
)
async def test_bad_add_ons_are_refused_naming_their_field(tenant: Tenant, path, body, status, field):
    if path == "/v1/applied_add_ons":
        await post(tenant, "/v1/add_ons", SETUP)
    response = await tenant.http.post(path, json=body)
    assert (response.status_code, response.json()["error"]["field"]) == (status, field), response.text
    assert (await tenant.http.get("/v1/applied_add_ons")).json()["applied_add_ons"] == []


async def test_add_ons_are_read_back_unique_and_private(tenant: Tenant, make_tenant):
    created = await post(tenant, "/v1/add_ons", SETUP)
    assert (await tenant.http.get("/v1/add_ons/setup")).json() == created
    assert (await tenant.http.get("/v1/add_ons")).json()["add_ons"] == [created]
    assert (await tenant.http.post("/v1/add_ons", json=SETUP)).status_code == 409
    other = await make_tenant()
    try:
        assert (await other.http.get("/v1/add_ons/setup")).status_code == 404
        assert (await other.http.get("/v1/add_ons")).json()["add_ons"] == []
    finally:
        await other.http.aclose()


class PausedTaxes(peers.Catalog):
    """The catalog, answering for taxes only once released."""

    def __init__(self, channel):
        super().__init__(channel=channel)
        self.asked, self.release = asyncio.Event(), asyncio.Event()

    async def batch_resolve_taxes(self, org, request, **options):
        self.asked.set()
        await self.release.wait()
        return await super().batch_resolve_taxes(org, request, **options)


async def test_two_paths_issuing_one_add_on_make_one_invoice(
    infra: Infra, stack: Stack, tenant: Tenant, invoicing_db: InvoicingDb
):
    """The service (from add_on_applied, or a read) and a second issuer both
    pass their check for an existing invoice before either stores one; one
    invoice results. Holding the organization's invoice numbering keeps every
    issuer from committing until the second has passed its check (without
    the hold the service could win first, and the check would never ask)."""
    await post(tenant, "/v1/add_ons", SETUP)
    org = tenant.organization_id
    async with stack.channel("catalog") as catalog, invoicing_db.sessions() as hold:
        await hold.execute(insert(InvoiceSequence).values(organization_id=org, last_number=0))
        applied = await add_ons_pb2_grpc.AddOnServiceStub(catalog).ApplyAddOn(
            add_ons_pb2.ApplyAddOnRequest(customer_id="c3", add_on_code="setup"), metadata=tenancy.metadata(org)
        )
        paused = PausedTaxes(catalog)
        relay = OutboxRelay(invoicing_db.sessions, Outbox, bus.Bus(infra.nats.url, unique("unopened")))
        fees = FeeCalculator(invoicing_db.sessions, peers.Metering(stack.metering), paused)
        slow = OneOffInvoices(invoicing_db.sessions, fees, relay)
        late = asyncio.create_task(slow.issue(org, applied))
        await asyncio.wait_for(paused.asked.wait(), 10)  # past its check: nothing was issued
        paused.release.set()
        await hold.rollback()  # numbering free: the issuers race to store it
        await late
        [first] = await one_offs(tenant, "c3")
        await slow.issue(org, applied)  # a redelivery finds it
    assert [i["id"] for i in await one_offs(tenant, "c3")] == [first["id"]]
    async with invoicing_db.sessions() as session:
        assert (await session.get(Invoice, first["id"])).source_id == applied.id


async def test_catching_up_issues_every_applied_add_on_page_by_page(
    infra: Infra, stack: Stack, tenant: Tenant, invoicing_db: InvoicingDb
):
    await post(tenant, "/v1/add_ons", SETUP)
    ids = [
        (await post(tenant, "/v1/applied_add_ons", {"customer_id": "c4", "add_on_code": "setup"}))["id"]
        for _ in range(3)
    ]
    async with stack.channel("catalog") as channel:
        catalog = peers.Catalog(channel=channel)
        # One-offs measure no usage: metering is never asked.
        fees = FeeCalculator(invoicing_db.sessions, peers.Metering(stack.metering), catalog)
        relay = OutboxRelay(invoicing_db.sessions, Outbox, bus.Bus(infra.nats.url, unique("unopened")))
        issuer = OneOffInvoices(invoicing_db.sessions, fees, relay)
        projection = SubscriptionProjection(invoicing_db.sessions, catalog, issuer, page_size=2)
        await projection.catch_up(tenant.organization_id, "c4")
    async with invoicing_db.sessions() as session:
        sources = (
            (
                await session.execute(
                    select(Invoice.source_id).where(
                        Invoice.organization_id == tenant.organization_id, Invoice.customer_id == "c4"
                    )
                )
            )
            .scalars()
            .all()
        )
    assert sorted(sources) == sorted(ids)
