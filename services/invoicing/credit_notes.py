"""Credit notes: an issued invoice reduced, in whole or in part.

A credit note takes an amount (taxes included) off what a finalized or paid
invoice still owes; the invoice's own amounts never change, its
`credit_notes_amount_cents` and `amount_due_cents` do. A refund gives back
money the customer paid, so only a paid invoice takes one. The credit
note's tax share is the invoice's, rounded half up. Numbers are gapless per
organization ("CN-000001"). Credit notes of one invoice are issued one at a
time (the invoice row is locked), so together they never exceed its total.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bxb.invoicing.v1 import credit_notes_pb2 as pb
from bxb.invoicing.v1 import credit_notes_pb2_grpc, events_pb2
from services.common import outbox, pagination, tenancy
from services.common.errors import FailedPrecondition, InvalidArgument, NotFound
from services.common.grpc_server import Context
from services.common.ids import new_id
from services.common.timestamps import to_proto, utcnow
from services.invoicing import issuing
from services.invoicing.invoice_view import stored
from services.invoicing.lifecycle import invalid_transition
from services.invoicing.models import CreditNote, CreditNoteSequence, Invoice, Outbox

CREDIT_NOTE_CREATED = "bxb.invoicing.v1.credit_note_created"
CREDITABLE = ("INVOICE_STATUS_FINALIZED", "INVOICE_STATUS_PAID")


def tax_share(amount: int, invoice: Invoice) -> int:
    """The invoice's taxes' share of `amount`, rounded half up (a credited
    invoice owes something, so its total is positive)."""
    exact = Decimal(amount) * invoice.taxes_amount_cents / invoice.total_amount_cents
    return int(exact.quantize(Decimal(1), rounding=ROUND_HALF_UP))


class CreditNotes(credit_notes_pb2_grpc.CreditNoteServiceServicer):
    """CreditNoteService: issues, reads and lists credit notes."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], relay: outbox.OutboxRelay):
        self.sessions = sessions
        self.relay = relay

    async def create(self, org: str, request: pb.CreateCreditNoteRequest) -> pb.CreditNote:
        kind = request.kind or pb.CREDIT_NOTE_KIND_CREDIT
        if request.amount_cents < 0:
            raise InvalidArgument("amount_cents must not be negative", field="amount_cents")
        async with self.sessions() as session, session.begin():
            invoice = await stored(session, org, request.invoice_id, field="invoice_id", lock=True)
            if invoice.status not in CREDITABLE:
                outcome = "only a finalized or paid invoice takes a credit note"
                raise invalid_transition(invoice.id, invoice.status, outcome, field="invoice_id")
            if kind == pb.CREDIT_NOTE_KIND_REFUND and invoice.status != "INVOICE_STATUS_PAID":
                raise FailedPrecondition(
                    f"invoice {invoice.id!r} is not paid: there is nothing to refund", field="kind", reason="NOT_PAID"
                )
            remaining = invoice.total_amount_cents - invoice.credit_notes_amount_cents
            if remaining <= 0:
                raise FailedPrecondition(
                    f"invoice {invoice.id!r} is fully credited", field="invoice_id", reason="FULLY_CREDITED"
                )
            amount = request.amount_cents or remaining
            if amount > remaining:
                raise InvalidArgument(
                    f"amount_cents must be at most {remaining}, what invoice {invoice.id!r} still owes",
                    field="amount_cents",
                )
            now = utcnow()
            note = pb.CreditNote(
                id=new_id("cn"),
                number=await issuing.next_number(session, CreditNoteSequence, org, "CN"),
                invoice_id=invoice.id,
                customer_id=invoice.customer_id,
                currency=invoice.currency,
                reason=request.reason or pb.CREDIT_NOTE_REASON_OTHER,
                kind=kind,
                amount_cents=amount,
                taxes_amount_cents=tax_share(amount, invoice),
                description=request.description,
                create_time=to_proto(now),
            )
            invoice.credit_notes_amount_cents += amount
            session.add(
                CreditNote(
                    id=note.id,
                    organization_id=org,
                    number=note.number,
                    invoice_id=invoice.id,
                    customer_id=invoice.customer_id,
                    message=note.SerializeToString(),
                    create_time=now,
                )
            )
            event = events_pb2.CreditNoteCreated(
                event_id=new_id("evt"), organization_id=org, occur_time=to_proto(now), credit_note=note
            )
            await outbox.enqueue(session, Outbox, CREDIT_NOTE_CREATED, event)
        self.relay.wake()
        return note

    async def get(self, org: str, credit_note_id: str) -> pb.CreditNote:
        async with self.sessions() as session:
            row = await session.get(CreditNote, credit_note_id)
        if row is None or row.organization_id != org:
            raise NotFound(f"credit note {credit_note_id!r} not found", field="id")
        return pb.CreditNote.FromString(row.message)

    async def list(self, org: str, request: pb.ListCreditNotesRequest) -> pb.ListCreditNotesResponse:
        page = pagination.page(request, "ListList")
        query = select(CreditNote.message).where(CreditNote.organization_id == org)
        if request.invoice_id:
            query = query.where(CreditNote.invoice_id == request.invoice_id)
        if request.customer_id:
            query = query.where(CreditNote.customer_id == request.customer_id)
        query = query.order_by(CreditNote.create_time, CreditNote.number).offset(page.offset).limit(page.size + 1)
        async with self.sessions() as session:
            rows = (await session.execute(query)).scalars().all()
        credit_notes, token = pagination.answer(page, [pb.CreditNote.FromString(m) for m in rows])
        return pb.ListCreditNotesResponse(credit_notes=credit_notes, next_page_token=token)

    async def CreateCreditNote(self, request: pb.CreateCreditNoteRequest, context: Context) -> pb.CreditNote:
        return await self.create(tenancy.organization_id(), request)

    async def GetCreditNote(self, request: pb.GetCreditNoteRequest, context: Context) -> pb.CreditNote:
        return await self.get(tenancy.organization_id(), request.id)

    async def ListCreditNotes(self, request: pb.ListCreditNotesRequest, context: Context) -> pb.ListCreditNotesResponse:
        return await self.list(tenancy.organization_id(), request)
