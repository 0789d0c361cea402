"""The collector: charges the payments that fell due (automatic collection
of a finalized invoice, then its dunning retries), in every replica.

A payment is due when its next_attempt_time has passed in its customer's
time (its test clock's, or the real time). Each sweep takes a batch of due
payments, oldest first, and charges them concurrently, within a bound
(`concurrency`), through Charging.collect, which re-checks under the
payment's lock that the charge is still due: two replicas sweeping the same
payment charge it once. A payment its charge cannot be made for (no method,
no provider, the invoice voided) leaves collection, unless it was
rescheduled meanwhile; a dependency that is down, or a customer still being
linked at Stripe, leaves it due for the next sweep. While a customer
disputes a charge, its dunning retries wait. Woken at once by
invoice_finalized and by a test clock moving.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import cast

from sqlalchemy import and_, case, exists, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import aliased

from services.common.errors import DomainError, Unavailable
from services.common.worker import Worker
from services.payments.charging import Charging
from services.payments.models import PAYMENT_DISPUTED, PAYMENT_FAILED, PAYMENT_PENDING, Payment, TestClock

log = logging.getLogger("bxb.payments.collection")
# Refusals that pass: the charge is tried again on the next sweep rather than dropped.
WAITING = frozenset({"PROVIDER_CUSTOMER_PENDING"})


class Collector(Worker):
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        charging: Charging,
        interval: float = 5.0,
        concurrency: int = 16,
        batch: int = 200,
    ):
        super().__init__(
            "payments-collection", interval, self._more, log, "collection sweep failed; retrying on the next tick"
        )
        self.sessions = sessions
        self.charging = charging
        self.concurrency = concurrency  # charges at the provider at once
        self.batch = batch  # payments taken per sweep

    async def _more(self) -> bool:
        """One sweep; whether it was full (more may be due)."""
        return await self.sweep() >= self.batch

    async def due(self) -> list[tuple[str, datetime]]:
        """Due payments (id, the time they were due), oldest first."""
        other = aliased(Payment)
        disputed = and_(
            other.organization_id == Payment.organization_id,
            other.customer_id == Payment.customer_id,
            other.status == PAYMENT_DISPUTED,
        )
        present = case((Payment.test_clock_id == "", func.now()), else_=TestClock.frozen_time)
        query = (
            select(Payment.id, Payment.next_attempt_time)
            .outerjoin(
                TestClock,
                and_(TestClock.id == Payment.test_clock_id, TestClock.organization_id == Payment.organization_id),
            )
            .where(
                Payment.next_attempt_time.is_not(None),
                Payment.status.in_((PAYMENT_PENDING, PAYMENT_FAILED)),
                Payment.next_attempt_time <= present,
                # A customer disputing a charge is not dunned meanwhile.
                or_(Payment.attempt_count == 0, ~exists().where(disputed)),
            )
            .order_by(Payment.next_attempt_time)
            .limit(self.batch)
        )
        async with self.sessions() as session:
            # next_attempt_time is set on every row the query finds.
            return cast(list[tuple[str, datetime]], [tuple(row) for row in await session.execute(query)])

    async def sweep(self) -> int:
        """Charges one batch of due payments; how many were due."""
        found = await self.due()
        gate = asyncio.Semaphore(self.concurrency)

        async def one(payment_id: str, due: datetime) -> None:
            async with gate:
                await self._collect(payment_id, due)

        await asyncio.gather(*(one(payment_id, due) for payment_id, due in found))
        return len(found)

    async def _collect(self, payment_id: str, due: datetime) -> None:
        try:
            await self.charging.collect(payment_id)
        except Unavailable as error:  # the next sweep tries again
            log.warning("payment %s: not collected now: %s", payment_id, error.message)
        except DomainError as error:
            if error.reason in WAITING:  # its customer is still being linked at Stripe: the next sweep tries again
                log.info("payment %s: not collected yet: %s", payment_id, error.message)
                return
            log.info("payment %s leaves automatic collection: %s", payment_id, error.message)
            await self._unschedule(payment_id, due)

    async def _unschedule(self, payment_id: str, due: datetime) -> None:
        """Ends the schedule that could not be charged, unless another was set meanwhile."""
        async with self.sessions() as session, session.begin():
            await session.execute(
                update(Payment)
                .where(Payment.id == payment_id, Payment.next_attempt_time == due)
                .values(next_attempt_time=None)
            )
