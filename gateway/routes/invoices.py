"""/v1/invoices, /v1/customers/{id}/invoices and current usage.

A customer's invoice list (by path, or /v1/invoices?customer_id=) starts with
the drafts of its open periods: `status: "draft"`, no id and no number.
`POST /v1/invoices` (ABAXUS) issues an invoice up to a `cutoff_date`; ABAXUS
calls the finalized state "issued", so an invoice issued that way says
`issued` where one closed by the billing run says `finalized`: the same state,
with the same transitions (`/void`, `/archive`). A customer with an invoice
grace period has its ended periods' invoices stored as `draft` (with an id,
no number) until the grace period ends or `/finalize` is called.
`POST /v1/invoices/preview` shows a subscription's open period as it stands
and its usage charges projected to the period's end.
"""

from __future__ import annotations

import grpc
from starlette.responses import Response
from starlette.routing import Route

from bxb.invoicing.v1 import calculations_pb2
from bxb.invoicing.v1 import invoices_pb2 as pb
from bxb.payments.v1 import payments_pb2
from gateway import render
from gateway.call import Call, endpoint, json
from gateway.errors import respelled
from gateway.schema import Spec, array, obj, string
from services.common.timestamps import to_proto

CREATE = obj(
    {
        "customer_id": string(required=True, max_length=200),
        "subscription_id": string(max_length=64),
        "cutoff_date": Spec("timestamp", required=True),
    }
)


def status_name(invoice: pb.Invoice) -> str:
    if invoice.status == pb.INVOICE_STATUS_FINALIZED and invoice.timing == pb.BILLING_TIMING_ON_REQUEST:
        return "issued"
    return render.enum(pb.InvoiceStatus, invoice.status, "INVOICE_STATUS_")


def fee_json(fee: pb.Fee) -> dict:
    data = {
        "type": render.enum(pb.FeeType, fee.type, "FEE_TYPE_"),
        "amount_cents": fee.amount_cents,
        "units": fee.units,
        "unit_amount": fee.unit_amount,
        "precise_amount": fee.precise_amount,
        "description": fee.description,
        "period_start": render.time(fee, "period_start"),
        "period_end": render.time(fee, "period_end"),
    }
    if fee.type in (pb.FEE_TYPE_CHARGE, pb.FEE_TYPE_TRUE_UP):  # a true-up tops up one charge
        data["billable_metric_code"] = fee.billable_metric_code
        data["charge_id"] = fee.charge_id
    if fee.type == pb.FEE_TYPE_CHARGE:
        data["events_count"] = fee.events_count
        data["group"] = dict(fee.group)
        data["filter"] = fee.filter or None
    if fee.tiers:
        data["tiers"] = [
            {
                "from": render.bound(t.from_value),
                "to": render.bound(t.to_value),
                "units": t.units,
                "per_unit": t.per_unit_amount,
                "flat_amount": t.flat_amount,
                "amount": t.amount,
            }
            for t in fee.tiers
        ]
    return data


def invoice_json(invoice: pb.Invoice) -> dict:
    return {
        "id": invoice.id or None,  # a draft has neither until it is issued
        "number": invoice.number or None,
        "customer_id": invoice.customer_id,
        "subscription_id": invoice.subscription_id or None,  # none for a one-off invoice
        "plan_code": invoice.plan_code or None,
        "status": status_name(invoice),
        "timing": render.enum(pb.BillingTiming, invoice.timing, "BILLING_TIMING_"),
        "currency": invoice.currency,
        "period_start": render.time(invoice, "period_start"),
        "period_end": render.time(invoice, "period_end"),
        "fees": [fee_json(f) for f in invoice.fees],
        "subtotal_cents": invoice.subtotal_cents,
        "coupons": [
            {
                "code": c.code,
                "name": c.name,
                "applied_coupon_id": c.applied_coupon_id,
                "discount_cents": c.discount_cents,
            }
            for c in invoice.coupons
        ],
        "coupons_amount_cents": invoice.coupons_amount_cents,
        "taxes": [
            {
                "code": t.code,
                "name": t.name,
                "rate": t.rate,
                "taxable_amount_cents": t.taxable_amount_cents,
                "amount_cents": t.amount_cents,
            }
            for t in invoice.taxes
        ],
        "taxes_amount_cents": invoice.taxes_amount_cents,
        "credit_notes_amount_cents": invoice.credit_notes_amount_cents,
        "amount_due_cents": invoice.amount_due_cents,
        "total_amount_cents": invoice.total_amount_cents,
        "issued_at": render.time(invoice, "issue_time"),
        "created_at": render.time(invoice, "create_time"),
        "calculation_id": invoice.calculation_id or None,
    }


async def list_for(call: Call, customer_id: str):
    reply = await call.clients.invoices.ListInvoices(
        pb.ListInvoicesRequest(
            customer_id=customer_id,
            page_size=call.query_int("page_size"),
            page_token=call.query("page_token"),
        ),
        **call.options,
    )
    return json({"invoices": [invoice_json(i) for i in reply.invoices], "next_page_token": reply.next_page_token})


async def list_customer(call: Call):
    return await list_for(call, call.path("customer_id"))


async def list_all(call: Call):
    return await list_for(call, call.query("customer_id"))


async def get(call: Call):
    invoice = await call.clients.invoices.GetInvoice(pb.GetInvoiceRequest(id=call.path("id")), **call.options)
    return json(invoice_json(invoice))


async def current_usage(call: Call):
    reply = await call.clients.calculations.GetCurrentUsage(
        calculations_pb2.GetCurrentUsageRequest(
            customer_id=call.path("customer_id"), subscription_id=call.query("subscription_id")
        ),
        **call.options,
    )
    return json(
        {
            "customer_id": reply.customer_id,
            "subscriptions": [
                {
                    "subscription_id": usage.subscription_id,
                    "plan_code": usage.plan_code,
                    "currency": usage.currency,
                    "period_start": render.time(usage, "period_start"),
                    "period_end": render.time(usage, "period_end"),
                    "amount_cents": usage.amount_cents,
                    "fees": [fee_json(f) for f in usage.fees],
                }
                for usage in reply.subscriptions
            ],
        }
    )


async def create(call: Call):
    body = call.body
    request = pb.CreateInvoiceRequest(
        customer_id=body["customer_id"],
        subscription_id=body["subscription_id"] or "",
        cutoff_time=to_proto(body["cutoff_date"]),
    )
    try:
        invoice = await call.clients.invoices.CreateInvoice(request, **call.options)
    except grpc.aio.AioRpcError as error:
        return respelled(error, {"cutoff_time": "cutoff_date"})
    data = invoice_json(invoice)
    if invoice.status == pb.INVOICE_STATUS_FINALIZED:  # this route speaks ABAXUS
        data["status"] = "issued"
    return json(data, 201)


async def void(call: Call):
    invoice = await call.clients.invoices.VoidInvoice(pb.VoidInvoiceRequest(id=call.path("id")), **call.options)
    return json(invoice_json(invoice))


async def finalize(call: Call):
    invoice = await call.clients.invoices.FinalizeInvoice(pb.FinalizeInvoiceRequest(id=call.path("id")), **call.options)
    return json(invoice_json(invoice))


PREVIEW = obj({"subscription_id": string(required=True, max_length=64)})


async def preview(call: Call):
    reply = await call.clients.calculations.PreviewInvoice(
        calculations_pb2.PreviewInvoiceRequest(subscription_id=call.body["subscription_id"]), **call.options
    )
    return json(
        {
            "invoice": invoice_json(reply.invoice) if reply.HasField("invoice") else None,
            "projected_fees": [fee_json(f) for f in reply.projected_fees],
            "projected_usage_amount_cents": reply.projected_usage_amount_cents,
            "elapsed_ratio": reply.elapsed_ratio,
        }
    )


async def charge(call: Call):
    """ABAXUS's `charge`: the invoice's amount due, to the customer's saved
    payment method; `paid` with the provider's `payment_intent`, or a 402
    saying why the provider declined (the payment is kept as failed; charging
    again retries) or that the customer must authenticate the payment."""
    payment = await call.clients.payments.ChargeInvoice(
        payments_pb2.ChargeInvoiceRequest(invoice_id=call.path("id")), **call.options
    )
    return json(
        {
            "id": payment.invoice_id,
            "status": "paid",
            "payment_intent": payment.provider_payment_id or None,  # none when nothing was due
            "payment_id": payment.id,
            "amount_cents": payment.amount_cents,
            "currency": payment.currency,
        }
    )


async def archive(call: Call):
    invoice = await call.clients.invoices.ArchiveInvoice(pb.ArchiveInvoiceRequest(id=call.path("id")), **call.options)
    return json(invoice_json(invoice))


EMAIL = obj({"to": array(string(max_length=320), max_items=10)})


async def pdf(call: Call):
    rendered = await call.clients.invoices.RenderInvoicePdf(
        pb.RenderInvoicePdfRequest(id=call.path("id")), **call.options
    )
    disposition = f'inline; filename="{rendered.filename}"'
    return Response(rendered.content, media_type="application/pdf", headers={"Content-Disposition": disposition})


async def send_email(call: Call):
    request = pb.SendInvoiceEmailRequest(id=call.path("id"), to=call.body["to"] or [])
    sent = await call.clients.invoices.SendInvoiceEmail(request, **call.options)
    return json({"invoice_id": request.id, "to": list(sent.to), "message_id": sent.message_id, "status": "sent"})


routes = [
    Route("/v1/invoices", endpoint(create, CREATE), methods=["POST"]),
    Route("/v1/invoices/{id}/pdf", endpoint(pdf), methods=["GET"]),
    Route("/v1/invoices/{id}/send_email", endpoint(send_email, EMAIL, optional=True), methods=["POST"]),
    Route("/v1/invoices/{id}/send-email", endpoint(send_email, EMAIL, optional=True), methods=["POST"]),
    Route("/v1/invoices/preview", endpoint(preview, PREVIEW), methods=["POST"]),
    Route("/v1/invoices/{id}/finalize", endpoint(finalize), methods=["POST"]),
    Route("/v1/invoices/{id}/charge", endpoint(charge), methods=["POST"]),
    Route("/v1/invoices/{id}/void", endpoint(void), methods=["POST"]),
    Route("/v1/invoices/{id}/archive", endpoint(archive), methods=["POST"]),
    Route("/v1/invoices", endpoint(list_all), methods=["GET"]),
    Route("/v1/invoices/{id}", endpoint(get), methods=["GET"]),
    Route("/v1/customers/{customer_id}/invoices", endpoint(list_customer), methods=["GET"]),
    Route("/v1/customers/{customer_id}/current_usage", endpoint(current_usage), methods=["GET"]),
]
