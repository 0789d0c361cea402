"""Domain events as public events: what each fact on NATS announces
(services/payments/event_catalog.py), with `data` in the public API's JSON
(public_json.render), as GET shows the resource.

Each announcement's `source_key` makes a redelivered domain event announce
nothing twice: "<domain event id>:<type>", or a key per resource where a fact
must be told once whoever tells it (an invoice's creation, voiding and
payment; a payment's version). A subject this version does not know (a newer
producer's) announces nothing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bxb.catalog.v1 import events_pb2 as catalog_events
from bxb.invoicing.v1 import events_pb2 as invoicing_events
from bxb.invoicing.v1 import invoices_pb2
from bxb.metering.v1 import events_pb2 as metering_events
from bxb.payments.v1 import events_pb2 as payments_events
from bxb.payments.v1 import payments_pb2
from services.common.timestamps import from_proto
from services.payments.announcing import Draft
from services.payments.models import Announcement
from services.payments.public_json import render

Facts = Callable[[AsyncSession, bytes], Awaitable[list[Draft]]]
"""What one domain event (its payload) announces."""

# The fields of every domain event that are its envelope, not its fact.
ENVELOPE = ("event_id", "organization_id", "occur_time")

PAYMENT_TYPES = {
    payments_pb2.PAYMENT_STATUS_SUCCEEDED: "payment.succeeded",
    payments_pb2.PAYMENT_STATUS_FAILED: "payment.failed",
    payments_pb2.PAYMENT_STATUS_REFUNDED: "payment.refunded",
    payments_pb2.PAYMENT_STATUS_PARTIALLY_REFUNDED: "payment.refunded",
    payments_pb2.PAYMENT_STATUS_DISPUTED: "payment.disputed",
}
INVOICE_PAYMENT_TYPES = {
    invoices_pb2.INVOICE_PAYMENT_STATUS_FAILED: "invoice.payment_failed",
    invoices_pb2.INVOICE_PAYMENT_STATUS_REQUIRES_ACTION: "invoice.payment_requires_action",
}


def draft(event: Any, type: str, customer_id: str, data: dict[str, Any], key: str = "") -> Draft:
    """The announcement of `event` (a domain event): keyed by its id and type unless `key` is given."""
    return Draft(
        organization_id=event.organization_id,
        type=type,
        customer_id=customer_id,
        source_key=key or f"{event.event_id}:{type}",
        occur_time=from_proto(event.occur_time),
        data=data,
    )


def fact(event: Any) -> dict[str, Any]:
    """A domain event's own fields (no envelope), in the public JSON."""
    return {name: value for name, value in render(event).items() if name not in ENVELOPE}


async def customer_created(session: AsyncSession, payload: bytes) -> list[Draft]:
    event = catalog_events.CustomerCreated.FromString(payload)
    return [draft(event, "customer.created", event.customer.id, {"customer": render(event.customer)})]


async def customer_updated(session: AsyncSession, payload: bytes) -> list[Draft]:
    event = catalog_events.CustomerUpdated.FromString(payload)
    return [draft(event, "customer.updated", event.customer.id, {"customer": render(event.customer)})]


async def subscription_created(session: AsyncSession, payload: bytes) -> list[Draft]:
    event = catalog_events.SubscriptionCreated.FromString(payload)
    data = {"subscription": render(event.subscription), "plan": render(event.plan), "customer": render(event.customer)}
    return [draft(event, "subscription.started", event.subscription.customer_id, data)]


async def subscription_updated(session: AsyncSession, payload: bytes) -> list[Draft]:
    """A plan change sets the subscription's end and its replacement
    (next_subscription_id); a termination sets its end only, leaving the
    replacement an earlier plan change named: that one it cancelled in the
    same transaction, at the same time, announced just before as terminated
    (the catalog's events come in order). A replacement terminated later
    does not make a redelivered plan change a termination."""
    event = catalog_events.SubscriptionUpdated.FromString(payload)
    subscription = event.subscription
    successor = subscription.next_subscription_id
    at = from_proto(event.occur_time)
    changed = bool(successor) and not await _cancelled(session, event.organization_id, successor, at)
    kind = "subscription.plan_changed" if changed else "subscription.terminated"
    # A subscription ends once; a plan change is told per change (a pending one may be changed again).
    key = "" if changed else f"{kind}:{subscription.id}"
    return [draft(event, kind, subscription.customer_id, {"subscription": render(subscription)}, key)]


async def _cancelled(session: AsyncSession, org: str, subscription_id: str, at: datetime) -> bool:
    """Whether the subscription was announced terminated at `at`."""
    found = await session.execute(
        select(Announcement.id).where(
            Announcement.organization_id == org,
            Announcement.source_key == f"subscription.terminated:{subscription_id}",
            Announcement.occur_time == at,
        )
    )
    return found.first() is not None


def _created(event: Any, invoice: invoices_pb2.Invoice) -> Draft:
    """invoice.created: once per invoice, from its draft or, without one, its finalization."""
    data = {"invoice": render(invoice)}
    return draft(event, "invoice.created", invoice.customer_id, data, f"invoice.created:{invoice.id}")


async def invoice_drafted(session: AsyncSession, payload: bytes) -> list[Draft]:
    event = invoicing_events.InvoiceDrafted.FromString(payload)
    return [_created(event, event.invoice)]


async def invoice_finalized(session: AsyncSession, payload: bytes) -> list[Draft]:
    event = invoicing_events.InvoiceFinalized.FromString(payload)
    invoice = event.invoice
    return [
        _created(event, invoice),
        draft(event, "invoice.finalized", invoice.customer_id, {"invoice": render(invoice)}),
    ]


async def invoice_updated(session: AsyncSession, payload: bytes) -> list[Draft]:
    """Voided and paid, once per invoice; a payment failing or waiting for
    the customer, each time it does (while the invoice is finalized: an
    archived invoice's payment is old news)."""
    event = invoicing_events.InvoiceUpdated.FromString(payload)
    invoice = event.invoice
    data = {"invoice": render(invoice)}
    if invoice.status == invoices_pb2.INVOICE_STATUS_VOIDED:
        return [draft(event, "invoice.voided", invoice.customer_id, data, f"invoice.voided:{invoice.id}")]
    if invoice.status == invoices_pb2.INVOICE_STATUS_PAID:
        return [draft(event, "invoice.paid", invoice.customer_id, data, f"invoice.paid:{invoice.id}")]
    kind = INVOICE_PAYMENT_TYPES.get(invoice.payment_status)
    if invoice.status != invoices_pb2.INVOICE_STATUS_FINALIZED or kind is None:
        return []
    return [draft(event, kind, invoice.customer_id, data)]


async def credit_note_created(session: AsyncSession, payload: bytes) -> list[Draft]:
    event = invoicing_events.CreditNoteCreated.FromString(payload)
    note = event.credit_note
    return [draft(event, "credit_note.created", note.customer_id, {"credit_note": render(note)})]


async def trial_ended(session: AsyncSession, payload: bytes) -> list[Draft]:
    event = invoicing_events.TrialEnded.FromString(payload)
    return [draft(event, "subscription.trial_ended", event.customer_id, fact(event))]


async def usage_threshold_reached(session: AsyncSession, payload: bytes) -> list[Draft]:
    event = invoicing_events.UsageThresholdReached.FromString(payload)
    return [draft(event, "usage_threshold.reached", event.customer_id, {"usage_threshold": fact(event)})]


async def payment_updated(session: AsyncSession, payload: bytes) -> list[Draft]:
    """One announcement per payment version, for the states the catalog names."""
    event = payments_events.PaymentUpdated.FromString(payload)
    payment = event.payment
    kind = PAYMENT_TYPES.get(payment.status)
    if kind is None:
        return []
    key = f"{kind}:{payment.id}:{payment.version}"
    return [draft(event, kind, payment.customer_id, {"payment": render(payment)}, key)]


async def events_rejected(session: AsyncSession, payload: bytes) -> list[Draft]:
    event = metering_events.EventsRejected.FromString(payload)
    data = {"rejected_events": [render(rejection) for rejection in event.rejected_events]}
    return [draft(event, "events.rejected", "", data)]


FACTS: dict[str, Facts] = {
    "bxb.catalog.v1.customer_created": customer_created,
    "bxb.catalog.v1.customer_updated": customer_updated,
    "bxb.catalog.v1.subscription_created": subscription_created,
    "bxb.catalog.v1.subscription_updated": subscription_updated,
    "bxb.invoicing.v1.invoice_drafted": invoice_drafted,
    "bxb.invoicing.v1.invoice_finalized": invoice_finalized,
    "bxb.invoicing.v1.invoice_updated": invoice_updated,
    "bxb.invoicing.v1.credit_note_created": credit_note_created,
    "bxb.invoicing.v1.trial_ended": trial_ended,
    "bxb.invoicing.v1.usage_threshold_reached": usage_threshold_reached,
    "bxb.payments.v1.payment_updated": payment_updated,
    "bxb.metering.v1.events_rejected": events_rejected,
}
