"""Charging an invoice (PaymentService.ChargeInvoice, ABAXUS's
`POST /v1/invoices/{id}/charge`) so that no fault charges it twice.

The invoice is read from invoicing (its state and what it still asks, after
credit notes), so a charge right after the invoice is issued does not wait
for invoice_finalized to reach this service. Then, in three steps:

1. One transaction under the payment's row lock: a paid invoice answers its
   payment; an attempt already at the provider is refused
   (PAYMENT_IN_PROGRESS), unless its claim is stale; an open attempt (its
   outcome unknown, or waiting for the customer) is claimed to be looked up;
   otherwise a new attempt is stored, in_flight with its idempotency key.
   Committed before anything is sent.
2. The provider is asked, with no transaction open, within its deadline
   (StripeCharges.settle: an attempt that may have reached it is looked up
   before anything is created).
3. One transaction records the outcome on the attempt and the payment, and
   announces payment_updated (invoicing marks the invoice paid from it).

A process dying between 1 and 3 leaves its attempt in_flight; the next
charge of the invoice, or the recovery sweep (recovery.py), takes it over
once its claim is stale and looks it up at the provider.

Automatic collection and dunning retries (`collect`, run by the collector)
take the same three steps, starting when the payment is due; a charge on
request meeting one at the provider waits for its outcome (within the
provider's deadline) and answers it, where two charges on request refuse the
second (PAYMENT_IN_PROGRESS); an open
payment link (links.py) is closed at Stripe before any new charge starts, so
the customer paying by the link and a charge never both collect. Every
outcome, whoever learns it (this module, a webhook), is applied by
`settle_outcome`, which also schedules dunning after a decline.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import grpc
from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bxb.invoicing.v1 import invoices_pb2
from bxb.payments.v1 import events_pb2
from services.common import outbox, peers
from services.common.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable
from services.common.ids import new_id
from services.common.timestamps import to_proto, utcnow
from services.payments import attempts, clocks, dunning
from services.payments.accounts import StripeAccounts
from services.payments.customers import require_chargeable
from services.payments.links import PaymentLinks
from services.payments.models import (
    PAYMENT_CANCELED,
    PAYMENT_FAILED,
    PAYMENT_PENDING,
    PAYMENT_SUCCEEDED,
    Outbox,
    Payment,
    PaymentAttempt,
    PaymentMethod,
    ProviderCustomer,
)
from services.payments.payments import payment_proto
from services.payments.stripe_charges import REJECTED, SUCCEEDED, UNKNOWN, Outcome, Unreachable

PAYMENT_UPDATED = "bxb.payments.v1.payment_updated"
# How long past the provider's deadline a claim is still trusted to its holder.
STALE_MARGIN_SECONDS = 30.0
# How often a charge on request looks again at an automatic one it waits for.
WAIT_STEP_SECONDS = 0.1
# Why an attempt was made: bxb.payments.v1.PaymentAttemptTrigger names.
AUTOMATIC, MANUAL = "PAYMENT_ATTEMPT_TRIGGER_AUTOMATIC", "PAYMENT_ATTEMPT_TRIGGER_MANUAL"
DUNNING, PAYMENT_LINK = "PAYMENT_ATTEMPT_TRIGGER_DUNNING", "PAYMENT_ATTEMPT_TRIGGER_PAYMENT_LINK"


async def receivable(session: AsyncSession, org: str, invoice: invoices_pb2.Invoice, status: str = "") -> Payment:
    """The invoice's payment row, created (with `status`, else by its total)
    when invoice_finalized has not brought it yet; locked until the
    transaction ends."""
    clock = select(ProviderCustomer.test_clock_id).where(
        ProviderCustomer.organization_id == org, ProviderCustomer.customer_id == invoice.customer_id
    )
    await session.execute(
        insert(Payment)
        .values(
            id=new_id("pay"),
            organization_id=org,
            invoice_id=invoice.id,
            customer_id=invoice.customer_id,
            amount_cents=invoice.total_amount_cents,
            currency=invoice.currency,
            status=status or (PAYMENT_PENDING if invoice.total_amount_cents > 0 else PAYMENT_SUCCEEDED),
            test_clock_id=func.coalesce(clock.scalar_subquery(), ""),
        )
        .on_conflict_do_nothing()
    )
    query = select(Payment).where(Payment.organization_id == org, Payment.invoice_id == invoice.id)
    return (await session.execute(query.with_for_update())).scalar_one()


async def announce(session: AsyncSession, payment: Payment) -> None:
    """payment_updated for the payment as it now stands, in the caller's
    transaction (the outbox); its version grows, so readers keep the newest."""
    payment.version += 1
    payment.update_time = utcnow()
    event = events_pb2.PaymentUpdated(
        event_id=new_id("evt"),
        organization_id=payment.organization_id,
        occur_time=to_proto(utcnow()),
        payment=payment_proto(payment),
    )
    await outbox.enqueue(session, Outbox, PAYMENT_UPDATED, event)


class CollectionUnderWay(Exception):
    """An automatic charge (collection, dunning) of the invoice is at the provider."""


class Charging:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        relay: outbox.OutboxRelay,
        invoicing: peers.Invoicing,
        accounts: StripeAccounts,
        stale_after: float = 20.0 + STALE_MARGIN_SECONDS,
        links: PaymentLinks | None = None,
        wait_for_collection: float = 20.0,
    ):
        self.sessions = sessions
        self.relay = relay
        self.invoicing = invoicing  # read for the invoice to charge
        self.accounts = accounts  # each organization's Stripe account
        self.stale_after = timedelta(seconds=stale_after)  # a claim older than this was abandoned
        self.links = links or PaymentLinks(accounts)  # payment links closed before a charge
        # How long a charge on request waits for an automatic one already at the provider.
        self.wait_for_collection = wait_for_collection

    async def _invoice(self, org: str, invoice_id: str) -> invoices_pb2.Invoice:
        try:
            return await self.invoicing.get_invoice(org, invoices_pb2.GetInvoiceRequest(id=invoice_id))
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                raise NotFound(f"invoice {invoice_id!r} not found", field="invoice_id") from None
            raise Unavailable(f"invoicing could not be reached: {error.code().name}") from None

    async def charge(self, org: str, invoice_id: str) -> Payment:
        """PaymentService.ChargeInvoice: the invoice charged now, on request."""
        if not invoice_id:
            raise InvalidArgument("invoice_id is required", field="invoice_id")
        invoice = await self._invoice(org, invoice_id)
        deadline = asyncio.get_running_loop().time() + self.wait_for_collection
        while True:
            try:
                paid = await self._run(org, invoice, MANUAL)
            except CollectionUnderWay:
                if asyncio.get_running_loop().time() >= deadline:
                    raise attempts.in_progress(invoice_id) from None
                await asyncio.sleep(WAIT_STEP_SECONDS)
                continue
            assert paid is not None  # a charge on request is always due
            return paid

    async def collect(self, payment_id: str) -> Payment | None:
        """Charges a payment the collector found due (its first automatic
        charge, or a dunning retry); None when it is not due any more."""
        async with self.sessions() as session:
            payment = await session.get_one(Payment, payment_id)
        trigger = DUNNING if payment.attempt_count else AUTOMATIC
        invoice = await self._invoice(payment.organization_id, payment.invoice_id)
        return await self._run(payment.organization_id, invoice, trigger)

    async def _run(self, org: str, invoice: invoices_pb2.Invoice, trigger: str) -> Payment | None:
        """The three steps, once any payment link is closed; None when an
        automatic charge is not due any more."""
        while True:
            async with self.sessions() as session, session.begin():
                payment = await receivable(session, org, invoice)
                if trigger != MANUAL and not await self._due(session, payment):
                    return None
                link = payment.payment_link_id
                if not link:
                    claim = await self._begin(session, payment, invoice, trigger)
                    if claim is None:
                        # Settled without the provider, or already: invoicing's "paid" is idempotent.
                        await announce(session, payment)
            if not link:
                break
            # The customer's payment link is closed at Stripe first (no transaction open), then recorded.
            paid_by = await self.links.close(org, link)
            async with self.sessions() as session, session.begin():
                payment = await session.get_one(Payment, payment.id, with_for_update=True)
                if payment.payment_link_id == link:
                    await link_closed(session, payment, paid_by)
            if paid_by:
                self.relay.wake()
                return payment
        if claim is None:
            self.relay.wake()
            return payment
        return await self._settle(claim)

    async def resume(self, payment_id: str) -> Payment | None:
        """Looks up the payment's abandoned attempt at the provider (the
        recovery sweep); None when it is no longer abandoned."""
        async with self.sessions() as session, session.begin():
            payment = await session.get_one(Payment, payment_id, with_for_update=True)
            attempt = await attempts.latest(session, payment)
            assert attempt is not None  # an abandoned attempt is what the sweep found
            if attempt.status not in (attempts.IN_FLIGHT, UNKNOWN) or not attempts.claimable(attempt, self.stale_after):
                return None  # settled, or taken over, meanwhile
            claim = attempts.claim(attempt)
        return await self._settle(claim)

    async def _begin(
        self, session: AsyncSession, payment: Payment, invoice: invoices_pb2.Invoice, trigger: str
    ) -> attempts.Claim | None:
        """Step 1: the attempt to settle at the provider, None when there is none to make."""
        if payment.status == PAYMENT_SUCCEEDED:
            return None
        attempt = await attempts.latest(session, payment)
        if attempt is not None and attempt.status in attempts.OPEN:
            if not attempts.claimable(attempt, self.stale_after):
                if trigger == MANUAL and attempt.trigger != MANUAL:
                    raise CollectionUnderWay()  # its outcome is awaited: it answers this charge
                raise attempts.in_progress(payment.invoice_id)
            return attempts.claim(attempt)
        if invoice.status != invoices_pb2.INVOICE_STATUS_FINALIZED:
            state = invoices_pb2.InvoiceStatus.Name(invoice.status).removeprefix("INVOICE_STATUS_").lower()
            raise FailedPrecondition(
                f"invoice {invoice.id!r} is {state}: only a finalized invoice is charged",
                field="status",
                reason="INVALID_TRANSITION",
                metadata={"status": state},
            )
        if payment.status == PAYMENT_CANCELED:  # closed for voiding (services/payments/closing.py)
            raise FailedPrecondition(
                f"invoice {invoice.id!r} is being voided: its payment is canceled", reason="PAYMENT_CANCELED"
            )
        payment.amount_cents = invoice.amount_due_cents
        payment.next_attempt_time = None  # this charge is the one that was due
        if payment.amount_cents <= 0:  # credit notes took it all: nothing to collect
            payment.status = PAYMENT_SUCCEEDED
            return None
        await require_chargeable(session, payment.organization_id, payment.customer_id)
        method = await self._default_method(session, payment)
        await self.accounts.charges(payment.organization_id, session)  # refused before anything is stored when none
        return attempts.start(session, payment, method, trigger)

    @staticmethod
    async def _due(session: AsyncSession, payment: Payment) -> bool:
        """Whether an automatic charge is still due (another replica may
        have made it meanwhile): scheduled, and come in the customer's time.
        An invoice no longer owed is refused by _begin, and the collector
        drops it."""
        if payment.next_attempt_time is None or payment.status not in (PAYMENT_PENDING, PAYMENT_FAILED):
            return False
        now = await clocks.now(session, payment.organization_id, payment.test_clock_id)
        return now is not None and payment.next_attempt_time <= now

    async def _settle(self, claim: attempts.Claim) -> Payment:
        """Steps 2 and 3: the provider's answer, recorded; errors say what happened."""
        stripe = await self.accounts.charges(claim.request.organization_id)
        try:
            outcome = await stripe.settle(claim.request, claim.intent_id, claim.sent)
        except Unreachable as error:
            outcome = Outcome(UNKNOWN, claim.intent_id, "unreachable", str(error))
        payment, attempt = await self._record(claim, outcome)
        if attempt.status == UNKNOWN:
            raise Unavailable(
                f"the outcome of the charge is not known yet ({attempt.failure_message}); charging again looks it up"
            )
        if attempt.status == REJECTED:
            raise FailedPrecondition(
                f"the payment provider refused the charge: {attempt.failure_message}", reason="PROVIDER_REJECTED"
            )
        return payment

    async def _record(self, claim: attempts.Claim, outcome: Outcome) -> tuple[Payment, PaymentAttempt]:
        """The payment and its attempt with the outcome recorded; when the
        claim was taken over meanwhile, as its new holder left them."""
        async with self.sessions() as session, session.begin():
            payment = await session.get_one(Payment, claim.payment_id, with_for_update=True)
            attempt = await session.get_one(PaymentAttempt, claim.attempt_id)
            if attempt.status == attempts.IN_FLIGHT and attempt.claim_token == claim.token:
                await settle_outcome(session, payment, attempt, outcome)
            elif attempt.status == attempts.IN_FLIGHT:  # its new holder is at the provider
                raise attempts.in_progress(payment.invoice_id)
        self.relay.wake()
        return payment, attempt

    @staticmethod
    async def _default_method(session: AsyncSession, payment: Payment) -> PaymentMethod:
        query = select(PaymentMethod).where(
            PaymentMethod.organization_id == payment.organization_id,
            PaymentMethod.customer_id == payment.customer_id,
            PaymentMethod.is_default,
        )
        method = (await session.execute(query)).scalar_one_or_none()
        if method is None:
            raise FailedPrecondition(
                f"customer {payment.customer_id!r} has no payment method",
                field="customer_id",
                reason="NO_PAYMENT_METHOD",
            )
        return method


async def settle_outcome(session: AsyncSession, payment: Payment, attempt: PaymentAttempt, outcome: Outcome) -> None:
    """Applies what the provider said of an attempt (its charge's answer, a
    webhook, a lookup) to the attempt and its payment, under the payment's
    lock, and announces a changed payment. A decline schedules dunning
    (dunning.after_decline); a success or a wait for the customer ends any
    schedule."""
    if not attempts.record(attempt, payment, outcome):
        return
    if payment.status == PAYMENT_FAILED:
        await dunning.after_decline(session, payment)
    else:  # collected, or waiting for the customer: no charge is due
        payment.next_attempt_time = None
    await announce(session, payment)


async def link_closed(session: AsyncSession, payment: Payment, paid_by: str) -> None:
    """The payment's link is closed; when the customer paid by it first
    (`paid_by`: the PaymentIntent), that payment is recorded as an attempt of its own."""
    payment.payment_link_id, payment.payment_url = "", ""
    if paid_by:
        await paid_by_link(session, payment, paid_by)


async def paid_by_link(session: AsyncSession, payment: Payment, intent_id: str) -> None:
    """Records a payment link's PaymentIntent as the payment's success (once:
    a second word of the same intent finds its attempt)."""
    query = select(PaymentAttempt).where(
        PaymentAttempt.payment_id == payment.id, PaymentAttempt.provider_payment_id == intent_id
    )
    if (await session.execute(query)).scalar_one_or_none() is not None:
        return
    attempt = attempts.paid_elsewhere(payment, intent_id, PAYMENT_LINK)
    session.add(attempt)
    await settle_outcome(session, payment, attempt, Outcome(SUCCEEDED, intent_id))
