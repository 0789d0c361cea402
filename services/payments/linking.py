"""The linker: creates or checks each PENDING provider customer at Stripe,
off the queue that recorded it (customers.py), so that no consumer waits on
Stripe.

1. One short transaction claims up to `batch` due PENDING customers
   (`FOR UPDATE SKIP LOCKED`: two linkers never take the same one) and
   leases them (next_attempt_time moves `lease` seconds ahead), committed.
   A linker that dies leaves its lease to run out; the next takes over.
2. With no transaction open, at most `concurrency` at once, each is linked
   with its organization's key: without a Stripe customer, one is created
   with the idempotency key `bxb-customer-{org}-{customer_id}` (so a second
   linker, or one that died mid-call, gets the same customer back within
   Stripe's 24 h key window); with one, it is retrieved (another account's
   customer is not found there: FAILED). A payment method given at creation
   is retrieved and saved only if it is attached to that Stripe customer
   (attached when unattached); otherwise the customer is still LINKED, the
   method not saved, and failure_message says why (the customer may add
   another: setup link, payment method routes).
3. One short transaction records the outcome, if the customer is still as
   claimed (a `customer.deleted` webhook, a new method, win meanwhile).

Stripe unreachable, the organization's key refused, or no account connected
yet: the customer stays PENDING and is tried again later, after a backoff
doubling from `poll` up to `max_backoff` (connecting an account makes the
organization's customers due at once). The loop runs when woken (a customer
recorded, an account connected) and every `poll` seconds.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.common.errors import DomainError
from services.common.timestamps import utcnow
from services.common.worker import Worker
from services.payments import stripe_customers
from services.payments.accounts import StripeAccounts
from services.payments.methods import lock_customer, save
from services.payments.models import LINK_FAILED, LINK_LINKED, LINK_PENDING, ProviderCustomer
from services.payments.stripe_charges import StripeCharges, Unreachable
from services.payments.stripe_customers import Card

log = logging.getLogger("bxb.payments.linking")
# How long past its calls' deadlines a claim is still trusted to its linker.
LEASE_MARGIN_SECONDS = 30.0


@dataclass(frozen=True)
class Job:
    """One claimed customer, as it was claimed."""

    org: str
    customer_id: str
    stripe_customer: str
    payment_method: str
    email: str
    name: str
    attempts: int


@dataclass(frozen=True)
class Linked:
    """What linking one customer came to: `status` LINKED or FAILED, or
    None to try again later (then `message` says what it waits for)."""

    status: str | None
    stripe_customer: str = ""
    message: str = ""
    card: Card | None = None  # the creation's payment method, when saved


class Linker(Worker):
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        accounts: StripeAccounts,
        batch: int = 8,
        concurrency: int = 4,
        poll: float = 5.0,
        max_backoff: float = 600.0,
    ):
        super().__init__(
            "payments-linker", poll, self._more, log, "linking customers failed; retrying on the next tick"
        )
        self.sessions = sessions
        self.accounts = accounts
        self.batch = batch  # customers claimed at once
        self.concurrency = concurrency  # linked at Stripe at once
        self.poll = poll  # seconds between runs, and the first retry's wait
        self.max_backoff = max_backoff
        # A claim outlives the batch's calls: each customer's within one Stripe deadline, `concurrency` at once.
        rounds = -(-batch // concurrency)
        self.lease = timedelta(seconds=accounts.timeout * rounds + LEASE_MARGIN_SECONDS)

    async def _more(self) -> bool:
        """Links one batch; whether it was full (more may be due)."""
        return await self.run_once() == self.batch

    async def _claim(self) -> list[Job]:
        now = utcnow()
        query = (
            select(ProviderCustomer)
            .where(
                ProviderCustomer.status == LINK_PENDING,
                or_(ProviderCustomer.next_attempt_time.is_(None), ProviderCustomer.next_attempt_time <= now),
            )
            .order_by(ProviderCustomer.next_attempt_time.nulls_first(), ProviderCustomer.create_time)
            .limit(self.batch)
            .with_for_update(skip_locked=True)
        )
        async with self.sessions() as session, session.begin():
            claimed = list((await session.execute(query)).scalars())
            for customer in claimed:
                customer.next_attempt_time = now + self.lease
        return [
            Job(
                c.organization_id,
                c.customer_id,
                c.provider_customer_id,
                c.payment_method,
                c.email,
                c.name,
                c.attempt_count,
            )
            for c in claimed
        ]

    async def run_once(self) -> int:
        """Links one batch of due customers; how many were claimed."""
        jobs = await self._claim()
        gate = asyncio.Semaphore(self.concurrency)

        async def one(job: Job) -> None:
            async with gate:
                outcome = await self._link(job)
            await self._record(job, outcome)

        await asyncio.gather(*(one(job) for job in jobs))
        return len(jobs)

    async def _link(self, job: Job) -> Linked:
        """Step 2: the customer, and the payment method given at its creation, at Stripe."""
        try:
            charges = await self.accounts.charges(job.org)
        except DomainError as error:  # no account connected (yet), or its secrets do not open
            return Linked(None, job.stripe_customer, error.message)
        stripe_customer = job.stripe_customer
        try:
            async with asyncio.timeout(charges.timeout):  # one deadline for the customer's calls
                if stripe_customer:
                    await stripe_customers.customer(charges, stripe_customer)
                else:
                    stripe_customer = await stripe_customers.create_customer(
                        charges, job.org, job.customer_id, job.email, job.name
                    )
                if not job.payment_method:
                    return Linked(LINK_LINKED, stripe_customer)
                return await self._method(charges, job, stripe_customer)
        except TimeoutError:
            return Linked(None, stripe_customer, f"Stripe did not answer within {charges.timeout:g} s")
        except (Unreachable, stripe_customers.KeyRefused) as error:
            return Linked(None, stripe_customer, f"Stripe: {error}")
        except stripe_customers.Missing:
            return Linked(
                LINK_FAILED,
                message=f"the Stripe customer {stripe_customer} is not in the organization's Stripe account",
            )
        except stripe_customers.Refused as error:
            return Linked(LINK_FAILED, stripe_customer, f"Stripe refused the customer: {error}")

    @staticmethod
    async def _method(charges: StripeCharges, job: Job, stripe_customer: str) -> Linked:
        """The customer LINKED, with its creation's method when it is that customer's."""
        try:
            method = await stripe_customers.payment_method(charges, job.payment_method)
            holder = stripe_customers.owner(method)
            if not holder:
                method = await stripe_customers.attach(charges, job.payment_method, stripe_customer)
            elif holder != stripe_customer:
                return Linked(
                    LINK_LINKED,
                    stripe_customer,
                    f"the payment method {job.payment_method} is attached to another Stripe customer: not saved",
                )
        except stripe_customers.Missing:
            return Linked(
                LINK_LINKED,
                stripe_customer,
                f"the payment method {job.payment_method} is not in the organization's Stripe account: not saved",
            )
        except stripe_customers.KeyRefused:
            raise
        except stripe_customers.Refused as error:
            return Linked(
                LINK_LINKED, stripe_customer, f"Stripe refused the payment method {job.payment_method}: {error}"
            )
        return Linked(LINK_LINKED, stripe_customer, card=stripe_customers.card_of(method))

    def _backoff(self, attempts: int) -> timedelta:
        return timedelta(seconds=min(self.poll * 2**attempts, self.max_backoff))

    async def _record(self, job: Job, outcome: Linked) -> None:
        """Step 3: the outcome, on a customer still as it was claimed."""
        async with self.sessions() as session, session.begin():
            await lock_customer(session, job.org, job.customer_id)
            customer = await session.get_one(ProviderCustomer, (job.org, job.customer_id), with_for_update=True)
            if customer.status != LINK_PENDING or customer.payment_method != job.payment_method:
                return  # deleted at Stripe, or given a new method, meanwhile: linked again from there
            customer.provider_customer_id = outcome.stripe_customer or customer.provider_customer_id
            customer.failure_message = outcome.message[:500]
            if outcome.status is None:
                customer.attempt_count += 1
                customer.next_attempt_time = utcnow() + self._backoff(job.attempts)
                log.warning("customer %s of %s is not linked yet: %s", job.customer_id, job.org, outcome.message)
                return
            customer.status, customer.attempt_count, customer.next_attempt_time = outcome.status, 0, None
            if outcome.card is not None:
                await save(
                    session, job.org, job.customer_id, outcome.stripe_customer, job.payment_method, outcome.card, False
                )
