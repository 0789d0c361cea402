"""Resyncs: all of an organization's history announced again to one
integration, for an organization that connects after months of billing.

The history is read through gRPC from the services that own it, each call
under the peer's deadline: the catalog's customers (oldest first, a page
at a time), each customer's subscriptions with their plans, invoicing's
finalized invoices and credit notes, and this service's own payments. Each
fact becomes an announcement of the same type the live event has (only the
types the integration's tool syncs), with the public JSON GET shows, keyed
`resync:<resync>:<type>:<resource>` and addressed to that integration only;
per customer, oldest first: the customer, its subscriptions, invoices,
payments, credit notes.

A page of customers is read with no transaction open, then announced in one
short transaction. The worker that gathers holds a lease on the Resync row,
renewed each page; a replica that dies leaves the lease to expire and
another takes the resync up from the start: what was announced before is
not announced again (the keys are unique per organization). Once gathered,
the resync's total is its deliveries, and it is done when none is pending.
Resyncs are their own worker, apart from the sender: gathering one
organization's history never holds another's sync."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from google.protobuf.message import Message
from sqlalchemy import func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bxb.catalog.v1 import customers_pb2, plans_pb2, subscriptions_pb2
from bxb.invoicing.v1 import credit_notes_pb2, invoices_pb2
from services.common import peers
from services.common.timestamps import utcnow
from services.common.worker import Worker
from services.payments import public_json
from services.payments.announcing import Announcer, Draft
from services.payments.models import (
    DELIVERY_PENDING,
    PAYMENT_FAILED,
    PAYMENT_SUCCEEDED,
    PAYMENT_UNCOLLECTIBLE,
    RESYNC_DONE,
    RESYNC_GATHERING,
    RESYNC_SENDING,
    Delivery,
    Integration,
    Payment,
    Resync,
)
from services.payments.payments import payment_proto
from services.payments.sinks import Vendor

log = logging.getLogger("bxb.payments.history")

LEASE = timedelta(seconds=60)  # a gatherer that has not renewed it by then is taken for dead
PAGE_SIZE = 50  # customers per page: per transaction of announcements
GATHERERS = 8  # customers of a page whose history is read at once
# Invoices that were final (voided ones stay out: they bill nothing).
ISSUED = (invoices_pb2.INVOICE_STATUS_FINALIZED, invoices_pb2.INVOICE_STATUS_PAID)
# A payment's state as the live event that announced it.
PAYMENT_EVENTS = {
    PAYMENT_SUCCEEDED: "payment.succeeded",
    "PAYMENT_STATUS_REFUNDED": "payment.succeeded",
    "PAYMENT_STATUS_PARTIALLY_REFUNDED": "payment.succeeded",
    "PAYMENT_STATUS_DISPUTED": "payment.succeeded",
    PAYMENT_FAILED: "payment.failed",
    PAYMENT_UNCOLLECTIBLE: "payment.failed",
}


@dataclass(frozen=True)
class Fact:
    """One piece of history, about to be announced."""

    type: str
    customer_id: str
    resource_id: str
    occur_time: datetime
    data: dict[str, Any]


def _time(message: Message, name: str) -> datetime:
    stamp = getattr(message, name)
    return stamp.ToDatetime(tzinfo=utcnow().tzinfo)  # type: ignore[no-any-return]


class History:
    """Gathers resyncs' history; `worker` runs on every replica."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        catalog: peers.Catalog,
        invoicing: peers.Invoicing,
        vendors: Mapping[str, Vendor],
        interval: float = 5.0,
        announced: Callable[[], None] = lambda: None,
    ):
        self.sessions = sessions
        self.catalog = catalog
        self.invoicing = invoicing
        self.vendors = vendors
        self.announcer = Announcer({name: vendor.accepts for name, vendor in vendors.items()})
        self.announced = announced  # the sender's wake: a page of history is queued
        self.worker = Worker("resyncs", interval, self.step, log, "gathering a resync's history failed")

    async def step(self) -> bool:
        """Gathers one resync whose lease is free; closes those all sent.
        True when one was gathered (another may wait)."""
        await self._close_sent()
        claimed = await self._claim()
        if claimed is None:
            return False
        resync, provider = claimed
        await self.gather(resync, self.vendors[provider].accepts)
        return True

    async def _claim(self) -> tuple[Resync, str] | None:
        now = utcnow()
        async with self.sessions() as session, session.begin():
            row = (
                await session.execute(
                    select(Resync, Integration.provider)
                    .join(Integration, Integration.id == Resync.integration_id)
                    .where(
                        Resync.state == RESYNC_GATHERING,
                        or_(Resync.lease_until.is_(None), Resync.lease_until < now),
                        Integration.provider.in_(list(self.vendors)),
                    )
                    .order_by(Resync.create_time)
                    .limit(1)
                    .with_for_update(of=Resync, skip_locked=True)
                )
            ).first()
            if row is None:
                return None
            resync, provider = row[0], row[1]
            resync.lease_until = now + LEASE
        return resync, provider

    async def gather(self, resync: Resync, accepts: frozenset[str]) -> None:
        """Announces the organization's history, a page of customers per
        transaction, then counts what was queued."""
        org = resync.organization_id
        customers = peers.every(
            self.catalog.list_customers,
            customers_pb2.ListCustomersRequest,
            lambda page: page.customers,
            org,
            {},
            PAGE_SIZE,
        )
        page: list[customers_pb2.Customer] = []
        async for customer in customers:
            page.append(customer)
            if len(page) == PAGE_SIZE:
                await self._announce(resync, await self._facts(org, page), accepts)
                page = []
        await self._announce(resync, await self._facts(org, page), accepts)
        async with self.sessions() as session, session.begin():
            total = await session.scalar(
                select(func.count()).where(
                    Delivery.integration_id == resync.integration_id, Delivery.resync_id == resync.id
                )
            )
            await session.execute(
                update(Resync)
                .where(Resync.id == resync.id, Resync.state == RESYNC_GATHERING)
                .values(state=RESYNC_SENDING, total_count=total, lease_until=None)
            )
        log.info("resync %s of organization %s gathered: %d events", resync.id, org, total)

    async def _announce(self, resync: Resync, facts: list[Fact], accepts: frozenset[str]) -> None:
        now = utcnow()
        async with self.sessions() as session, session.begin():
            for fact in facts:
                if fact.type not in accepts:
                    continue
                draft = Draft(
                    organization_id=resync.organization_id,
                    type=fact.type,
                    customer_id=fact.customer_id,
                    source_key=f"resync:{resync.id}:{fact.type}:{fact.resource_id}",
                    occur_time=fact.occur_time,
                    data=fact.data,
                    integration_id=resync.integration_id,
                    resync_id=resync.id,
                )
                await self.announcer.announce(session, draft, now)
            # Still gathering: the lease holds for another while.
            await session.execute(update(Resync).where(Resync.id == resync.id).values(lease_until=now + LEASE))
        self.announced()

    async def _facts(self, org: str, customers: list[customers_pb2.Customer]) -> list[Fact]:
        """The page's customers' history, customer by customer, each oldest
        first; GATHERERS customers are read at once (their calls to the
        catalog and invoicing overlap), the page kept in its order."""
        gate = asyncio.Semaphore(GATHERERS)

        async def one(customer: customers_pb2.Customer) -> list[Fact]:
            async with gate:
                return await self._customer_facts(org, customer)

        histories = await asyncio.gather(*(one(customer) for customer in customers))
        return [fact for history in histories for fact in history]

    async def _customer_facts(self, org: str, customer: customers_pb2.Customer) -> list[Fact]:
        facts = [
            Fact(
                "customer.created",
                customer.id,
                customer.id,
                _time(customer, "create_time"),
                {"customer": public_json.render(customer)},
            )
        ]
        facts += [fact async for fact in self._subscriptions(org, customer)]
        facts += await self._invoices(org, customer.id)
        facts += await self._payments(org, customer.id)
        facts += [fact async for fact in self._credit_notes(org, customer.id)]
        return facts

    async def _subscriptions(self, org: str, customer: customers_pb2.Customer) -> AsyncIterator[Fact]:
        customer_id = customer.id
        subscriptions = peers.every(
            self.catalog.list_subscriptions,
            subscriptions_pb2.ListSubscriptionsRequest,
            lambda page: page.subscriptions,
            org,
            {"customer_id": customer_id},
            PAGE_SIZE,
        )
        async for subscription in subscriptions:
            plan = await self.catalog.get_plan(
                org, plans_pb2.GetPlanRequest(code=subscription.plan_code, version=subscription.plan_version)
            )
            shown = public_json.render(subscription)
            data = {"subscription": shown, "plan": public_json.render(plan), "customer": public_json.render(customer)}
            yield Fact("subscription.started", customer_id, subscription.id, _time(subscription, "start_time"), data)
            if subscription.HasField("terminate_time"):
                ended = _time(subscription, "terminate_time")
                yield Fact("subscription.terminated", customer_id, subscription.id, ended, {"subscription": shown})

    async def _invoices(self, org: str, customer_id: str) -> list[Fact]:
        invoices = peers.every(
            self.invoicing.list_invoices,
            invoices_pb2.ListInvoicesRequest,
            lambda page: page.invoices,
            org,
            {"customer_id": customer_id},
            PAGE_SIZE,
        )
        issued = [invoice async for invoice in invoices if invoice.id and invoice.status in ISSUED]
        issued.sort(key=lambda invoice: (invoice.issue_time.ToNanoseconds(), invoice.id))  # listed newest first
        return [
            Fact(
                "invoice.finalized",
                customer_id,
                invoice.id,
                _time(invoice, "issue_time"),
                {"invoice": public_json.render(invoice)},
            )
            for invoice in issued
        ]

    async def _payments(self, org: str, customer_id: str) -> list[Fact]:
        async with self.sessions() as session:
            payments = await session.scalars(
                select(Payment)
                .where(
                    Payment.organization_id == org,
                    Payment.customer_id == customer_id,
                    Payment.status.in_(list(PAYMENT_EVENTS)),
                )
                .order_by(Payment.create_time, Payment.id)
            )
            return [
                Fact(
                    PAYMENT_EVENTS[payment.status],
                    customer_id,
                    payment.id,
                    payment.update_time,
                    {"payment": public_json.render(payment_proto(payment))},
                )
                for payment in payments
            ]

    async def _credit_notes(self, org: str, customer_id: str) -> AsyncIterator[Fact]:
        notes = peers.every(
            self.invoicing.list_credit_notes,
            credit_notes_pb2.ListCreditNotesRequest,
            lambda page: page.credit_notes,
            org,
            {"customer_id": customer_id},
            PAGE_SIZE,
        )
        async for note in notes:
            data = {"credit_note": public_json.render(note)}
            yield Fact("credit_note.created", customer_id, note.id, _time(note, "create_time"), data)

    async def _close_sent(self) -> None:
        """Resyncs whose deliveries are all sent (or failed for good) are done."""
        async with self.sessions() as session, session.begin():
            pending = (
                select(Delivery.id)
                .where(
                    Delivery.integration_id == Resync.integration_id,
                    Delivery.resync_id == Resync.id,
                    Delivery.status == DELIVERY_PENDING,
                )
                .exists()
            )
            last = (
                select(func.max(Delivery.finish_time))
                .where(Delivery.integration_id == Resync.integration_id, Delivery.resync_id == Resync.id)
                .scalar_subquery()
            )
            await session.execute(
                update(Resync)
                .where(Resync.state == RESYNC_SENDING, ~pending)
                .values(state=RESYNC_DONE, finish_time=func.coalesce(last, func.now()))
            )
