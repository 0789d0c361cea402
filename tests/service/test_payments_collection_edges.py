"""Collection at its edges: real Stripe's answer to an off-session charge
needing 3-D Secure (a decline the customer settles through the payment
link), a charge on request meeting an automatic one at Stripe, a collector
meeting a charge under way or a payment not due any more, payment links
Stripe cannot make or close, and payment emails that cannot or need not go."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update

from bxb.payments.v1 import events_pb2
from deploy.embedded import free_port
from services.common import peers
from services.common.errors import FailedPrecondition, Unavailable
from services.common.ids import new_id
from services.common.timestamps import utcnow
from services.payments.accounts import StripeAccounts
from services.payments.charging import PAYMENT_UPDATED
from services.payments.collection import Collector
from services.payments.links import LinkRequest, PaymentLinks
from services.payments.models import Payment, PaymentAttempt, PaymentNotice
from services.payments.notices import Notices
from services.payments.payments import payment_proto
from tests.conftest import PAYMENT_RETURN_URL, Stack, Tenant, eventually
from tests.service.payments_helpers import PaymentsDb
from tests.service.test_payments_collection import (
    CAMPAIGN,
    Direct,
    advance,
    checkout_session,
    clock_customer,
    declined_with_link,
    january,
)
from tests.service.test_payments_faults import customer_invoice
from tests.stripe import AUTHENTICATED_CARD, DECLINED_CARD, GOOD_CARD, LocalStripe
from tests.stripe_double import StripeDouble
from tests.stripe_events import deliver, event


async def test_an_off_session_charge_needing_3d_secure_waits_for_the_customer_who_pays_by_the_link(
    stack: Stack,
    tenant: Tenant,
    localstripe: LocalStripe,
    stripe_double: StripeDouble,
    payments_db: PaymentsDb,
    mailbox,
):
    stripe_double.off_session_3ds = "decline"  # as real Stripe answers: 402 authentication_required
    try:
        assert (await tenant.http.post("/v1/dunning_campaigns", json=CAMPAIGN)).status_code == 201
        clock, _ = await clock_customer(tenant, stack, localstripe, AUTHENTICATED_CARD)
        sent = len(mailbox.messages)
        await advance(tenant, clock, "2025-02-01T00:00:00Z")
        invoice = await january(tenant)

        async def waiting():
            payment = await payments_db.payment(invoice["id"])
            assert (payment.status, payment.failure_reason) == (
                "PAYMENT_STATUS_REQUIRES_ACTION",
                "authentication_required",
            )
            assert payment.payment_url.startswith(f"{stripe_double.url}/pay/")
            return payment

        payment = await eventually(waiting, timeout=20)
        assert payment.next_attempt_time is None  # charging it again off session would be declined again

        async def emailed():
            assert len(mailbox.messages) == sent + 1

        await eventually(emailed, timeout=20)

        async def shown_on_the_invoice():  # invoicing hears of it through payment_updated
            shown = (await tenant.http.get(f"/v1/invoices/{invoice['id']}")).json()
            assert (shown["payment_status"], shown["payment_url"]) == ("requires_action", payment.payment_url)

        await eventually(shown_on_the_invoice)
        await stripe_double.complete_checkout(payment.payment_link_id, AUTHENTICATED_CARD, three_d_secure="succeed")
        completed = await checkout_session(tenant, payment.payment_link_id)
        path = f"/v1/webhooks/stripe/{tenant.organization_id}"
        signed = event("checkout.session.completed", completed)
        assert (await deliver(tenant.http, path, signed, tenant.stripe.webhook_secret)).status_code == 200

        async def paid():
            shown = (await tenant.http.get(f"/v1/invoices/{invoice['id']}")).json()
            assert (shown["status"], shown["payment_status"]) == ("paid", "succeeded")

        await eventually(paid)
    finally:
        stripe_double.off_session_3ds = "requires_action"


async def test_a_charge_on_request_waits_for_the_automatic_one_at_stripe_and_answers_it(
    stack: Stack, tenant: Tenant, localstripe: LocalStripe, stripe_double: StripeDouble, payments_db: PaymentsDb
):
    clock, stripe_customer = await clock_customer(tenant, stack, localstripe, GOOD_CARD)
    stripe_double.mode = "hold"
    try:
        await advance(tenant, clock, "2025-02-01T00:00:00Z")
        invoice = await january(tenant)
        await asyncio.wait_for(stripe_double.arrived.wait(), 20)
        waiting = asyncio.create_task(tenant.http.post(f"/v1/invoices/{invoice['id']}/charge"))
        # Another charge on request that will not wait is refused meanwhile.
        impatient = payments_db.charging(wait_for_collection=0)
        with pytest.raises(FailedPrecondition, match="under way"):
            await impatient.charge(tenant.organization_id, invoice["id"])
        await asyncio.sleep(0.3)
        assert not waiting.done()
        stripe_double.mode = "pass"
        stripe_double.release.set()
        answer = await waiting
    finally:
        stripe_double.mode = "pass"
        stripe_double.release.set()
        stripe_double.arrived.clear()
    assert answer.status_code == 200, answer.text
    [intent] = await localstripe.intents_of(stripe_customer)
    assert answer.json()["payment_intent"] == intent.id
    stripe_double.release.clear()


async def test_the_collector_leaves_alone_what_is_not_due_and_drops_what_is_under_way(
    stack: Stack, tenant: Tenant, localstripe: LocalStripe, payments_db: PaymentsDb, caplog
):
    clock, _, invoice, payment = await declined_with_link(stack, tenant, localstripe, payments_db)
    charging = payments_db.charging()
    # Its retry is due tomorrow at the clock's time: nothing is charged today.
    assert await charging.collect(payment.id) is None
    # A charge under way at Stripe when the retry comes due: the collector drops its schedule.
    async with payments_db.sessions() as session, session.begin():
        session.add(
            PaymentAttempt(
                id=new_id("att"),
                organization_id=tenant.organization_id,
                payment_id=payment.id,
                invoice_id=invoice["id"],
                idempotency_key=new_id("key"),
                amount_cents=4900,
                provider_amount=4900,
                uncharged_cents=0,
                currency="USD",
                provider_customer_id="cus_x",
                provider_payment_method="pm_x",
                status="in_flight",
                claim_token="someone",
                claim_time=utcnow(),
                trigger="PAYMENT_ATTEMPT_TRIGGER_MANUAL",
            )
        )
    with caplog.at_level("INFO", logger="bxb.payments.collection"):
        await advance(tenant, clock, "2025-02-02T00:00:00Z")

        async def dropped():
            assert (await payments_db.payment(invoice["id"])).next_attempt_time is None
            assert "leaves automatic collection" in caplog.text

        await eventually(dropped, timeout=20)
    assert await charging.collect(payment.id) is None  # nothing scheduled


async def test_a_full_batch_is_followed_at_once_by_the_next(payments_db: PaymentsDb, stack: Stack):
    rows = Direct(payments_db)
    past = datetime.now(UTC) - timedelta(minutes=1)
    made = [await rows.payment("cust_a", "PAYMENT_STATUS_PENDING", past, attempts=0) for _ in range(3)]
    collector = Collector(payments_db.sessions, payments_db.charging(), interval=60, batch=1)
    collector.start()

    async def all_dropped():  # their invoices do not exist: each leaves collection
        async with payments_db.sessions() as session:
            for payment_id in made:
                assert (await session.get_one(Payment, payment_id)).next_attempt_time is None

    await eventually(all_dropped, timeout=20)
    await collector.stop()


async def test_a_decline_of_a_real_time_customer_is_retried_on_the_calendar(
    stack: Stack, tenant: Tenant, localstripe: LocalStripe, payments_db: PaymentsDb
):
    lenient = {"code": "calendar", "retry_days": [2], "send_emails": False}
    assert (await tenant.http.post("/v1/dunning_campaigns", json=lenient)).status_code == 201
    assert (
        await tenant.http.post("/v1/dunning_campaigns", json={**lenient, "code": "main", "is_default": True})
    ).status_code == 201
    _, invoice = await customer_invoice(stack, tenant, localstripe, card=DECLINED_CARD)
    before = datetime.now(UTC)
    assert (await tenant.http.post(f"/v1/invoices/{invoice['id']}/charge")).status_code == 402
    payment = await payments_db.payment(invoice["id"])
    assert payment.next_attempt_time is not None
    assert before + timedelta(days=2) <= payment.next_attempt_time <= datetime.now(UTC) + timedelta(days=2)


def link_request(payment: Payment, customer: str = "cus_x") -> LinkRequest:
    return LinkRequest(
        organization_id=payment.organization_id,
        payment_id=payment.id,
        invoice_id=payment.invoice_id,
        attempt_count=payment.attempt_count,
        amount=4900,
        currency="USD",
        customer=customer,
        return_url=PAYMENT_RETURN_URL,
    )


async def test_payment_links_stripe_cannot_make_or_close_are_unavailable(stripe_double: StripeDouble):
    # The default organization's shortcut account (BXB_STRIPE_API_KEY), on the double.
    links = PaymentLinks(StripeAccounts(None, stripe_double.url, 5, default_api_key=LocalStripe.api_key))
    payment = Payment(id=new_id("pay"), organization_id="org_default", invoice_id="inv_x", attempt_count=1)
    stripe_double.faulted, stripe_double.mode = "POST /v1/checkout/sessions", "error"
    try:
        with pytest.raises(Unavailable, match="could not make the payment link"):
            await links.create(link_request(payment))
    finally:
        stripe_double.faulted, stripe_double.mode = "POST /v1/payment_intents", "pass"
    with pytest.raises(Unavailable, match="could not be closed"):
        await links.close("org_default", "cs_test_unknown")


async def test_closing_a_link_twice_finds_it_expired_and_unpaid(stripe_double: StripeDouble, localstripe: LocalStripe):
    links = PaymentLinks(StripeAccounts(None, stripe_double.url, 5, default_api_key=LocalStripe.api_key))
    payment = Payment(id=new_id("pay"), organization_id="org_default", invoice_id="inv_x", attempt_count=1)
    customer, _ = await localstripe.customer_with_card()
    link_id, url = await links.create(link_request(payment, customer))
    assert url.endswith(link_id)
    assert await links.close("org_default", link_id) == ""  # expired now
    # Closed again (another replica, a retry): Stripe refuses to expire it, and it was never paid.
    assert await links.close("org_default", link_id) == ""


def notices_of(payments_db: PaymentsDb, invoicing: peers.Invoicing, return_url: str = PAYMENT_RETURN_URL) -> Notices:
    """The payment notices as another payments process sends them."""
    charging = payments_db.charging()
    return Notices(payments_db.sessions, charging.relay, invoicing, charging.links, return_url)


def announced(payment: Payment, org: str | None = None) -> bytes:
    return events_pb2.PaymentUpdated(
        event_id=new_id("evt"), organization_id=org or payment.organization_id, payment=payment_proto(payment)
    ).SerializeToString()


async def test_payment_emails_go_only_where_they_can_and_are_wanted(
    stack: Stack, tenant: Tenant, localstripe: LocalStripe, stripe_double: StripeDouble, payments_db: PaymentsDb
):
    _, _, _, payment = await declined_with_link(stack, tenant, localstripe, payments_db)
    notices = notices_of(payments_db, payments_db.invoicing)
    await notices.handle("bxb.payments.v1.something_else", b"")
    await notices.handle(PAYMENT_UPDATED, announced(payment, org="org_other"))  # not this organization's
    succeeded = Payment(**{c.name: getattr(payment, c.name) for c in Payment.__table__.columns})
    succeeded.status = "PAYMENT_STATUS_SUCCEEDED"
    await notices.handle(PAYMENT_UPDATED, announced(succeeded))  # no email for a success
    # The notice of this decline is sent: the same announcement sends nothing more.

    async def noticed():
        async with payments_db.sessions() as session:
            assert await session.get(PaymentNotice, (payment.id, 1, "INVOICE_EMAIL_KIND_PAYMENT_FAILED")) is not None

    await eventually(noticed, timeout=20)
    async with payments_db.sessions() as session:
        stored = await session.get_one(Payment, payment.id)
    await notices.handle(PAYMENT_UPDATED, announced(stored))
    # Without a way back for the customer there is no link, and no payment email.
    async with payments_db.sessions() as session, session.begin():
        await session.execute(
            update(Payment).where(Payment.id == payment.id).values(payment_link_id="", payment_url="", attempt_count=2)
        )
        stored = await session.get_one(Payment, payment.id)
    bare = notices_of(payments_db, payments_db.invoicing, return_url="")
    await bare.handle(PAYMENT_UPDATED, announced(stored))
    async with payments_db.sessions() as session:
        assert await session.get(PaymentNotice, (payment.id, 2, "INVOICE_EMAIL_KIND_PAYMENT_FAILED")) is None
    # Invoicing down: the notice is retried (the consumer redelivers it).
    nowhere = peers.Invoicing(f"127.0.0.1:{free_port()}", timeout=0.5)
    with pytest.raises(Unavailable, match="could not send the payment email"):
        await notices_of(payments_db, nowhere).handle(PAYMENT_UPDATED, announced(stored))
    await nowhere.close()
    # A link made for a decline the payment has moved past is expired at once, never stored.
    moved = Payment(**{c.name: getattr(stored, c.name) for c in Payment.__table__.columns})
    moved.attempt_count = 1
    charged = (await payments_db.attempts(payment.invoice_id))[0].provider_customer_id
    assert await notices._link(moved, charged) == ""
    # Its campaign gone (or sending no emails), a decline is not emailed.
    assert (await tenant.http.delete("/v1/dunning_campaigns/standard")).status_code == 204
    async with payments_db.sessions() as session:
        stored = await session.get_one(Payment, payment.id)
    await notices.handle(PAYMENT_UPDATED, announced(stored))
    quiet = {**CAMPAIGN, "code": "quiet", "send_emails": False}
    assert (await tenant.http.post("/v1/dunning_campaigns", json=quiet)).status_code == 201
    await notices.handle(PAYMENT_UPDATED, announced(stored))
    async with payments_db.sessions() as session:
        assert await session.get(PaymentNotice, (payment.id, 2, "INVOICE_EMAIL_KIND_PAYMENT_FAILED")) is None


async def test_a_payment_email_for_an_invoice_no_longer_owed_is_skipped(
    stack: Stack, tenant: Tenant, localstripe: LocalStripe, payments_db: PaymentsDb, caplog
):
    _, _, invoice, payment = await declined_with_link(stack, tenant, localstripe, payments_db)
    assert (await tenant.http.post(f"/v1/invoices/{invoice['id']}/void")).status_code == 200
    # An announcement of its decline handled late (a fresh charge count, so not yet emailed):
    # invoicing refuses the email of a voided invoice (409); it is not retried.
    async with payments_db.sessions() as session, session.begin():
        await session.execute(
            update(Payment).where(Payment.id == payment.id).values(status="PAYMENT_STATUS_FAILED", attempt_count=3)
        )
        stored = await session.get_one(Payment, payment.id)
    with caplog.at_level("INFO", logger="bxb.payments.notices"):
        await notices_of(payments_db, payments_db.invoicing).handle(PAYMENT_UPDATED, announced(stored))
    assert "takes no payment email now" in caplog.text


async def test_a_link_paid_after_another_was_stored_and_a_link_intent_of_no_payment(
    stack: Stack, tenant: Tenant, localstripe: LocalStripe, payments_db: PaymentsDb
):
    _, _, invoice, payment = await declined_with_link(stack, tenant, localstripe, payments_db)
    path = f"/v1/webhooks/stripe/{tenant.organization_id}"
    intent_only = {"id": "pi_link_of_nothing", "object": "payment_intent", "metadata": {"bxb_payment_id": "pay_none"}}
    signed = event("payment_intent.succeeded", intent_only)
    assert (await deliver(tenant.http, path, signed, tenant.stripe.webhook_secret)).status_code == 200
    # A session other than the stored link completing (an older link) still pays the invoice, once.
    session_of_other = {
        "id": "cs_test_not_the_stored_one",
        "object": "checkout.session",
        "payment_intent": "pi_paid_by_an_older_link",
        "metadata": {"bxb_payment_id": payment.id, "bxb_organization_id": tenant.organization_id},
    }
    signed = event("checkout.session.completed", session_of_other)
    assert (await deliver(tenant.http, path, signed, tenant.stripe.webhook_secret)).status_code == 200
    paid = await payments_db.payment(invoice["id"])
    assert (paid.status, paid.provider_payment_id) == ("PAYMENT_STATUS_SUCCEEDED", "pi_paid_by_an_older_link")
    assert paid.payment_link_id == payment.payment_link_id  # the stored link: expired by the next charge, if any


async def test_collectors_racing_a_charge_on_request_make_one_payment_intent(
    stack: Stack, tenant: Tenant, localstripe: LocalStripe, stripe_double: StripeDouble, payments_db: PaymentsDb
):
    stripe_customer, invoice = await customer_invoice(stack, tenant, localstripe)  # collected on request only
    payment = await eventually(lambda: payments_db.payment(invoice["id"]))  # made when payments hears of the invoice
    collectors = [Collector(payments_db.sessions, payments_db.charging()) for _ in range(2)]
    async with payments_db.sessions() as session, session.begin():  # due now, for every replica's collector
        await session.execute(update(Payment).where(Payment.id == payment.id).values(next_attempt_time=utcnow()))
    outcomes = await asyncio.gather(
        *(collector.sweep() for collector in collectors),
        tenant.http.post(f"/v1/invoices/{invoice['id']}/charge"),
        return_exceptions=True,
    )
    answer = outcomes[-1]
    assert answer.status_code == 200, answer.text
    [intent] = await localstripe.intents_of(stripe_customer)
    assert answer.json()["payment_intent"] == intent.id
    assert [a.status for a in await payments_db.attempts(invoice["id"])] == ["succeeded"]
    assert (await payments_db.payment(invoice["id"])).next_attempt_time is None


async def test_a_link_s_intent_announced_before_its_session_is_one_success(
    stack: Stack, tenant: Tenant, localstripe: LocalStripe, stripe_double: StripeDouble, payments_db: PaymentsDb
):
    _, _, invoice, payment = await declined_with_link(stack, tenant, localstripe, payments_db)
    await stripe_double.complete_checkout(payment.payment_link_id, GOOD_CARD)
    completed = await checkout_session(tenant, payment.payment_link_id)
    intent = (await localstripe.intent(completed["payment_intent"])).to_dict()
    path = f"/v1/webhooks/stripe/{tenant.organization_id}"
    # payment_intent.succeeded first: the link's intent, of no attempt yet, pays the invoice...
    signed = event("payment_intent.succeeded", intent)
    assert (await deliver(tenant.http, path, signed, tenant.stripe.webhook_secret)).status_code == 200
    # ...and checkout.session.completed after it finds that success: nothing more.
    signed = event("checkout.session.completed", completed)
    assert (await deliver(tenant.http, path, signed, tenant.stripe.webhook_secret)).status_code == 200
    paid = await payments_db.payment(invoice["id"])
    assert (paid.status, paid.payment_link_id) == ("PAYMENT_STATUS_SUCCEEDED", "")
    assert [(a.status, a.provider_payment_id) for a in await payments_db.attempts(invoice["id"])][1:] == [
        ("succeeded", intent["id"])
    ]


class Overtaken(PaymentLinks):
    """Closes a link at Stripe while another process, meanwhile, stores a newer link on the payment."""

    def __init__(self, links: PaymentLinks, payments_db: PaymentsDb, payment_id: str):
        super().__init__(links.accounts)
        self.db, self.payment_id = payments_db, payment_id

    async def close(self, org: str, link_id: str) -> str:
        paid_by = await super().close(org, link_id)
        async with self.db.sessions() as session, session.begin():
            await session.execute(
                update(Payment).where(Payment.id == self.payment_id).values(payment_link_id="cs_test_newer")
            )
        return paid_by


async def test_a_link_replaced_meanwhile_is_left_to_whoever_replaced_it(
    stack: Stack, tenant: Tenant, localstripe: LocalStripe, payments_db: PaymentsDb
):
    _, _, invoice, payment = await declined_with_link(stack, tenant, localstripe, payments_db)
    charging = payments_db.charging(wait_for_collection=0)
    charging.links = Overtaken(charging.links, payments_db, payment.id)
    # A charge on request closes the old link; the newer one stays for its own closer, and the charge waits its turn.
    async with payments_db.sessions() as session, session.begin():
        await session.execute(update(Payment).where(Payment.id == payment.id).values(next_attempt_time=None))
    with pytest.raises(Unavailable, match="could not be closed"):
        await charging.charge(tenant.organization_id, invoice["id"])  # cs_test_newer is no session at Stripe
    assert (await payments_db.payment(invoice["id"])).payment_link_id == "cs_test_newer"
    assert len(await payments_db.attempts(invoice["id"])) == 1
