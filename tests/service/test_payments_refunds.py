"""Refunds at Stripe, exactly once: a refund credit note recorded (never sent
by the handler), sent by the refunder with its key, looked up when its answer
was lost or its process died, reconciled by Stripe's webhooks.

Each test has a payments database of its own (migrated), so the stack's own
refunder never takes its refunds, and a payment whose charge is a real
PaymentIntent at localstripe; what is asserted is what localstripe holds
(the refunds of that PaymentIntent) and what bxb stores and announces."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import timedelta
from types import SimpleNamespace

import httpx
import pytest
import stripe
from sqlalchemy import select, update

from bxb.invoicing.v1 import credit_notes_pb2, events_pb2
from bxb.payments.v1 import events_pb2 as payments_events_pb2
from bxb.payments.v1 import payments_pb2 as pb
from services.common import bus, db, sealing
from services.common.ids import new_id
from services.common.outbox import OutboxRelay
from services.common.timestamps import utcnow
from services.payments.accounts import SECRET_KEY_PURPOSE, WEBHOOK_SECRET_PURPOSE, StripeAccounts
from services.payments.models import Outbox, Payment, PaymentAttempt, ProviderAccount, Refund
from services.payments.refunder import Refunder
from services.payments.refunds import Refunds
from services.payments.server import MIGRATIONS
from services.payments.stripe_amounts import minor_units
from services.payments.stripe_charges import StripeCharges
from services.payments.stripe_refunds import refund_outcome, settle_refund
from tests.conftest import Infra, unique
from tests.stripe import LocalStripe, StripeProxy

PENDING, SUCCEEDED, FAILED = "REFUND_STATUS_PENDING", "REFUND_STATUS_SUCCEEDED", "REFUND_STATUS_FAILED"


class OneAccount(StripeAccounts):
    """Every organization's Stripe account is `account` (a Stripe that answers as a test needs)."""

    def __init__(self, account: object):
        super().__init__()
        self.account = account

    async def charges(self, org: str, session: object = None) -> StripeCharges:
        return self.account  # type: ignore[return-value]


class RefundsDb:
    """A payments database of the test's own, its refunds handler and refunders."""

    def __init__(self, url: str, localstripe: LocalStripe):
        self.engine = db.create_engine(url, pool_size=4)
        self.sessions = db.sessions(self.engine)
        self.relay = OutboxRelay(self.sessions, Outbox, bus.Bus("nats://127.0.0.1:1", unique("unopened")))
        self.localstripe = localstripe
        self.woken = 0

    def wake(self) -> None:
        self.woken += 1

    def refunds(self) -> Refunds:
        return Refunds(self.sessions, self.relay, self.wake)

    def refunder(self, api_base: str = "", timeout: float = 10.0, **options) -> Refunder:
        """A refunder calling each organization's own account at `api_base` (localstripe by default)."""
        accounts = StripeAccounts(self.sessions, api_base or self.localstripe.url, timeout)
        options = {"retry_after": 0.0, **options}
        return Refunder(self.sessions, self.relay, accounts, **options)

    async def paid(self, amount: int = 10000, currency: str = "USD", at_stripe: bool = True) -> Payment:
        """A succeeded payment of a new organization, charged at localstripe
        (in Stripe's units: the payment's amount rounded down) unless not `at_stripe`."""
        org, invoice_id = new_id("org"), new_id("inv")
        payment = Payment(
            id=new_id("pay"),
            organization_id=org,
            invoice_id=invoice_id,
            customer_id="cust_acme",
            amount_cents=amount,
            currency=currency,
            status="PAYMENT_STATUS_SUCCEEDED",
        )
        async with self.sessions() as session, session.begin():
            session.add(payment)
            session.add(  # the organization's own Stripe account: localstripe takes any secret key
                ProviderAccount(
                    organization_id=org,
                    provider="stripe",
                    account_id="acct_localstripe",
                    livemode=False,
                    secret_key_sealed=sealing.seal(LocalStripe.api_key, org, SECRET_KEY_PURPOSE),
                    webhook_secret_sealed=sealing.seal("whsec_unused", org, WEBHOOK_SECRET_PURPOSE),
                    secret_key_hint="sk_test_...",
                )
            )
            if at_stripe:
                customer, method = await self.localstripe.customer_with_card()
                provider_amount = amount - amount % (10 if currency in ("KWD", "BHD") else 1)
                intent = await self.localstripe.client().v1.payment_intents.create_async(
                    params={
                        "amount": provider_amount,
                        "currency": currency.lower(),
                        "customer": customer,
                        "payment_method": method,
                        "confirm": True,
                        "off_session": True,
                    }
                )
                assert intent.status == "succeeded"
                payment.provider_payment_id = intent.id
                await session.flush()
                attempt_id = new_id("att")
                session.add(
                    PaymentAttempt(
                        id=attempt_id,
                        organization_id=org,
                        payment_id=payment.id,
                        invoice_id=invoice_id,
                        idempotency_key=f"bxb-{attempt_id}",
                        amount_cents=amount,
                        provider_amount=provider_amount,
                        uncharged_cents=amount - provider_amount,
                        currency=currency,
                        provider_customer_id=customer,
                        provider_payment_method=method,
                        status="succeeded",
                        provider_payment_id=intent.id,
                        claim_token="t",
                        claim_time=utcnow(),
                    )
                )
        return payment

    async def refund(self, payment: Payment, amount: int, kind=credit_notes_pb2.CREDIT_NOTE_KIND_REFUND) -> str:
        """A refund credit note of `amount` on the payment's invoice, as invoicing announces it: its id."""
        event = credit_note(payment, amount, kind)
        await self.refunds().created(event)
        return event.credit_note.id

    async def rows(self, payment: Payment) -> list[Refund]:
        async with self.sessions() as session:
            query = select(Refund).where(Refund.payment_id == payment.id).order_by(Refund.create_time)
            return list((await session.execute(query)).scalars())

    async def payment(self, payment: Payment) -> Payment:
        async with self.sessions() as session:
            return await session.get_one(Payment, payment.id)

    async def announced(self, payment: Payment) -> list[tuple[str, int]]:
        """The payment_updated events announced for the payment: (status, refunded amount)."""
        query = select(Outbox.c.payload).where(Outbox.c.organization_id == payment.organization_id)
        async with self.sessions() as session:
            payloads = (await session.execute(query.order_by(Outbox.c.id))).scalars()
            events = [payments_events_pb2.PaymentUpdated.FromString(p).payment for p in payloads]
        return [(pb.PaymentStatus.Name(p.status), p.refunded_amount_cents) for p in events]

    async def at_stripe(self, payment: Payment) -> list[dict]:
        """The refunds of the payment's PaymentIntent, as localstripe lists them (JSON)."""
        async with httpx.AsyncClient(base_url=self.localstripe.url, auth=(LocalStripe.api_key, "")) as client:
            answer = await client.get("/v1/refunds", params={"payment_intent": payment.provider_payment_id})
        assert answer.status_code == 200, answer.text
        return answer.json()["data"]


def credit_note(payment: Payment, amount: int, kind=credit_notes_pb2.CREDIT_NOTE_KIND_REFUND):
    note = credit_notes_pb2.CreditNote(
        id=new_id("cn"),
        invoice_id=payment.invoice_id,
        customer_id=payment.customer_id,
        currency=payment.currency,
        kind=kind,
        amount_cents=amount,
    )
    return events_pb2.CreditNoteCreated(
        event_id=new_id("evt"), organization_id=payment.organization_id, credit_note=note
    )


def charge_of(payment: Payment, refunds: list[dict]) -> dict:
    """The Charge of a `charge.refunded` webhook: its PaymentIntent and refunds."""
    return {
        "id": "ch_x",
        "object": "charge",
        "payment_intent": payment.provider_payment_id,
        "refunds": {"data": refunds},
    }


@pytest.fixture
async def refunds_db(infra: Infra, localstripe: LocalStripe) -> AsyncIterator[RefundsDb]:
    url = await infra.database(unique("refunds"))
    await db.migrate(url, MIGRATIONS)
    handle = RefundsDb(url, localstripe)
    yield handle
    await handle.engine.dispose()


async def test_a_refund_credit_note_refunds_once_at_stripe_redelivered_and_with_two_refunders(refunds_db: RefundsDb):
    payment = await refunds_db.paid(4750)
    event = credit_note(payment, 4750)
    handler = refunds_db.refunds()
    await handler.created(event)
    await handler.created(event)  # redelivered: changes nothing
    [refund] = await refunds_db.rows(payment)
    assert (refund.status, refund.sent, refund.idempotency_key) == (PENDING, False, f"bxb-refund-{refund.id}")
    assert (refund.amount_cents, refund.provider_amount, refund.currency) == (4750, 4750, "USD")
    assert (refund.provider_payment_id, refund.credit_note_id) == (payment.provider_payment_id, event.credit_note.id)
    assert await refunds_db.at_stripe(payment) == []  # the handler never calls Stripe
    assert refunds_db.woken == 1

    first, second = refunds_db.refunder(), refunds_db.refunder()
    assert sorted(await asyncio.gather(first.run_once(), second.run_once())) == [0, 1]
    [at_stripe] = await refunds_db.at_stripe(payment)
    assert (at_stripe["amount"], at_stripe["status"]) == (4750, "succeeded")
    assert at_stripe["metadata"] == {
        "bxb_organization_id": payment.organization_id,
        "bxb_refund_id": refund.id,
        "bxb_credit_note_id": event.credit_note.id,
        "bxb_invoice_id": payment.invoice_id,
    }
    [refund] = await refunds_db.rows(payment)
    assert (refund.status, refund.sent, refund.provider_refund_id) == (SUCCEEDED, True, at_stripe["id"])
    assert refund.next_attempt_time is None
    paid = await refunds_db.payment(payment)
    assert (paid.status, paid.refunded_amount_cents) == ("PAYMENT_STATUS_REFUNDED", 4750)
    assert await refunds_db.announced(payment) == [("PAYMENT_STATUS_REFUNDED", 4750)]

    await handler.created(event)  # redelivered after it was refunded
    assert await first.run_once() == 0
    assert len(await refunds_db.at_stripe(payment)) == 1
    assert len(await refunds_db.rows(payment)) == 1


@pytest.mark.parametrize("mode", ["drop", "error", "stall"])
async def test_a_refund_whose_answer_is_lost_is_retried_with_its_key_and_refunds_once(
    refunds_db: RefundsDb, localstripe: LocalStripe, mode: str
):
    payment = await refunds_db.paid(4750)
    await refunds_db.refund(payment, 1000)
    async with StripeProxy(localstripe, faulted="POST /v1/refunds") as proxy:
        proxy.mode = mode
        faulted = refunds_db.refunder(proxy.url, timeout=0.5)
        assert await faulted.run_once() == 1
        [refund] = await refunds_db.rows(payment)
        assert (refund.status, refund.sent, refund.provider_refund_id) == (PENDING, True, "")
        assert len(await refunds_db.at_stripe(payment)) == (1 if mode == "drop" else 0)
        proxy.mode = "pass"
        assert await faulted.run_once() == 1  # due again at once (retry_after 0): looked up, then made if missing
    [at_stripe] = await refunds_db.at_stripe(payment)
    assert (at_stripe["amount"], at_stripe["metadata"]["bxb_refund_id"]) == (1000, refund.id)
    [refund] = await refunds_db.rows(payment)
    assert (refund.status, refund.provider_refund_id) == (SUCCEEDED, at_stripe["id"])
    paid = await refunds_db.payment(payment)
    assert (paid.status, paid.refunded_amount_cents) == ("PAYMENT_STATUS_PARTIALLY_REFUNDED", 1000)


async def test_an_unknown_outcome_waits_retry_after_and_a_claim_waits_its_lease(refunds_db: RefundsDb):
    payment = await refunds_db.paid(4750)
    await refunds_db.refund(payment, 4750)
    nowhere = Refunder(refunds_db.sessions, refunds_db.relay, StripeAccounts(), retry_after=3600)
    assert await nowhere.run_once() == 1  # no Stripe account for the organization: retried later
    [refund] = await refunds_db.rows(payment)
    assert (refund.status, refund.sent) == (PENDING, True)
    assert refund.next_attempt_time > utcnow() + timedelta(seconds=3000)
    assert await refunds_db.refunder().run_once() == 0  # not due yet
    assert await refunds_db.at_stripe(payment) == []


async def test_a_refunder_that_died_after_sending_is_taken_over_and_refunds_once(refunds_db: RefundsDb):
    payment = await refunds_db.paid(4750)
    await refunds_db.refund(payment, 2000)
    await refunds_db.refund(payment, 2750)
    dead = refunds_db.refunder(stale_after=0.3)
    first, _ = await dead._claim()  # claimed and committed; then the process dies...
    account = StripeCharges(LocalStripe.api_key, refunds_db.localstripe.url)
    await settle_refund(account, first.request)  # ...after Stripe refunded the first one, before recording it
    assert await refunds_db.refunder().run_once() == 0  # the dead one's lease holds
    await asyncio.sleep(0.4)
    assert await refunds_db.refunder().run_once() == 2  # taken over: the first looked up, the second made
    at_stripe = await refunds_db.at_stripe(payment)
    assert sorted(r["amount"] for r in at_stripe) == [2000, 2750]
    refunds = await refunds_db.rows(payment)
    assert {r.status for r in refunds} == {SUCCEEDED}
    assert {r.provider_refund_id for r in refunds} == {r["id"] for r in at_stripe}
    assert (await refunds_db.payment(payment)).status == "PAYMENT_STATUS_REFUNDED"


async def test_a_webhook_settling_a_refund_before_its_sender_records_it_wins(refunds_db: RefundsDb):
    payment = await refunds_db.paid(4750)
    await refunds_db.refund(payment, 4750)
    refunder = refunds_db.refunder()
    [claim] = await refunder._claim()
    account = StripeCharges(LocalStripe.api_key, refunds_db.localstripe.url)
    outcome = await settle_refund(account, claim.request)  # Stripe refunded; its answer is on its way back...
    [at_stripe] = await refunds_db.at_stripe(payment)
    await refunds_db.refunds().handlers()["charge.refunded"](
        payment.organization_id, charge_of(payment, [at_stripe]), 1
    )
    await refunder._record(claim, outcome)  # ...and arrives after the webhook: nothing more changes
    [refund] = await refunds_db.rows(payment)
    assert (refund.status, refund.provider_refund_id) == (SUCCEEDED, at_stripe["id"])
    assert await refunds_db.announced(payment) == [("PAYMENT_STATUS_REFUNDED", 4750)]


@pytest.mark.parametrize(
    ("currency", "amount", "first", "second", "provider"),
    [
        ("JPY", 10000, 3000, 7000, [3000, 7000]),  # zero-decimal: yen are Stripe's units
        ("KWD", 10000, 3000, 7000, [3000, 7000]),  # three-decimal: fils, multiples of 10 at Stripe
        ("BHD", 10005, 3000, 7005, [3000, 7000]),  # 5 fils were never charged (Stripe's multiple of 10)
    ],
)
async def test_partial_refunds_then_the_rest_in_stripe_s_units(
    refunds_db: RefundsDb, currency: str, amount: int, first: int, second: int, provider: list[int]
):
    payment = await refunds_db.paid(amount, currency)
    refunder = refunds_db.refunder()
    await refunds_db.refund(payment, first)
    assert await refunder.run_once() == 1
    paid = await refunds_db.payment(payment)
    assert (paid.status, paid.refunded_amount_cents) == ("PAYMENT_STATUS_PARTIALLY_REFUNDED", first)
    await refunds_db.refund(payment, second)
    assert await refunder.run_once() == 1
    paid = await refunds_db.payment(payment)
    assert (paid.status, paid.refunded_amount_cents) == ("PAYMENT_STATUS_REFUNDED", amount)
    at_stripe = await refunds_db.at_stripe(payment)
    assert sorted(r["amount"] for r in at_stripe) == provider
    assert {r["currency"] for r in at_stripe} == {currency.lower()}
    assert [(r.amount_cents, r.provider_amount) for r in await refunds_db.rows(payment)] == list(
        zip([first, second], provider, strict=True)
    )
    assert await refunds_db.announced(payment) == [
        ("PAYMENT_STATUS_PARTIALLY_REFUNDED", first),
        ("PAYMENT_STATUS_REFUNDED", amount),
    ]


async def test_what_stripe_cannot_give_back_is_given_back_at_once_and_other_notes_change_nothing(
    refunds_db: RefundsDb, caplog: pytest.LogCaptureFixture
):
    outside = await refunds_db.paid(4750, at_stripe=False)  # collected without a charge at Stripe
    await refunds_db.refund(outside, 4750)
    [refund] = await refunds_db.rows(outside)
    assert (refund.status, refund.sent, refund.provider_refund_id, refund.provider_payment_id) == (
        SUCCEEDED,
        False,
        "",
        "",
    )
    assert await refunds_db.announced(outside) == [("PAYMENT_STATUS_REFUNDED", 4750)]
    tiny = await refunds_db.paid(10005, "KWD")
    await refunds_db.refund(tiny, 5)  # below Stripe's smallest KWD amount: never charged, nothing to refund
    [refund] = await refunds_db.rows(tiny)
    assert (refund.status, refund.provider_amount, refund.sent) == (SUCCEEDED, 0, False)
    assert await refunds_db.refunder().run_once() == 0
    assert await refunds_db.at_stripe(tiny) == []
    assert await refunds_db.announced(tiny) == [("PAYMENT_STATUS_PARTIALLY_REFUNDED", 5)]

    await refunds_db.refund(tiny, 100, kind=credit_notes_pb2.CREDIT_NOTE_KIND_CREDIT)  # a credit gives nothing back
    await refunds_db.refund(tiny, 0)
    assert len(await refunds_db.rows(tiny)) == 1
    unknown = Payment(
        id="pay_x", organization_id=tiny.organization_id, invoice_id="inv_unknown", customer_id="c", currency="USD"
    )
    with caplog.at_level(logging.WARNING, "bxb.payments.refunds"):
        await refunds_db.refund(unknown, 100)
    assert "invoice inv_unknown has no payment here" in caplog.text


async def test_a_refund_stripe_refuses_fails_and_the_payment_stays_collected(refunds_db: RefundsDb):
    payment = await refunds_db.paid(4750)
    await refunds_db.refund(payment, 4750)
    async with refunds_db.sessions() as session, session.begin():  # a PaymentIntent Stripe does not know
        await session.execute(update(Refund).where(Refund.payment_id == payment.id).values(provider_payment_id="pi_x"))
    assert await refunds_db.refunder().run_once() == 1
    [refund] = await refunds_db.rows(payment)
    assert (refund.status, refund.provider_refund_id) == (FAILED, "")
    assert refund.failure_message == "Not Found"  # localstripe's words for an unknown PaymentIntent
    paid = await refunds_db.payment(payment)
    assert (paid.status, paid.refunded_amount_cents) == ("PAYMENT_STATUS_SUCCEEDED", 0)
    assert await refunds_db.announced(payment) == []


async def test_a_refund_stripe_has_not_finished_is_read_back_later(refunds_db: RefundsDb):
    payment = await refunds_db.paid(4750)
    await refunds_db.refund(payment, 4750)
    pending = stripe.Refund.construct_from({"id": "re_pending", "status": "pending"}, "sk")

    async def create_async(params, options):
        return pending

    refunds = SimpleNamespace(create_async=create_async)
    account = StripeCharges(LocalStripe.api_key, timeout=5.0)  # a Stripe that answers a refund still pending
    account.client = SimpleNamespace(v1=SimpleNamespace(refunds=refunds))
    waiting = Refunder(refunds_db.sessions, refunds_db.relay, OneAccount(account), pending_poll=3600)
    assert await waiting.run_once() == 1
    [refund] = await refunds_db.rows(payment)
    assert (refund.status, refund.provider_refund_id) == (PENDING, "re_pending")
    assert refund.next_attempt_time > utcnow() + timedelta(seconds=3000)


def test_stripe_s_refund_statuses():
    def outcome(**fields):
        return refund_outcome(stripe.Refund.construct_from({"id": "re_x", **fields}, "sk"))

    assert outcome(status="succeeded").status == "succeeded"
    assert outcome(status="pending").status == outcome(status="requires_action").status == "pending"
    assert (outcome(status="failed", failure_reason="expired_or_canceled_card").message) == "expired_or_canceled_card"
    assert (outcome(status="canceled").status, outcome(status="canceled").message) == (
        "failed",
        "the refund is canceled",
    )
    assert [minor_units(1000, c) for c in ("USD", "JPY", "KWD", "MGA", "ISK", "IQD")] == [
        1000,
        1000,
        1000,
        100000,
        10,
        10000,
    ]


async def test_charge_refunded_settles_a_refund_whose_answer_was_lost(refunds_db: RefundsDb, localstripe: LocalStripe):
    payment = await refunds_db.paid(4750)
    await refunds_db.refund(payment, 4750)
    async with StripeProxy(localstripe, faulted="POST /v1/refunds") as proxy:
        proxy.mode = "drop"
        assert await refunds_db.refunder(proxy.url, retry_after=3600).run_once() == 1
    [at_stripe] = await refunds_db.at_stripe(payment)
    handlers = refunds_db.refunds().handlers()
    # An older event first (pending): Stripe's id is learned, the refund waits.
    await handlers["charge.refund.updated"](payment.organization_id, {**at_stripe, "status": "pending"}, 1)
    [refund] = await refunds_db.rows(payment)
    assert (refund.status, refund.provider_refund_id) == (PENDING, at_stripe["id"])
    charge = charge_of(payment, [at_stripe])
    await handlers["charge.refunded"](payment.organization_id, charge, 2)
    await handlers["charge.refunded"](payment.organization_id, charge, 2)  # redelivered
    await handlers["refund.updated"](payment.organization_id, {**at_stripe, "status": "pending"}, 1)  # out of order
    [refund] = await refunds_db.rows(payment)
    assert (refund.status, refund.provider_refund_id) == (SUCCEEDED, at_stripe["id"])
    assert await refunds_db.announced(payment) == [("PAYMENT_STATUS_REFUNDED", 4750)]
    assert len(await refunds_db.at_stripe(payment)) == 1

    # Stripe may fail a refund that had succeeded (the card was closed): the money is back with the customer.
    failed = {**at_stripe, "status": "failed", "failure_reason": "expired_or_canceled_card"}
    await handlers["refund.failed"](payment.organization_id, failed, 3)
    await handlers["refund.updated"](payment.organization_id, at_stripe, 2)  # never back to succeeded
    [refund] = await refunds_db.rows(payment)
    assert (refund.status, refund.failure_message) == (FAILED, "expired_or_canceled_card")
    assert (await refunds_db.payment(payment)).status == "PAYMENT_STATUS_SUCCEEDED"


async def test_a_refund_that_reached_stripe_is_read_back_by_its_id(refunds_db: RefundsDb, localstripe: LocalStripe):
    payment = await refunds_db.paid(4750)
    await refunds_db.refund(payment, 4750)
    async with StripeProxy(localstripe, faulted="POST /v1/refunds") as proxy:
        proxy.mode = "drop"
        assert await refunds_db.refunder(proxy.url).run_once() == 1
    [at_stripe] = await refunds_db.at_stripe(payment)
    # Its webhook (expanded PaymentIntent) tells only that it is pending: Stripe's id is learned.
    charge = {
        **charge_of(payment, [{**at_stripe, "status": "pending"}]),
        "payment_intent": {"id": at_stripe["payment_intent"]},
    }
    await refunds_db.refunds().handlers()["charge.refunded"](payment.organization_id, charge, 1)
    assert await refunds_db.refunder().run_once() == 1  # read back by id: succeeded
    [refund] = await refunds_db.rows(payment)
    assert (refund.status, refund.provider_refund_id) == (SUCCEEDED, at_stripe["id"])
    assert len(await refunds_db.at_stripe(payment)) == 1


async def test_refunds_made_at_stripe_are_recorded_and_other_charges_change_nothing(
    refunds_db: RefundsDb, caplog: pytest.LogCaptureFixture
):
    payment = await refunds_db.paid(10000, "KWD")
    other = await refunds_db.paid(10000)
    client = refunds_db.localstripe.client()
    await client.v1.refunds.create_async(params={"payment_intent": payment.provider_payment_id, "amount": 2500})
    [dashboard] = await refunds_db.at_stripe(payment)
    handlers = refunds_db.refunds().handlers()
    charge = charge_of(payment, [dashboard])

    # Another organization's charge, an unknown one, a refund naming an unknown bxb refund, no refunds listed.
    await handlers["charge.refunded"](other.organization_id, charge, 1)
    await handlers["charge.refunded"](payment.organization_id, {**charge, "payment_intent": "pi_unknown"}, 1)
    await handlers["charge.refunded"](payment.organization_id, {**charge, "payment_intent": None}, 1)
    await handlers["charge.refunded"](payment.organization_id, charge_of(payment, [{**dashboard, "id": ""}]), 1)
    named = {**dashboard, "metadata": {"bxb_refund_id": "rfd_unknown"}}
    await handlers["charge.refunded"](payment.organization_id, charge_of(payment, [named]), 1)
    await handlers["charge.refunded"](payment.organization_id, {"id": "ch_x", "payment_intent": "pi_x"}, 1)
    assert await refunds_db.rows(payment) == await refunds_db.rows(other) == []
    assert await refunds_db.announced(payment) == []

    with caplog.at_level(logging.WARNING, "bxb.payments.refunds"):
        await handlers["charge.refunded"](payment.organization_id, charge, 2)
        await handlers["charge.refund.updated"](payment.organization_id, dashboard, 2)  # the same refund
        await handlers["refund.created"](payment.organization_id, dashboard, 1)
    assert "was made at Stripe, not by a credit note" in caplog.text
    [refund] = await refunds_db.rows(payment)
    assert (refund.credit_note_id, refund.status, refund.provider_refund_id) == ("", SUCCEEDED, dashboard["id"])
    assert (refund.amount_cents, refund.provider_amount, refund.currency, refund.sent) == (2500, 2500, "KWD", True)
    assert refund.provider_payment_id == payment.provider_payment_id
    assert await refunds_db.announced(payment) == [("PAYMENT_STATUS_PARTIALLY_REFUNDED", 2500)]
    assert await refunds_db.refunder().run_once() == 0  # nothing to send

    # A refund credit note afterwards still refunds its own amount, and the two make the whole.
    await refunds_db.refund(payment, 7500)
    assert await refunds_db.refunder().run_once() == 1
    paid = await refunds_db.payment(payment)
    assert (paid.status, paid.refunded_amount_cents) == ("PAYMENT_STATUS_REFUNDED", 10000)


async def test_the_refunder_loop_drains_due_refunds_wakes_and_survives_errors(
    refunds_db: RefundsDb, infra: Infra, caplog: pytest.LogCaptureFixture
):
    payment = await refunds_db.paid(4750)
    await refunds_db.refund(payment, 1000)
    await refunds_db.refund(payment, 1000)
    await refunds_db.refund(payment, 1000)
    refunder = refunds_db.refunder(interval=60, batch=2)
    refunder.start()
    try:

        async def refunded(count: int) -> None:
            for _ in range(200):
                if (await refunds_db.payment(payment)).refunded_amount_cents == 1000 * count:
                    assert len(await refunds_db.at_stripe(payment)) == count
                    return
                await asyncio.sleep(0.05)
            raise AssertionError(f"not {count} refunds")

        await refunded(3)  # two batches at once, without waiting the interval
        await refunds_db.refund(payment, 1000)
        refunder.wake()
        await refunded(4)
    finally:
        await refunder.stop()
    assert (await refunds_db.payment(payment)).refunded_amount_cents == 4000

    broken = db.create_engine(infra.postgres.url(unique("missing")), pool_size=1)
    failing = Refunder(db.sessions(broken), refunds_db.relay, StripeAccounts(), interval=0.01)
    with caplog.at_level(logging.ERROR, "bxb.payments.refunder"):
        failing.start()
        for _ in range(200):
            if "refunder failed" in caplog.text:
                break
            await asyncio.sleep(0.05)
        await failing.stop()
    await broken.dispose()
    assert "refunder failed; retrying on the next tick" in caplog.text
