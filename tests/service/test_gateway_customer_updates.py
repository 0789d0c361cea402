"""PATCH /v1/customers/{id} (UpdateCustomer): the fields the body gives
change (the gateway makes the update_mask of them), anything else is refused
naming its field with nothing changed, another organization's customer is
not found, and each change is announced as customer_updated."""

from __future__ import annotations

import pytest

from bxb.catalog.v1 import events_pb2
from services.common import bus
from services.common.timestamps import from_proto
from tests.conftest import Tenant
from tests.service.announcement_helpers import Announcements, event_id


async def customer(tenant: Tenant, **fields) -> dict:
    created = await tenant.http.post("/v1/customers", json={"id": "cus_upd", "name": "Acme", **fields})
    assert created.status_code == 201, created.text
    return created.json()


async def test_a_patch_changes_the_fields_given_and_announces_customer_updated(
    tenant: Tenant, announcements: Announcements
):
    h = tenant.http
    before = await customer(tenant, email="ap@acme.test", currency="EUR")
    assert (await h.post("/v1/taxes", json={"code": "vat", "name": "VAT", "rate": "20"})).status_code == 201
    body = {"name": "Acme Ltd", "tax_codes": ["vat"], "invoice_grace_period": 3}
    patched = await h.patch("/v1/customers/cus_upd", json=body)
    assert patched.status_code == 200, patched.text
    shown = (await h.get("/v1/customers/cus_upd")).json()
    assert patched.json() == shown
    assert {**before, **body, "tax_codes": ["vat"]} == shown  # the email and currency stay

    announced = await announcements.one(tenant.organization_id, "customer.updated")
    payload = await announcements.domain_event(bus.CATALOG, "bxb.catalog.v1.customer_updated", event_id(announced))
    event = events_pb2.CustomerUpdated.FromString(payload)
    assert (event.organization_id, event.customer.id, event.customer.name) == (
        tenant.organization_id,
        "cus_upd",
        "Acme Ltd",
    )
    assert list(event.customer.tax_codes) == ["vat"] and from_proto(event.occur_time).year >= 2026


async def test_a_patch_of_the_email_alone_changes_it_alone(tenant: Tenant):
    before = await customer(tenant, email="ap@acme.test")
    patched = await tenant.http.patch("/v1/customers/cus_upd", json={"email": "billing@acme.test"})
    assert patched.status_code == 200, patched.text
    assert (await tenant.http.get("/v1/customers/cus_upd")).json() == {**before, "email": "billing@acme.test"}


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"currency": "USD"}, 400, "update_mask"),  # not a field a customer changes
        ({"email": "x" * 321}, 400, "email"),
        ({"name": "y" * 201}, 400, "name"),
        ({"invoice_grace_period": 366}, 400, "invoice_grace_period"),
        ({"name": "Renamed", "tax_codes": ["nope"]}, 400, "tax_codes[0]"),
    ],
)
async def test_a_bad_patch_names_its_field_and_changes_nothing(
    tenant: Tenant, announcements: Announcements, body, status, field
):
    before = await customer(tenant)
    refused = await tenant.http.patch("/v1/customers/cus_upd", json=body)
    assert (refused.status_code, refused.json()["error"]["field"]) == (status, field), refused.text
    assert (await tenant.http.get("/v1/customers/cus_upd")).json() == before
    await announcements.one(tenant.organization_id, "customer.created")
    assert await announcements.all(tenant.organization_id, "customer.updated") == []


async def test_an_unknown_or_another_organization_s_customer_is_not_found(tenant: Tenant, make_tenant):
    other = await make_tenant()
    try:
        theirs = await other.http.post("/v1/customers", json={"id": "cus_theirs", "name": "Theirs"})
        assert theirs.status_code == 201
        for name in ("cus_nobody", "cus_theirs"):
            missing = await tenant.http.patch(f"/v1/customers/{name}", json={"name": "Mine now"})
            assert (missing.status_code, missing.json()["error"]["field"]) == (404, "id"), missing.text
        assert (await other.http.get("/v1/customers/cus_theirs")).json() == theirs.json()
    finally:
        await other.http.aclose()
