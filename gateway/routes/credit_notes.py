"""/v1/credit_notes: reductions of issued invoices (`invoice_id`; `amount_cents`
taxes included, everything still owed when left out; `reason`; `type`
credit or refund)."""

from __future__ import annotations

from starlette.routing import Route

from bxb.invoicing.v1 import credit_notes_pb2 as pb
from gateway import render
from gateway.call import Call, endpoint, json
from gateway.schema import Spec, obj, string

REASONS = (
    "duplicated_charge",
    "product_unsatisfactory",
    "order_change",
    "order_cancellation",
    "fraudulent_charge",
    "other",
)
CREATE = obj(
    {
        "invoice_id": string(required=True, max_length=64),
        "amount_cents": Spec("integer"),
        "reason": string(choices=REASONS),
        "type": string(choices=("credit", "refund")),
        "description": string(max_length=2000),
    }
)


def credit_note_json(note: pb.CreditNote) -> dict:
    return {
        "id": note.id,
        "number": note.number,
        "invoice_id": note.invoice_id,
        "customer_id": note.customer_id,
        "currency": note.currency,
        "reason": render.enum(pb.CreditNoteReason, note.reason, "CREDIT_NOTE_REASON_"),
        "type": render.enum(pb.CreditNoteKind, note.kind, "CREDIT_NOTE_KIND_"),
        "amount_cents": note.amount_cents,
        "taxes_amount_cents": note.taxes_amount_cents,
        "description": note.description,
        "created_at": render.time(note, "create_time"),
    }


async def create(call: Call):
    body = call.body
    request = pb.CreateCreditNoteRequest(
        invoice_id=body["invoice_id"],
        amount_cents=body["amount_cents"] or 0,
        reason=render.enum_value(pb.CreditNoteReason, body["reason"], "CREDIT_NOTE_REASON_") if body["reason"] else 0,
        kind=render.enum_value(pb.CreditNoteKind, body["type"], "CREDIT_NOTE_KIND_") if body["type"] else 0,
        description=body["description"] or "",
    )
    note = await call.clients.credit_notes.CreateCreditNote(request, **call.options)
    return json(credit_note_json(note), 201)


async def get(call: Call):
    note = await call.clients.credit_notes.GetCreditNote(pb.GetCreditNoteRequest(id=call.path("id")), **call.options)
    return json(credit_note_json(note))


async def list_(call: Call):
    reply = await call.clients.credit_notes.ListCreditNotes(
        pb.ListCreditNotesRequest(
            invoice_id=call.query("invoice_id"),
            customer_id=call.query("customer_id"),
            page_size=call.query_int("page_size"),
            page_token=call.query("page_token"),
        ),
        **call.options,
    )
    return json(
        {"credit_notes": [credit_note_json(n) for n in reply.credit_notes], "next_page_token": reply.next_page_token}
    )


routes = [
    Route("/v1/credit_notes", endpoint(create, CREATE), methods=["POST"]),
    Route("/v1/credit_notes", endpoint(list_), methods=["GET"]),
    Route("/v1/credit_notes/{id}", endpoint(get), methods=["GET"]),
]
