"""Invoices as PDF documents and by email: a real PDF (opened and read back),
a real SMTP server (aiosmtpd) receiving it attached, and every refusal."""

from __future__ import annotations

import io

import grpc
import pytest
from pypdf import PdfReader

from bxb.invoicing.v1 import invoices_pb2 as pb
from bxb.invoicing.v1 import invoices_pb2_grpc
from services.common import peers, tenancy
from services.common.errors import FailedPrecondition, Unavailable, error_info
from services.invoicing.delivery import Delivery
from services.invoicing.mailer import Attachment, Mailer
from tests.conftest import Tenant
from tests.service.invoicing_helpers import InvoicingDb, create_plan, send, subscribe
from tests.smtp import Mailbox, free_port

STANDARD = [{"billable_metric_code": "api_requests", "charge_model": "standard", "properties": {"amount": "0.001"}}]


def text_of(pdf: bytes) -> str:
    """The document's words, one space apart (table cells come out one per line)."""
    return " ".join(" ".join(page.extract_text().split()) for page in PdfReader(io.BytesIO(pdf)).pages)


async def issued(t: Tenant, customer: dict) -> dict:
    """An invoice with a base fee, a usage fee, a coupon and a tax."""
    h = t.http
    assert (await h.post("/v1/customers", json=customer)).status_code == 201
    assert (
        await h.post("/v1/taxes", json={"code": "vat", "name": "VAT", "rate": "20", "applied_to_organization": True})
    ).status_code == 201
    coupon = {"code": "OFF10", "discount_type": "percentage", "discount_value": 10, "duration": "once"}
    assert (await h.post("/v1/coupons", json=coupon)).status_code == 201
    assert (
        await h.post("/v1/applied_coupons", json={"customer_id": customer["id"], "coupon_code": "OFF10"})
    ).status_code == 201
    await create_plan(t, "pro", STANDARD, amount_cents=4900, name="Pro")
    await subscribe(t, customer["id"], "pro", "2026-03-01T00:00:00Z")
    await send(t, customer["id"], 250000, "2026-03-10T00:00:00Z")
    response = await h.post("/v1/invoices", json={"customer_id": customer["id"], "cutoff_date": "2026-03-31T23:59:59Z"})
    assert response.status_code == 201, response.text
    return response.json()


async def test_the_pdf_opens_and_shows_the_invoice_lines(tenant: Tenant):
    invoice = await issued(tenant, {"id": "cus_pdf", "email": "ap@acme.test"})
    # 4900 + 25000 = 29900; 10% off = 2990; VAT 20% of 26910 = 5382; total 32292.
    assert invoice["total_amount_cents"] == 32292
    response = await tenant.http.get(f"/v1/invoices/{invoice['id']}/pdf")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/pdf"
    assert response.headers["content-disposition"] == f'inline; filename="{invoice["number"]}.pdf"'
    assert response.content.startswith(b"%PDF-")
    text = text_of(response.content)
    for shown in (
        f"Invoice {invoice['number']}",
        "Finalized",  # the state's one name: "issued" is only an ABAXUS route's word
        "cus_pdf",
        "Pro base fee",
        "api_requests: 250000 units",
        "49.00 USD",
        "250.00 USD",
        "Subtotal 299.00 USD",
        "Coupon OFF10 -29.90 USD",
        "VAT (20%) 53.82 USD",
        "Total due 322.92 USD",
        "2026-03-01 00:00 UTC to 2026-04-01 00:00 UTC",
    ):
        assert shown in text, (shown, text)


async def test_an_invoice_is_emailed_with_its_pdf_attached(tenant: Tenant, mailbox: Mailbox):
    invoice = await issued(tenant, {"id": "cus_mail", "email": "ap@acme.test"})
    before = len(mailbox.messages)
    sent = await tenant.http.post(f"/v1/invoices/{invoice['id']}/send_email")  # no body: the customer's address
    assert sent.status_code == 200, sent.text
    assert (sent.json()["to"], sent.json()["status"]) == (["ap@acme.test"], "sent")
    [message] = mailbox.messages[before:]
    assert (message["To"], message["From"]) == ("ap@acme.test", "billing@bxb.test")
    assert message["Subject"] == f"Invoice {invoice['number']}"
    assert message["Message-ID"] == sent.json()["message_id"]
    assert "Total due: 322.92 USD" in message.get_body(("plain",)).get_content()
    [attachment] = list(message.iter_attachments())
    assert (attachment.get_content_type(), attachment.get_filename()) == ("application/pdf", f"{invoice['number']}.pdf")
    assert "Total due 322.92 USD" in text_of(attachment.get_content())

    again = await tenant.http.post(f"/v1/invoices/{invoice['id']}/send-email", json={"to": ["cfo@acme.test", "a@b.co"]})
    assert again.json()["to"] == ["cfo@acme.test", "a@b.co"]
    assert mailbox.recipients[-1] == ["cfo@acme.test", "a@b.co"]


async def test_refusals_name_their_field(tenant: Tenant, make_tenant):
    invoice = await issued(tenant, {"id": "cus_nomail"})
    refused = await tenant.http.post(f"/v1/invoices/{invoice['id']}/send_email", json={})
    assert (refused.status_code, refused.json()["error"]["reason"]) == (409, "NO_RECIPIENT")
    for to, field in (
        (["not an address"], "to[0]"),
        (["a@b.co", "x@y\nBcc: z@w.co"], "to[1]"),
        (["a@b.co"] * 11, "to"),
    ):
        response = await tenant.http.post(f"/v1/invoices/{invoice['id']}/send_email", json={"to": to})
        assert (response.status_code, response.json()["error"]["field"]) == (400, field)
    assert (await tenant.http.get("/v1/invoices/inv_nope/pdf")).status_code == 404
    other = await make_tenant()
    try:
        assert (await other.http.get(f"/v1/invoices/{invoice['id']}/pdf")).status_code == 404
        assert (
            await other.http.post(f"/v1/invoices/{invoice['id']}/send_email", json={"to": ["a@b.co"]})
        ).status_code == 404
    finally:
        await other.http.aclose()


PDF = Attachment("x.pdf", b"%PDF-1.4")


async def test_the_mailer_logs_in_when_the_url_has_a_user():
    with Mailbox(logins={"bxb": "s3cret"}) as box:
        good = Mailer(f"smtp://bxb:s3cret@127.0.0.1:{box.port}", "billing@bxb.test")
        await good.send(["a@b.co"], "hello", "body", PDF)
        assert len(box.messages) == 1
        with pytest.raises(Unavailable):
            await Mailer(f"smtp://bxb:wrong@127.0.0.1:{box.port}", "billing@bxb.test").send(["a@b.co"], "s", "b", PDF)
        with pytest.raises(Unavailable):  # the server wants a login
            await Mailer(f"smtp://127.0.0.1:{box.port}", "billing@bxb.test").send(["a@b.co"], "s", "b", PDF)


async def test_the_mailer_needs_a_reachable_configured_server():
    with pytest.raises(Unavailable):
        await Mailer(f"smtp://127.0.0.1:{free_port()}", "billing@bxb.test", timeout=2).send(["a@b.co"], "s", "b", PDF)
    with pytest.raises(FailedPrecondition) as raised:
        await Mailer("", "billing@bxb.test").send(["a@b.co"], "s", "b", PDF)
    assert raised.value.reason == "SMTP_NOT_CONFIGURED"


async def test_every_state_renders(tenant: Tenant, invoicing_db: InvoicingDb):
    invoice = await issued(tenant, {"id": "cus_states"})
    rendering = Delivery(invoicing_db.sessions, Mailer("", "x@y.z"), peers.Catalog("127.0.0.1:1"))  # asks no catalog
    assert (await tenant.http.post(f"/v1/invoices/{invoice['id']}/void")).status_code == 200
    pdf = await rendering.pdf(tenant.organization_id, invoice["id"])
    assert "Voided" in text_of(pdf.content)


def test_money_prints_the_currency_decimals():
    from services.invoicing.documents import money

    assert [
        money(12400, "USD"),
        money(500, "JPY"),
        money(1001, "KWD"),
        money(-2990, "USD"),
        money(123456789, "EUR"),
    ] == [
        "124.00 USD",
        "500 JPY",
        "1.001 KWD",
        "-29.90 USD",
        "1,234,567.89 EUR",
    ]


async def test_the_service_limits_recipients(stack, tenant: Tenant):
    async with stack.channel("invoicing") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await invoices_pb2_grpc.InvoiceServiceStub(channel).SendInvoiceEmail(
                pb.SendInvoiceEmailRequest(id="inv_x", to=["a@b.co"] * 11),
                metadata=tenancy.metadata(tenant.organization_id),
            )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(refused.value).metadata["field"] == "to"
