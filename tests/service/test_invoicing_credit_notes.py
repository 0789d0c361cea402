"""Credit notes, hand-computed: a partial credit reducing what is due, with
its share of the taxes; the full remainder; refusals naming their field;
gapless numbers; an invoice with credit notes cannot be voided."""

from __future__ import annotations

import pytest
from sqlalchemy import update

from services.invoicing.models import Invoice
from tests.conftest import Tenant
from tests.service.invoicing_helpers import InvoicingDb, create_plan, subscribe

STANDARD = [{"billable_metric_code": "api_requests", "charge_model": "standard", "properties": {"amount": "0.001"}}]


async def invoice_of(t: Tenant, customer: str = "c1", amount_cents: int = 10000) -> dict:
    await create_plan(t, f"p{amount_cents}", STANDARD, amount_cents=amount_cents)
    await subscribe(t, customer, f"p{amount_cents}", "2026-10-01T00:00:00Z")
    response = await t.http.post("/v1/invoices", json={"customer_id": customer, "cutoff_date": "2026-10-31T23:59:59Z"})
    assert response.status_code == 201, response.text
    return response.json()


async def credit(t: Tenant, expect: int = 201, **body) -> dict:
    response = await t.http.post("/v1/credit_notes", json=body)
    assert response.status_code == expect, response.text
    return response.json()


async def test_a_credit_note_reduces_what_is_due(tenant: Tenant):
    assert (
        await tenant.http.post("/v1/taxes", json={"code": "vat", "rate": "20", "applied_to_organization": True})
    ).status_code == 201
    invoice = await invoice_of(tenant)
    assert (invoice["total_amount_cents"], invoice["amount_due_cents"]) == (12000, 12000)

    first = await credit(
        tenant, invoice_id=invoice["id"], amount_cents=3000, reason="order_change", description="seats"
    )
    # 3000 of a 12000 invoice whose taxes are 2000: a 500 tax share.
    assert (first["number"], first["amount_cents"], first["taxes_amount_cents"]) == ("CN-000001", 3000, 500)
    assert (first["type"], first["reason"], first["customer_id"], first["currency"]) == (
        "credit",
        "order_change",
        "c1",
        "USD",
    )
    after = (await tenant.http.get(f"/v1/invoices/{invoice['id']}")).json()
    assert (after["total_amount_cents"], after["credit_notes_amount_cents"], after["amount_due_cents"]) == (
        12000,
        3000,
        9000,
    )

    rest = await credit(tenant, invoice_id=invoice["id"])  # no amount: everything still owed
    assert (rest["number"], rest["amount_cents"], rest["taxes_amount_cents"], rest["reason"]) == (
        "CN-000002",
        9000,
        1500,
        "other",
    )
    assert (await tenant.http.get(f"/v1/invoices/{invoice['id']}")).json()["amount_due_cents"] == 0
    full = await tenant.http.post("/v1/credit_notes", json={"invoice_id": invoice["id"], "amount_cents": 1})
    assert (full.status_code, full.json()["error"]["reason"]) == (409, "FULLY_CREDITED")

    assert (await tenant.http.get(f"/v1/credit_notes/{first['id']}")).json() == first
    listed = (await tenant.http.get("/v1/credit_notes", params={"invoice_id": invoice["id"]})).json()["credit_notes"]
    assert [n["number"] for n in listed] == ["CN-000001", "CN-000002"]
    assert (await tenant.http.get("/v1/credit_notes", params={"customer_id": "other"})).json()["credit_notes"] == []
    voided = await tenant.http.post(f"/v1/invoices/{invoice['id']}/void")
    assert (voided.status_code, voided.json()["error"]["reason"]) == (409, "HAS_CREDIT_NOTES")


@pytest.mark.parametrize(
    ("body", "status", "field", "reason"),
    [
        ({"amount_cents": 10001}, 400, "amount_cents", "INVALID_ARGUMENT"),
        ({"amount_cents": -1}, 400, "amount_cents", "INVALID_ARGUMENT"),
        ({"type": "refund"}, 409, "kind", "NOT_PAID"),
        ({"reason": "bored"}, 400, "reason", "INVALID_VALUE"),
        ({"invoice_id": "inv_nope"}, 404, "invoice_id", "NOT_FOUND"),
    ],
)
async def test_bad_credit_notes_are_refused_and_store_nothing(tenant: Tenant, body, status, field, reason):
    invoice = await invoice_of(tenant)
    response = await tenant.http.post("/v1/credit_notes", json={"invoice_id": invoice["id"], **body})
    assert response.status_code == status, response.text
    assert (response.json()["error"]["field"], response.json()["error"]["reason"]) == (field, reason)
    assert (await tenant.http.get("/v1/credit_notes")).json()["credit_notes"] == []
    assert (await tenant.http.get(f"/v1/invoices/{invoice['id']}")).json()["amount_due_cents"] == 10000


async def test_a_voided_invoice_takes_no_credit_note_and_owes_nothing(tenant: Tenant, make_tenant):
    invoice = await invoice_of(tenant)
    voided = (await tenant.http.post(f"/v1/invoices/{invoice['id']}/void")).json()
    assert voided["amount_due_cents"] == 0
    refused = await tenant.http.post("/v1/credit_notes", json={"invoice_id": invoice["id"]})
    assert (refused.status_code, refused.json()["error"]["reason"]) == (409, "INVALID_TRANSITION")
    assert "is voided" in refused.json()["error"]["message"]
    other = await make_tenant()
    try:
        assert (await other.http.post("/v1/credit_notes", json={"invoice_id": invoice["id"]})).status_code == 404
        assert (await other.http.get("/v1/credit_notes")).json()["credit_notes"] == []
        assert (await tenant.http.get("/v1/credit_notes/cn_nope")).status_code == 404
    finally:
        await other.http.aclose()


async def test_credit_notes_are_paginated(tenant: Tenant):
    invoice = await invoice_of(tenant)
    for _ in range(3):
        await credit(tenant, invoice_id=invoice["id"], amount_cents=100)
    first = (await tenant.http.get("/v1/credit_notes", params={"page_size": 2})).json()
    second = (await tenant.http.get("/v1/credit_notes", params={"page_token": first["next_page_token"]})).json()
    assert [n["number"] for n in first["credit_notes"] + second["credit_notes"]] == [
        "CN-000001",
        "CN-000002",
        "CN-000003",
    ]


async def test_a_paid_invoice_takes_a_refund(tenant: Tenant, invoicing_db: InvoicingDb):
    invoice = await invoice_of(tenant)
    async with invoicing_db.sessions() as session, session.begin():  # paid, as the payments flow will mark it
        await session.execute(update(Invoice).where(Invoice.id == invoice["id"]).values(status="INVOICE_STATUS_PAID"))
    refund = await credit(tenant, invoice_id=invoice["id"], type="refund", reason="product_unsatisfactory")
    assert (refund["type"], refund["amount_cents"]) == ("refund", 10000)
    after = (await tenant.http.get(f"/v1/invoices/{invoice['id']}")).json()
    assert (after["status"], after["amount_due_cents"]) == ("paid", 0)
