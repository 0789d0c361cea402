"""Payment emails (SendInvoiceEmail with a kind, as the payments service's
dunning sends them): their subject and text per kind, the link to pay or
authenticate at, which attempt of how many, the invoice's PDF attached, and
what is refused."""

from __future__ import annotations

import grpc
import pytest

from bxb.invoicing.v1 import invoices_pb2 as pb
from bxb.invoicing.v1 import invoices_pb2_grpc
from services.common.errors import error_info
from services.common.tenancy import metadata
from tests.conftest import Stack, Tenant
from tests.service.test_invoicing_documents import text_of
from tests.service.test_invoicing_payment_status import AUTH_URL, PAY_URL, owed
from tests.smtp import Mailbox


async def sent(tenant: Tenant, mailbox: Mailbox, invoice_id: str, body: dict):
    """Sends the email over HTTP; the message the SMTP server received."""
    before = len(mailbox.messages)
    response = await tenant.http.post(f"/v1/invoices/{invoice_id}/send_email", json=body)
    assert response.status_code == 200, response.text
    [message] = mailbox.messages[before:]
    assert message["Message-ID"] == response.json()["message_id"]
    return message


@pytest.mark.parametrize(
    ("body", "subject", "lines"),
    [
        (
            {"kind": "payment_failed", "payment_url": PAY_URL, "attempt": 2, "max_attempts": 4},
            "Payment failed for invoice {}",
            [
                "We could not collect the payment of invoice {}.",
                "Amount due: 49.00 USD",
                "This was attempt 2 of 4.",
                f"Pay here: {PAY_URL}",
            ],
        ),
        (
            {"kind": "payment_requires_action", "payment_url": AUTH_URL, "attempt": 1},
            "Action required to pay invoice {}",
            [
                "Your bank asks you to confirm the payment of invoice {}.",
                "This was attempt 1.",
                f"Confirm it here: {AUTH_URL}",
            ],
        ),
        (
            {"kind": "payment_uncollectible", "attempt": 4, "max_attempts": 4},
            "Payment could not be collected for invoice {}",
            ["We could not collect the payment of invoice {} and will not try again.", "This was attempt 4 of 4."],
        ),
        (
            {"kind": "payment_uncollectible", "payment_url": PAY_URL},
            "Payment could not be collected for invoice {}",
            [f"Pay here: {PAY_URL}"],
        ),
    ],
)
async def test_a_payment_email_says_what_happened_links_and_attaches_the_pdf(
    tenant: Tenant, mailbox: Mailbox, body: dict, subject: str, lines: list[str]
):
    invoice = await owed(tenant)
    message = await sent(tenant, mailbox, invoice["id"], {"to": ["ap@acme.test"], **body})
    number = invoice["number"]
    assert (message["To"], message["Subject"]) == ("ap@acme.test", subject.format(number))
    text = message.get_body(("plain",)).get_content()
    for line in lines:
        assert line.format(number) in text, (line, text)
    if "attempt" not in body:
        assert "attempt" not in text
    if "payment_url" not in body:
        assert "http" not in text
    assert "The invoice is attached as a PDF." in text
    [attachment] = list(message.iter_attachments())
    assert (attachment.get_content_type(), attachment.get_filename()) == ("application/pdf", f"{number}.pdf")
    assert "Total due 49.00 USD" in text_of(attachment.get_content())


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"kind": "payment_failed"}, "payment_url"),
        ({"kind": "payment_requires_action", "attempt": 1}, "payment_url"),
        ({"kind": "payment_failed", "payment_url": "javascript:alert(1)"}, "payment_url"),
        ({"kind": "payment_failed", "payment_url": "https://"}, "payment_url"),
        ({"kind": "payment_failed", "payment_url": "https://pay.test/a b"}, "payment_url"),
        ({"kind": "payment_failed", "payment_url": "https://pay.test/a\u0007"}, "payment_url"),
        ({"kind": "payment_failed", "payment_url": "https://pay.test/" + "x" * 2000}, "payment_url"),
        ({"kind": "payment_failed", "payment_url": PAY_URL, "attempt": 5, "max_attempts": 4}, "attempt"),
        ({"kind": "payment_failed", "payment_url": PAY_URL, "attempt": -1}, "attempt"),
        ({"kind": "payment_failed", "payment_url": PAY_URL, "max_attempts": -1}, "max_attempts"),
        ({"kind": "payment_overdue", "payment_url": PAY_URL}, "kind"),
    ],
)
async def test_a_payment_email_without_its_link_or_with_a_bad_one_is_refused(
    tenant: Tenant, mailbox: Mailbox, body: dict, field: str
):
    invoice = await owed(tenant)
    before = len(mailbox.messages)
    response = await tenant.http.post(f"/v1/invoices/{invoice['id']}/send_email", json={"to": ["a@b.co"], **body})
    assert (response.status_code, response.json()["error"]["field"]) == (400, field), response.text
    if field == "payment_url" and "payment_url" not in body:
        assert "payment_url is required for a" in response.json()["error"]["message"]
    assert len(mailbox.messages) == before


async def test_an_undefined_kind_is_refused_over_grpc(stack: Stack, tenant: Tenant):
    invoice = await owed(tenant)
    request = pb.SendInvoiceEmailRequest(id=invoice["id"], to=["a@b.co"], kind=7, payment_url=PAY_URL)
    async with stack.channel("invoicing") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await invoices_pb2_grpc.InvoiceServiceStub(channel).SendInvoiceEmail(
                request, metadata=metadata(tenant.organization_id)
            )
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(raised.value).metadata["field"] == "kind"


async def test_a_payment_email_is_for_an_invoice_still_owed(tenant: Tenant, mailbox: Mailbox):
    invoice = await owed(tenant)
    assert (await tenant.http.post(f"/v1/invoices/{invoice['id']}/void")).status_code == 200
    before = len(mailbox.messages)
    body = {"to": ["a@b.co"], "kind": "payment_failed", "payment_url": PAY_URL}
    refused = await tenant.http.post(f"/v1/invoices/{invoice['id']}/send_email", json=body)
    assert (refused.status_code, refused.json()["error"]["reason"]) == (409, "INVALID_TRANSITION")
    assert "is voided: there is no payment to ask for" in refused.json()["error"]["message"]
    assert len(mailbox.messages) == before
    # The invoice itself may still be sent.
    message = await sent(tenant, mailbox, invoice["id"], {"to": ["a@b.co"]})
    assert message["Subject"] == f"Invoice {invoice['number']}"
