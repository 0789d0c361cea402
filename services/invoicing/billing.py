"""The billing run: closes every ended period with exactly one invoice.

A period is due once it has been over for the settle delay, which leaves
time for events stamped before its end to arrive. For a subscription created
with a start date in the past, the scheduler also waits the settle delay
after creation, so a backdated subscription gets its usage before its first
invoice; `run(customer_id=...)`, used when a customer's invoices are read,
bills those backdated periods at once.

Two runs racing for the same period cannot both invoice it: the unique
(subscription, period start) key lets one insert win and the other roll back
(its invoice number with it, so numbers stay gapless).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime, timedelta

from google.protobuf import json_format
from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import async_sessionmaker

from bxb.catalog.v1 import plans_pb2
from bxb.invoicing.v1 import events_pb2
from bxb.invoicing.v1 import invoices_pb2 as pb
from services.common import outbox, periods
from services.common.ids import new_id
from services.common.timestamps import to_proto, utcnow
from services.invoicing.fees import FeeCalculator
from services.invoicing.invoice_view import invoice_proto
from services.invoicing.models import Invoice, InvoiceSequence, Outbox, Subscription

log = logging.getLogger("bxb.billing")

INVOICE_FINALIZED = "bxb.invoicing.v1.invoice_finalized"


class Rollback(Exception):
    """Raised inside a transaction to undo it (another run billed the period)."""


class Biller:
    def __init__(self, sessions: async_sessionmaker, fees: FeeCalculator, relay: outbox.OutboxRelay, settle: timedelta):
        self.sessions = sessions
        self.fees = fees
        self.relay = relay
        self.settle = settle

    async def run(self, now: datetime | None = None, org: str = "", customer_id: str = "") -> int:
        """Bills every due period; returns the number of invoices created."""
        now = now or utcnow()
        query = select(Subscription)
        if org:
            query = query.where(Subscription.organization_id == org)
        if customer_id:
            query = query.where(Subscription.customer_id == customer_id)
        async with self.sessions() as session:
            subscriptions = (await session.execute(query.order_by(Subscription.create_time))).scalars().all()
        created = 0
        for subscription in subscriptions:
            created += await self.bill(subscription, now, waits_after_creation=not customer_id)
        if created:
            self.relay.wake()
        return created

    async def bill(self, subscription: Subscription, now: datetime, waits_after_creation: bool) -> int:
        plan = json_format.ParseDict(subscription.plan, plans_pb2.Plan())
        cutoff = now - self.settle
        if waits_after_creation and subscription.create_time > cutoff:
            return 0
        interval = plans_pb2.PlanInterval.Name(plan.interval)
        created = 0
        for period in periods.ended(subscription.start_time, interval, subscription.billing_time, cutoff):
            if subscription.billed_through is not None and period.end <= subscription.billed_through:
                continue
            fees = await self.fees.period_fees(subscription, plan, period)
            if await self._issue(subscription, plan, period, fees, now):
                created += 1
        return created

    async def _issue(self, subscription: Subscription, plan: plans_pb2.Plan, period: periods.Period, fees, now) -> bool:
        org = subscription.organization_id
        subtotal = sum(fee.amount_cents for fee in fees)
        try:
            async with self.sessions() as session, session.begin():
                number = (
                    await session.execute(
                        insert(InvoiceSequence)
                        .values(organization_id=org, last_number=1)
                        .on_conflict_do_update(
                            index_elements=[InvoiceSequence.organization_id],
                            set_={"last_number": InvoiceSequence.last_number + 1},
                        )
                        .returning(InvoiceSequence.last_number)
                    )
                ).scalar_one()
                invoice = Invoice(
                    id=new_id("inv"),
                    organization_id=org,
                    number=f"INV-{number:06d}",
                    customer_id=subscription.customer_id,
                    subscription_id=subscription.id,
                    plan_code=plan.code,
                    status="INVOICE_STATUS_FINALIZED",
                    currency=plan.currency,
                    period_start=period.start,
                    period_end=period.end,
                    fees=[json_format.MessageToDict(f, preserving_proto_field_name=True) for f in fees],
                    subtotal_cents=subtotal,
                    total_amount_cents=subtotal,
                    issue_time=now,
                    create_time=now,
                    timing="BILLING_TIMING_IN_ARREARS",
                    calculation_id="",
                )
                inserted = await session.execute(
                    insert(Invoice)
                    .values({c.key: getattr(invoice, c.key) for c in Invoice.__table__.columns})
                    .on_conflict_do_nothing(
                        index_elements=[Invoice.subscription_id, Invoice.period_start, Invoice.timing]
                    )
                    .returning(Invoice.id)
                )
                if inserted.scalar_one_or_none() is None:
                    raise Rollback
                await session.execute(
                    update(Subscription).where(Subscription.id == subscription.id).values(billed_through=period.end)
                )
                event = events_pb2.InvoiceFinalized(
                    event_id=new_id("evt"),
                    organization_id=org,
                    occur_time=to_proto(now),
                    invoice=invoice_proto(invoice),
                )
                await outbox.enqueue(session, Outbox, INVOICE_FINALIZED, event)
        except Rollback:
            return False
        log.info("invoice %s for %s period %s", invoice.number, subscription.id, period.start.isoformat())
        return True


class Scheduler:
    """Runs the biller at start and then every `interval`."""

    def __init__(self, biller: Biller, interval: float):
        self.biller = biller
        self.interval = interval
        self._task: asyncio.Task | None = None
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    async def _loop(self) -> None:
        while True:
            try:
                await self.biller.run()
            except Exception:
                log.exception("billing run failed; retrying on the next tick")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)
            self._wake.clear()

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="billing-scheduler")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None


__all__ = ["INVOICE_FINALIZED", "Biller", "Scheduler", "pb"]
