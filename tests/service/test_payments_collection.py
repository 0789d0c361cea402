"""Automatic collection and dunning, driven by test clocks: an invoice
finalized for a customer with a card is paid with no API call; a declined
card is retried on its campaign's days (its customer's clock time), emailed
each time with a payment link, then given up on; the link and a retry never
both collect. What is asserted is what bxb stores and answers, the emails
the local SMTP server receives, and the PaymentIntents at Stripe."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update

from deploy.embedded import free_port
from services.common import db, peers
from services.common.ids import new_id
from services.common.outbox import OutboxRelay
from services.payments.accounts import StripeAccounts
from services.payments.charging import Charging
from services.payments.collection import Collector
from services.payments.models import Outbox, Payment, PaymentAttempt, TestClock
from tests.conftest import Infra, Stack, Tenant, eventually, organization, unique
from tests.service.payments_helpers import PaymentsDb
from tests.service.test_gateway_charge import payment_methods_saved
from tests.service.test_gateway_test_clocks import setup
from tests.smtp import Mailbox
from tests.stripe import DECLINED_CARD, GOOD_CARD, LocalStripe
from tests.stripe_double import StripeDouble
from tests.stripe_events import deliver, event

CAMPAIGN = {
    "code": "standard",
    "name": "Standard",
    "retry_days": [1, 3, 7],
    "max_attempts": 4,
    "send_emails": True,
    "is_default": True,
}


async def clock_customer(tenant: Tenant, stack: Stack, localstripe: LocalStripe, card: str) -> tuple[str, str]:
    """A customer on a test clock at 2025-01-01 with a saved card, subscribed
    to the 49.00-a-month plan: (the clock, its Stripe customer)."""
    h = tenant.http
    if tenant.stripe is None:
        await tenant.connect_stripe()
    clock = await setup(h)
    stripe_customer, method = await localstripe.customer_with_card(card)
    customer = {
        "id": "cust_acme",
        "email": "billing@acme.test",
        "test_clock_id": clock,
        "billing": {"provider": "stripe", "provider_customer_id": stripe_customer},
        "payment_method": {"provider_customer_id": stripe_customer, "provider_payment_method": method},
    }
    assert (await h.post("/v1/customers", json=customer)).status_code == 201
    assert (await h.post("/v1/subscriptions", json={"customer_id": "cust_acme", "plan_code": "pro"})).status_code == 201
    await payment_methods_saved(stack, tenant)
    return clock, stripe_customer


async def advance(tenant: Tenant, clock: str, to: str) -> None:
    moved = await tenant.http.post(f"/v1/test_clocks/{clock}/advance", json={"frozen_time": to})
    assert moved.status_code == 200, moved.text


async def january(tenant: Tenant) -> dict:
    async def billed():
        listed = (await tenant.http.get("/v1/customers/cust_acme/invoices")).json()["invoices"]
        [invoice] = [i for i in listed if i["id"] and i["period_start"].startswith("2025-01")]
        return invoice

    return await eventually(billed)


async def waits(payments_db: PaymentsDb, invoice_id: str, status: str, attempts: int) -> Payment:
    async def settled():
        # The attempts first: the payment read after them holds what their outcomes did to it.
        made = await payments_db.attempts(invoice_id)
        # All the charges awaited are made and the last one's answer is recorded (a charge just begun has
        # counted its attempt on the payment before its row here says more than in_flight).
        assert len(made) == attempts and made[-1].status not in ("in_flight", "unknown")
        payment = await payments_db.payment(invoice_id)
        assert (payment.status, payment.attempt_count) == (status, attempts)
        return payment

    return await eventually(settled, timeout=20)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


async def test_a_customer_with_a_card_is_billed_at_period_end_and_paid_with_no_api_call(
    stack: Stack, tenant: Tenant, localstripe: LocalStripe, payments_db: PaymentsDb
):
    clock, stripe_customer = await clock_customer(tenant, stack, localstripe, GOOD_CARD)
    await advance(tenant, clock, "2025-02-01T00:00:00Z")
    invoice = await january(tenant)

    async def paid():
        assert (await tenant.http.get(f"/v1/invoices/{invoice['id']}")).json()["status"] == "paid"

    await eventually(paid, timeout=20)
    [attempt] = await payments_db.attempts(invoice["id"])
    assert (attempt.status, attempt.trigger) == ("succeeded", "PAYMENT_ATTEMPT_TRIGGER_AUTOMATIC")
    [intent] = await localstripe.intents_of(stripe_customer)
    assert (intent.status, intent.amount, intent.id) == (
        "succeeded",
        invoice["total_amount_cents"],
        attempt.provider_payment_id,
    )
    payment = await payments_db.payment(invoice["id"])
    assert (payment.next_attempt_time, payment.attempt_count) == (None, 1)


async def test_a_declined_card_is_dunned_on_its_clock_and_emailed_until_uncollectible(
    stack: Stack, tenant: Tenant, localstripe: LocalStripe, payments_db: PaymentsDb, mailbox: Mailbox
):
    h = tenant.http
    assert (await h.post("/v1/dunning_campaigns", json=CAMPAIGN)).status_code == 201
    clock, stripe_customer = await clock_customer(tenant, stack, localstripe, DECLINED_CARD)
    sent = len(mailbox.messages)
    await advance(tenant, clock, "2025-02-01T00:00:00Z")
    invoice = await january(tenant)
    first = await waits(payments_db, invoice["id"], "PAYMENT_STATUS_FAILED", 1)
    assert first.next_attempt_time == at("2025-02-02T00:00:00")
    assert first.failure_reason == "card_declined"

    async def linked():
        payment = await payments_db.payment(invoice["id"])
        assert payment.payment_link_id.startswith("cs_")
        assert len(mailbox.messages) == sent + 1

    await eventually(linked, timeout=20)
    # Nothing happens before the day comes, at the clock's time.
    await advance(tenant, clock, "2025-02-01T23:00:00Z")
    assert (await payments_db.payment(invoice["id"])).attempt_count == 1
    await advance(tenant, clock, "2025-02-02T00:00:00Z")
    second = await waits(payments_db, invoice["id"], "PAYMENT_STATUS_FAILED", 2)
    assert second.next_attempt_time == at("2025-02-04T00:00:00")  # day 3 after the first decline
    # A clock jumping past two retry days makes both, one after the other.
    await advance(tenant, clock, "2025-02-09T00:00:00Z")
    given_up = await waits(payments_db, invoice["id"], "PAYMENT_STATUS_UNCOLLECTIBLE", 4)
    assert given_up.next_attempt_time is None
    attempts = await payments_db.attempts(invoice["id"])
    assert [(a.status, a.trigger.removeprefix("PAYMENT_ATTEMPT_TRIGGER_")) for a in attempts] == [
        ("failed", "AUTOMATIC"),
        ("failed", "DUNNING"),
        ("failed", "DUNNING"),
        ("failed", "DUNNING"),
    ]
    assert len(await localstripe.intents_of(stripe_customer)) == 4

    async def emailed():
        # An email per decline still current when its email goes (the clock jumped over two retry days at once,
        # so the first of those may be superseded before it is emailed), the last saying it was given up on.
        mine = [m for m in mailbox.messages[sent:] if "billing@acme.test" in m["To"]]
        assert len(mine) in (3, 4)
        assert mine[-1]["Subject"].startswith("Payment could not be collected")

    await eventually(emailed, timeout=20)
    # Nothing charges it again, however far the clock goes.
    await advance(tenant, clock, "2025-03-01T00:00:00Z")
    assert (await payments_db.payment(invoice["id"])).attempt_count == 4
    assert (await h.get(f"/v1/invoices/{invoice['id']}")).json()["status"] == "finalized"


async def checkout_session(tenant: Tenant, session_id: str) -> dict:
    """A Checkout Session as the organization's own Stripe account has it."""
    return (await tenant.stripe_client().v1.checkout.sessions.retrieve_async(session_id)).to_dict()


async def declined_with_link(
    stack: Stack, tenant: Tenant, localstripe: LocalStripe, payments_db: PaymentsDb
) -> tuple[str, str, dict, Payment]:
    assert (await tenant.http.post("/v1/dunning_campaigns", json=CAMPAIGN)).status_code == 201
    clock, stripe_customer = await clock_customer(tenant, stack, localstripe, DECLINED_CARD)
    await advance(tenant, clock, "2025-02-01T00:00:00Z")
    invoice = await january(tenant)

    async def linked():
        payment = await payments_db.payment(invoice["id"])
        assert payment.payment_link_id
        return payment

    return clock, stripe_customer, invoice, await eventually(linked, timeout=20)


async def test_the_customer_paying_the_link_settles_the_invoice_and_ends_dunning(
    stack: Stack, tenant: Tenant, localstripe: LocalStripe, stripe_double: StripeDouble, payments_db: PaymentsDb
):
    clock, stripe_customer, invoice, payment = await declined_with_link(stack, tenant, localstripe, payments_db)
    assert payment.payment_url.startswith(f"{stripe_double.url}/pay/")
    await stripe_double.complete_checkout(payment.payment_link_id, GOOD_CARD)
    completed = await checkout_session(tenant, payment.payment_link_id)
    signed = event("checkout.session.completed", completed)
    received = await deliver(
        tenant.http, f"/v1/webhooks/stripe/{tenant.organization_id}", signed, tenant.stripe.webhook_secret
    )
    assert received.status_code == 200, received.text
    paid = await payments_db.payment(invoice["id"])
    assert (paid.status, paid.next_attempt_time, paid.payment_link_id) == ("PAYMENT_STATUS_SUCCEEDED", None, "")
    assert paid.provider_payment_id == completed["payment_intent"]
    await advance(tenant, clock, "2025-02-10T00:00:00Z")
    attempts = await payments_db.attempts(invoice["id"])
    assert [(a.status, a.trigger) for a in attempts] == [
        ("failed", "PAYMENT_ATTEMPT_TRIGGER_AUTOMATIC"),
        ("succeeded", "PAYMENT_ATTEMPT_TRIGGER_PAYMENT_LINK"),
    ]
    # The intent of the link, whose own webhook comes too, is the same success.
    intent = (await localstripe.intent(completed["payment_intent"])).to_dict()
    path = f"/v1/webhooks/stripe/{tenant.organization_id}"
    assert (
        await deliver(tenant.http, path, event("payment_intent.succeeded", intent), tenant.stripe.webhook_secret)
    ).status_code == 200
    assert len(await payments_db.attempts(invoice["id"])) == 2
    assert len(await localstripe.intents_of(stripe_customer)) == 2  # the declined charge and the link's


async def test_a_link_paid_without_word_is_found_before_the_retry_charges(
    stack: Stack, tenant: Tenant, localstripe: LocalStripe, stripe_double: StripeDouble, payments_db: PaymentsDb
):
    clock, stripe_customer, invoice, payment = await declined_with_link(stack, tenant, localstripe, payments_db)
    await stripe_double.complete_checkout(payment.payment_link_id, GOOD_CARD)  # its webhook never arrives
    await advance(tenant, clock, "2025-02-02T00:00:00Z")
    paid = await waits(payments_db, invoice["id"], "PAYMENT_STATUS_SUCCEEDED", 2)
    assert paid.payment_link_id == ""
    assert len(await localstripe.intents_of(stripe_customer)) == 2  # no retry was charged

    async def invoice_paid():
        assert (await tenant.http.get(f"/v1/invoices/{invoice['id']}")).json()["status"] == "paid"

    await eventually(invoice_paid)


async def test_a_retry_expires_the_unpaid_link_first(
    stack: Stack, tenant: Tenant, localstripe: LocalStripe, stripe_double: StripeDouble, payments_db: PaymentsDb
):
    clock, _, invoice, payment = await declined_with_link(stack, tenant, localstripe, payments_db)
    link = payment.payment_link_id
    await advance(tenant, clock, "2025-02-02T00:00:00Z")
    await waits(payments_db, invoice["id"], "PAYMENT_STATUS_FAILED", 2)
    assert (await checkout_session(tenant, link))["status"] == "expired"
    # The customer can no longer pay the old link; the new decline has its own.

    async def relinked():
        assert (await payments_db.payment(invoice["id"])).payment_link_id not in ("", link)

    await eventually(relinked, timeout=20)


async def test_dunning_campaigns_are_listed_checked_and_replaced_as_default(tenant: Tenant):
    h = tenant.http
    created = await h.post("/v1/dunning_campaigns", json=CAMPAIGN)
    assert created.status_code == 201
    assert {k: created.json()[k] for k in CAMPAIGN} == CAMPAIGN
    again = await h.post("/v1/dunning_campaigns", json=CAMPAIGN)
    assert (again.status_code, again.json()["error"]["field"]) == (409, "code")
    for bad, field in [
        ({"retry_days": [3, 1]}, "retry_days"),
        ({"retry_days": [1, 1]}, "retry_days"),
        ({"max_attempts": 5}, "max_attempts"),
        ({"retry_days": []}, "retry_days"),
        ({"retry_days": [0]}, "retry_days[0]"),
    ]:
        refused = await h.post("/v1/dunning_campaigns", json={**CAMPAIGN, "code": "other", **bad})
        assert (refused.status_code, refused.json()["error"]["field"]) == (400, field), refused.text
    lenient = {"code": "lenient", "retry_days": [2, 5], "is_default": True}
    made = (await h.post("/v1/dunning_campaigns", json=lenient)).json()
    assert (made["max_attempts"], made["send_emails"]) == (3, False)  # one charge and one per retry day
    listed = (await h.get("/v1/dunning_campaigns")).json()["dunning_campaigns"]
    assert [(c["code"], c["is_default"]) for c in listed] == [("standard", False), ("lenient", True)]
    assert (await h.get("/v1/dunning_campaigns/standard")).json()["retry_days"] == [1, 3, 7]
    assert (await h.delete("/v1/dunning_campaigns/standard")).status_code == 204
    assert (await h.get("/v1/dunning_campaigns/standard")).status_code == 404
    assert (await h.delete("/v1/dunning_campaigns/standard")).status_code == 404


async def test_deleting_a_campaign_stops_its_retries(
    stack: Stack, tenant: Tenant, localstripe: LocalStripe, payments_db: PaymentsDb
):
    clock, _, invoice, _ = await declined_with_link(stack, tenant, localstripe, payments_db)
    assert (await tenant.http.delete("/v1/dunning_campaigns/standard")).status_code == 204
    payment = await payments_db.payment(invoice["id"])
    assert (payment.status, payment.next_attempt_time, payment.dunning_campaign_id) == (
        "PAYMENT_STATUS_FAILED",
        None,
        "",
    )
    await advance(tenant, clock, "2025-02-10T00:00:00Z")
    assert (await payments_db.payment(invoice["id"])).attempt_count == 1


async def test_a_customer_without_a_method_leaves_collection_and_without_a_campaign_is_not_dunned(
    stack: Stack, tenant: Tenant, localstripe: LocalStripe, payments_db: PaymentsDb
):
    h = tenant.http
    await tenant.connect_stripe()
    clock = await setup(h)
    customer = {"id": "cust_acme", "test_clock_id": clock, "billing": {"provider": "stripe"}}
    assert (await h.post("/v1/customers", json=customer)).status_code == 201
    assert (await h.post("/v1/subscriptions", json={"customer_id": "cust_acme", "plan_code": "pro"})).status_code == 201
    await advance(tenant, clock, "2025-02-01T00:00:00Z")
    invoice = await january(tenant)

    async def dropped():
        payment = await payments_db.payment(invoice["id"])
        assert (payment.status, payment.next_attempt_time, payment.attempt_count) == ("PAYMENT_STATUS_PENDING", None, 0)

    await eventually(dropped, timeout=20)


class Direct:
    """Payments rows made directly, to sweep with a collector of the test's own."""

    def __init__(self, payments_db: PaymentsDb):
        self.db = payments_db
        self.org = unique("org")
        self.created = False

    async def payment(
        self, customer: str, status: str, due: datetime | None, attempts: int = 1, clock: str = ""
    ) -> str:
        if not self.created:  # the services act only for organizations that exist
            await organization(self.db.stack, self.org)
            self.created = True
        payment_id = new_id("pay")
        async with self.db.sessions() as session, session.begin():
            session.add(
                Payment(
                    id=payment_id,
                    organization_id=self.org,
                    invoice_id=new_id("inv"),
                    customer_id=customer,
                    amount_cents=100,
                    currency="USD",
                    status=status,
                    next_attempt_time=due,
                    attempt_count=attempts,
                    test_clock_id=clock,
                )
            )
        return payment_id


async def test_due_payments_are_those_whose_customer_s_time_has_come(payments_db: PaymentsDb):
    rows = Direct(payments_db)
    now = datetime.now(UTC)
    due = await rows.payment("cust_a", "PAYMENT_STATUS_FAILED", now - timedelta(minutes=1))
    first = await rows.payment("cust_b", "PAYMENT_STATUS_PENDING", now - timedelta(minutes=1), attempts=0)
    await rows.payment("cust_a", "PAYMENT_STATUS_FAILED", now + timedelta(hours=1))  # not yet
    await rows.payment("cust_a", "PAYMENT_STATUS_SUCCEEDED", now - timedelta(hours=1))  # collected
    await rows.payment("cust_c", "PAYMENT_STATUS_FAILED", now - timedelta(days=1), clock="clock_unknown")
    async with payments_db.sessions() as session, session.begin():
        session.add(TestClock(id=unique("clock"), organization_id=rows.org, frozen_time=now - timedelta(days=30)))
    # A customer disputing a charge is not dunned meanwhile; its first charges still are.
    disputed_retry = await rows.payment("cust_b", "PAYMENT_STATUS_FAILED", now - timedelta(minutes=2))
    await rows.payment("cust_b", "PAYMENT_STATUS_DISPUTED", None)
    collector = Collector(payments_db.sessions, charging=None, batch=1000)
    found = {payment_id for payment_id, _ in await collector.due()}
    assert {due, first} <= found
    assert disputed_retry not in found
    assert all(payment_id.startswith("pay_") for payment_id in found)


async def test_a_sweep_keeps_what_a_dependency_down_left_due_and_survives_a_database_it_cannot_reach(
    payments_db: PaymentsDb, infra: Infra, caplog
):
    rows = Direct(payments_db)
    due = await rows.payment("cust_a", "PAYMENT_STATUS_FAILED", datetime.now(UTC) - timedelta(minutes=1))
    nowhere = peers.Invoicing(f"127.0.0.1:{free_port()}", timeout=0.5)
    relay = OutboxRelay(payments_db.sessions, Outbox, payments_db.bus)
    charging = Charging(payments_db.sessions, relay, nowhere, StripeAccounts())
    collector = Collector(payments_db.sessions, charging, batch=1000)
    await collector.sweep()
    async with payments_db.sessions() as session:
        assert (await session.get_one(Payment, due)).next_attempt_time is not None  # still due
    async with payments_db.sessions() as session, session.begin():
        await session.execute(update(Payment).where(Payment.id == due).values(next_attempt_time=None))
    await nowhere.close()
    closed = db.create_engine(f"postgresql://postgres@127.0.0.1:{free_port()}/x")
    broken = Collector(db.sessions(closed), charging, interval=0.01)
    with caplog.at_level("ERROR", logger="bxb.payments.collection"):
        broken.start()

        async def logged():
            assert "collection sweep failed" in caplog.text

        await eventually(logged)
        await broken.stop()
    await closed.dispose()
    async with payments_db.sessions() as session:
        assert (await session.execute(select(PaymentAttempt).where(PaymentAttempt.payment_id == due))).first() is None


async def test_an_invoice_finalized_before_its_customer_is_linked_is_collected_once_it_is(
    stack: Stack, tenant: Tenant, localstripe: LocalStripe, payments_db: PaymentsDb
):
    h = tenant.http
    clock = await setup(h)  # no Stripe account connected yet: the customer waits to be linked
    stripe_customer, method = await localstripe.customer_with_card(GOOD_CARD)
    customer = {
        "id": "cust_acme",
        "test_clock_id": clock,
        "billing": {"provider": "stripe", "provider_customer_id": stripe_customer},
        "payment_method": {"provider_customer_id": stripe_customer, "provider_payment_method": method},
    }
    assert (await h.post("/v1/customers", json=customer)).status_code == 201
    assert (await h.post("/v1/subscriptions", json={"customer_id": "cust_acme", "plan_code": "pro"})).status_code == 201
    await advance(tenant, clock, "2025-02-01T00:00:00Z")
    invoice = await january(tenant)

    async def scheduled():
        payment = await payments_db.payment(invoice["id"])
        assert (payment.status, payment.attempt_count) == ("PAYMENT_STATUS_PENDING", 0)
        assert payment.next_attempt_time is not None  # still due: its customer is only waiting
        return payment

    await eventually(scheduled)
    await advance(tenant, clock, "2025-02-01T01:00:00Z")  # a sweep meets the customer still pending
    await scheduled()
    await tenant.connect_stripe()  # its customer is linked, its card saved: the next sweep charges it
    await waits(payments_db, invoice["id"], "PAYMENT_STATUS_SUCCEEDED", 1)
    assert len(await localstripe.intents_of(stripe_customer)) == 1
