"""An invoice's payment_status and payment_url: what the payments service
announces (payment_updated) kept on the invoice, newer versions only, shown
over HTTP in the API's lower-case spelling, and listings filtered by it."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy import select, update

from bxb.invoicing.v1 import events_pb2
from bxb.payments.v1 import events_pb2 as payments_events_pb2
from bxb.payments.v1 import payments_pb2 as pay
from services.common import bus, peers
from services.common.outbox import OutboxRelay
from services.invoicing.lifecycle import INVOICE_UPDATED, PAYMENT_UPDATED, Lifecycle
from services.invoicing.models import Invoice, Outbox
from tests.conftest import Infra, Tenant, eventually, unique
from tests.service.invoicing_helpers import InvoicingDb, create_plan, subscribe
from tests.service.test_gateway_grace_and_preview import advance, on_clock
from tests.service.test_gateway_test_clocks import invoices
from tests.service.test_invoicing_on_request import issue

PAY_URL = "https://pay.bxb.test/inv/1"
AUTH_URL = "https://hooks.stripe.test/3d_secure_2/authenticate/pi_1"


@pytest.fixture
async def lifecycle(infra: Infra, invoicing_db: InvoicingDb) -> Lifecycle:
    """Invoicing's handler of payment_updated on its database; its outbox rows
    are left for the service's relay (this one is never started)."""
    relay = OutboxRelay(invoicing_db.sessions, Outbox, bus.Bus(infra.nats.url, unique("unopened")))
    return Lifecycle(invoicing_db.sessions, relay, peers.Payments("127.0.0.1:1"))  # payments never asked


async def owed(t: Tenant, customer: str = "cus_pay") -> dict:
    """An invoice issued on request that asks 49.00 USD (a month's base fee)."""
    await create_plan(t, unique("base"), [], amount_cents=4900)
    plans = (await t.http.get("/v1/plans")).json()["plans"]
    await subscribe(t, customer, plans[-1]["code"], "2026-03-01T00:00:00Z")
    invoice = await issue(t, customer, "2026-03-31T23:59:59Z")
    assert invoice["amount_due_cents"] == 4900
    return invoice


async def announce(lifecycle: Lifecycle, t: Tenant, invoice_id: str, status: int, version: int, url: str = "") -> None:
    payment = pay.Payment(invoice_id=invoice_id, status=status, version=version, payment_url=url)
    event = payments_events_pb2.PaymentUpdated(
        event_id=unique("evt"), organization_id=t.organization_id, payment=payment
    )
    await lifecycle.paid(PAYMENT_UPDATED, event.SerializeToString())


async def shown(t: Tenant, invoice_id: str) -> tuple[str, str | None, str | None]:
    """The invoice's status, payment_status and payment_url as GET shows them."""
    invoice = (await t.http.get(f"/v1/invoices/{invoice_id}")).json()
    return invoice["status"], invoice["payment_status"], invoice["payment_url"]


async def announced(invoicing_db: InvoicingDb, invoice_id: str) -> list[tuple[str, str]]:
    """The invoice_updated events of the invoice, oldest first: (status, payment_status)."""
    async with invoicing_db.sessions() as session:
        query = select(Outbox.c.payload).where(Outbox.c.subject == INVOICE_UPDATED).order_by(Outbox.c.id)
        payloads = (await session.execute(query)).scalars().all()
    events = [events_pb2.InvoiceUpdated.FromString(p).invoice for p in payloads]
    return [
        (i.DESCRIPTOR.fields_by_name["status"].enum_type.values_by_number[i.status].name, i.payment_status)
        for i in events
        if i.id == invoice_id
    ]


async def test_an_issued_invoice_is_pending_and_a_draft_has_no_payment_status(tenant: Tenant):
    invoice = await owed(tenant)  # the ABAXUS answer to issuing on request
    assert (invoice["status"], invoice["payment_status"], invoice["payment_url"]) == ("issued", "pending", None)
    assert await shown(tenant, invoice["id"]) == ("issued", "pending", None)
    listed = (await tenant.http.get("/v1/customers/cus_pay/invoices")).json()["invoices"]
    drafts = [i for i in listed if i["status"] == "draft"]  # the periods after March: computed on read
    assert drafts
    assert {(d["payment_status"], d["payment_url"]) for d in drafts} == {(None, None)}


async def test_each_payment_status_is_shown_in_its_api_spelling(tenant: Tenant, lifecycle: Lifecycle):
    invoice = await owed(tenant)
    steps = [
        (pay.PAYMENT_STATUS_PENDING, "", ("issued", "pending", None)),
        (pay.PAYMENT_STATUS_REQUIRES_ACTION, AUTH_URL, ("issued", "requires_action", AUTH_URL)),
        (pay.PAYMENT_STATUS_FAILED, PAY_URL, ("issued", "failed", PAY_URL)),
        (pay.PAYMENT_STATUS_UNCOLLECTIBLE, PAY_URL, ("issued", "uncollectible", PAY_URL)),
        (pay.PAYMENT_STATUS_CANCELED, "", ("issued", "canceled", None)),
        (pay.PAYMENT_STATUS_SUCCEEDED, "", ("paid", "succeeded", None)),
        (pay.PAYMENT_STATUS_PARTIALLY_REFUNDED, "", ("paid", "partially_refunded", None)),
        (pay.PAYMENT_STATUS_REFUNDED, "", ("paid", "refunded", None)),
        (pay.PAYMENT_STATUS_DISPUTED, "", ("paid", "disputed", None)),
    ]
    for version, (status, url, expected) in enumerate(steps, start=1):
        await announce(lifecycle, tenant, invoice["id"], status, version, url)
        assert await shown(tenant, invoice["id"]) == expected, pay.PaymentStatus.Name(status)


async def test_an_older_or_repeated_announcement_changes_nothing(
    tenant: Tenant, lifecycle: Lifecycle, invoicing_db: InvoicingDb
):
    invoice = await owed(tenant)
    await announce(lifecycle, tenant, invoice["id"], pay.PAYMENT_STATUS_FAILED, 3, PAY_URL)
    assert await shown(tenant, invoice["id"]) == ("issued", "failed", PAY_URL)
    assert await announced(invoicing_db, invoice["id"]) == [("INVOICE_STATUS_FINALIZED", 4)]
    await announce(lifecycle, tenant, invoice["id"], pay.PAYMENT_STATUS_REQUIRES_ACTION, 2, AUTH_URL)  # older
    await announce(lifecycle, tenant, invoice["id"], pay.PAYMENT_STATUS_FAILED, 3, PAY_URL)  # the same, again
    await announce(lifecycle, tenant, invoice["id"], pay.PAYMENT_STATUS_PENDING, 0)  # unversioned, after versions
    assert await shown(tenant, invoice["id"]) == ("issued", "failed", PAY_URL)
    assert len(await announced(invoicing_db, invoice["id"])) == 1  # nothing changed: nothing announced
    await announce(lifecycle, tenant, invoice["id"], pay.PAYMENT_STATUS_SUCCEEDED, 4)  # newer
    assert await shown(tenant, invoice["id"]) == ("paid", "succeeded", None)
    assert (await announced(invoicing_db, invoice["id"]))[-1] == ("INVOICE_STATUS_PAID", 3)
    async with invoicing_db.sessions() as session:
        row = await session.get(Invoice, invoice["id"])
    assert (row.payment_status, row.payment_version) == ("INVOICE_PAYMENT_STATUS_SUCCEEDED", 4)


async def test_money_collected_pays_the_invoice_whatever_order_the_news_comes_in(
    tenant: Tenant, lifecycle: Lifecycle, invoicing_db: InvoicingDb
):
    invoice = await owed(tenant)
    # The refund's announcement overtakes the success's: the invoice is paid, and shows the refund.
    await announce(lifecycle, tenant, invoice["id"], pay.PAYMENT_STATUS_PARTIALLY_REFUNDED, 5)
    assert await shown(tenant, invoice["id"]) == ("paid", "partially_refunded", None)
    await announce(lifecycle, tenant, invoice["id"], pay.PAYMENT_STATUS_SUCCEEDED, 4)
    assert await shown(tenant, invoice["id"]) == ("paid", "partially_refunded", None)
    assert await announced(invoicing_db, invoice["id"]) == [("INVOICE_STATUS_PAID", 6)]
    # Archived, it keeps hearing how the payment stands.
    assert (await tenant.http.post(f"/v1/invoices/{invoice['id']}/archive")).status_code == 200
    await announce(lifecycle, tenant, invoice["id"], pay.PAYMENT_STATUS_DISPUTED, 6)
    assert await shown(tenant, invoice["id"]) == ("archived", "disputed", None)


async def test_unversioned_announcements_apply_until_a_versioned_one(tenant: Tenant, lifecycle: Lifecycle):
    """Version 0: a payments service from before versions; the last one heard wins."""
    invoice = await owed(tenant)
    await announce(lifecycle, tenant, invoice["id"], pay.PAYMENT_STATUS_FAILED, 0, PAY_URL)
    assert await shown(tenant, invoice["id"]) == ("issued", "failed", PAY_URL)
    await announce(lifecycle, tenant, invoice["id"], pay.PAYMENT_STATUS_SUCCEEDED, 0)
    assert await shown(tenant, invoice["id"]) == ("paid", "succeeded", None)


async def test_a_voided_invoice_is_canceled_whatever_it_heard(tenant: Tenant, lifecycle: Lifecycle, caplog):
    invoice = await owed(tenant)
    await announce(lifecycle, tenant, invoice["id"], pay.PAYMENT_STATUS_FAILED, 1, PAY_URL)
    voided = await tenant.http.post(f"/v1/invoices/{invoice['id']}/void")
    assert (voided.json()["status"], voided.json()["payment_status"], voided.json()["payment_url"]) == (
        "voided",
        "canceled",
        None,
    )
    with caplog.at_level(logging.WARNING, logger="bxb.lifecycle"):
        await announce(lifecycle, tenant, invoice["id"], pay.PAYMENT_STATUS_SUCCEEDED, 2)
    assert await shown(tenant, invoice["id"]) == ("voided", "canceled", None)
    assert f"invoice {invoice['id']} is voided, yet its payment says money was collected" in caplog.text


async def test_a_status_this_version_does_not_know_is_ignored(lifecycle: Lifecycle, tenant: Tenant):
    # Not even looked up: an unknown invoice raises nothing.
    await announce(lifecycle, tenant, "inv_unknown", pay.PAYMENT_STATUS_UNSPECIFIED, 1)
    await announce(lifecycle, tenant, "inv_unknown", 99, 1)


async def test_an_invoice_with_nothing_due_has_succeeded(tenant: Tenant, invoicing_db: InvoicingDb):
    invoice = await owed(tenant)
    credited = await tenant.http.post("/v1/credit_notes", json={"invoice_id": invoice["id"]})
    assert credited.status_code == 201, credited.text
    assert await shown(tenant, invoice["id"]) == ("issued", "succeeded", None)
    # Paid before invoicing kept payment news (nothing heard): succeeded.
    other = await owed(tenant, "cus_legacy")
    async with invoicing_db.sessions() as session, session.begin():
        await session.execute(update(Invoice).where(Invoice.id == other["id"]).values(status="INVOICE_STATUS_PAID"))
    assert await shown(tenant, other["id"]) == ("paid", "succeeded", None)


async def test_payment_news_reaches_the_invoice_through_nats(tenant: Tenant, infra: Infra):
    invoice = await owed(tenant)
    payment = pay.Payment(
        invoice_id=invoice["id"], status=pay.PAYMENT_STATUS_REQUIRES_ACTION, version=1, payment_url=AUTH_URL
    )
    event = payments_events_pb2.PaymentUpdated(
        event_id=unique("evt"), organization_id=tenant.organization_id, payment=payment
    )
    publisher = await bus.Bus.connect(infra.nats.url, "test-payment-news")
    try:
        await publisher.publish(PAYMENT_UPDATED, event.SerializeToString(), event.event_id, tenant.organization_id)
    finally:
        await publisher.close()

    async def requires_action():
        assert await shown(tenant, invoice["id"]) == ("issued", "requires_action", AUTH_URL)

    await eventually(requires_action)


async def test_invoices_are_listed_by_payment_status(tenant: Tenant, lifecycle: Lifecycle):
    failed, pending = await owed(tenant, "cus_a"), await owed(tenant, "cus_b")
    credited = await owed(tenant, "cus_c")
    voided = await owed(tenant, "cus_d")
    await announce(lifecycle, tenant, failed["id"], pay.PAYMENT_STATUS_FAILED, 1, PAY_URL)
    assert (await tenant.http.post("/v1/credit_notes", json={"invoice_id": credited["id"]})).status_code == 201
    assert (await tenant.http.post(f"/v1/invoices/{voided['id']}/void")).status_code == 200

    async def listed(path: str, status: str) -> list[str]:
        response = await tenant.http.get(path, params={"payment_status": status})
        assert response.status_code == 200, response.text
        return [i["id"] for i in response.json()["invoices"]]

    assert await listed("/v1/invoices", "failed") == [failed["id"]]
    assert await listed("/v1/invoices", "pending") == [pending["id"]]
    assert await listed("/v1/invoices", "succeeded") == [credited["id"]]
    assert await listed("/v1/invoices", "canceled") == [voided["id"]]
    assert await listed("/v1/invoices", "refunded") == []
    # A customer's listing by payment status leaves its drafts out (they have none).
    assert await listed("/v1/customers/cus_b/invoices", "pending") == [pending["id"]]
    everything = (await tenant.http.get("/v1/customers/cus_b/invoices")).json()["invoices"]
    assert {i["status"] for i in everything} == {"draft", "issued"}
    refused = await tenant.http.get("/v1/invoices", params={"payment_status": "paid"})
    assert (refused.status_code, refused.json()["error"]["field"]) == (400, "payment_status")


async def test_a_draft_in_its_grace_period_has_no_payment_status(tenant: Tenant):
    h = tenant.http
    clock = await on_clock(h, "cus_grace", invoice_grace_period=3)
    assert await advance(h, clock, "2025-02-01T00:00:00Z") == 1  # January's draft, stored
    [draft] = await invoices(h, "cus_grace")
    assert (draft["status"], draft["amount_due_cents"], draft["payment_status"], draft["payment_url"]) == (
        "draft",
        4900,
        None,
        None,
    )
    assert (await h.get(f"/v1/invoices/{draft['id']}")).json()["payment_status"] is None
    assert (await h.get("/v1/invoices", params={"payment_status": "pending"})).json()["invoices"] == []
    assert await advance(h, clock, "2025-02-04T00:00:00Z") == 1  # final: owed
    assert [
        i["id"] for i in (await h.get("/v1/invoices", params={"payment_status": "pending"})).json()["invoices"]
    ] == [draft["id"]]
