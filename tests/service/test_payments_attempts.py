"""Payment attempts as durable records: stored before Stripe is called,
taken over and looked up at Stripe when their process died or their outcome
is unknown, never charged twice. Read from the payments database itself."""

from __future__ import annotations

import asyncio
import logging

import grpc
import pytest
from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError

from bxb.payments.v1 import payments_pb2 as pb
from bxb.payments.v1 import payments_pb2_grpc
from deploy.embedded import free_port
from services.common import db, grpc_server, peers
from services.common.errors import FailedPrecondition, error_info
from services.common.ids import new_id
from services.common.timestamps import utcnow
from services.payments import server as payments_server
from services.payments.accounts import StripeAccounts
from services.payments.charging import Charging
from services.payments.models import Payment, PaymentAttempt
from services.payments.recovery import Recovery
from services.payments.stripe_charges import REJECTED, IntentRequest, StripeCharges
from tests.conftest import Infra, Stack, Tenant, eventually, start, unique
from tests.service.payments_helpers import PaymentsDb
from tests.service.test_gateway_charge import payments
from tests.service.test_payments_faults import charge, customer_invoice, deleted_at_stripe, payments_through, refused
from tests.stripe import AUTHENTICATED_CARD, DECLINED_CARD, LocalStripe, StripeProxy


async def test_the_attempt_is_committed_before_stripe_is_called_and_no_lock_is_held(
    stack: Stack, infra: Infra, tenant: Tenant, localstripe: LocalStripe, payments_db: PaymentsDb
):
    stripe_customer, invoice = await customer_invoice(stack, tenant, localstripe)
    async with StripeProxy(localstripe) as proxy, payments_through(stack, infra, proxy) as stub:
        proxy.mode = "hold"
        charging = asyncio.create_task(charge(stub, tenant, invoice))
        await asyncio.wait_for(proxy.arrived.wait(), 10)
        [attempt] = await payments_db.attempts(invoice["id"])
        assert (attempt.status, attempt.idempotency_key) == ("in_flight", f"bxb-{attempt.id}")
        assert (attempt.amount_cents, attempt.provider_amount, attempt.uncharged_cents) == (4750, 4750, 0)
        assert (attempt.currency, attempt.provider_customer_id) == ("USD", stripe_customer)
        async with payments_db.sessions() as session, session.begin():  # the payment row is free meanwhile
            locked = select(Payment).where(Payment.invoice_id == invoice["id"]).with_for_update(nowait=True)
            assert (await session.execute(locked)).scalar_one().status == "PAYMENT_STATUS_PENDING"
        proxy.release.set()
        paid = await charging
    [attempt] = await payments_db.attempts(invoice["id"])
    assert (attempt.status, attempt.provider_payment_id) == ("succeeded", paid.provider_payment_id)
    intent = await localstripe.intent(paid.provider_payment_id)
    assert intent.metadata.to_dict() == {
        "bxb_attempt_id": attempt.id,
        "bxb_invoice_id": invoice["id"],
        "bxb_organization_id": tenant.organization_id,
    }


async def test_what_rounding_leaves_uncharged_is_recorded_on_the_attempt(
    stack: Stack, tenant: Tenant, localstripe: LocalStripe, payments_db: PaymentsDb
):
    _, invoice = await customer_invoice(stack, tenant, localstripe, currency="KWD", calls=85010)
    assert (await tenant.http.post(f"/v1/invoices/{invoice['id']}/charge")).status_code == 200
    [attempt] = await payments_db.attempts(invoice["id"])
    assert (attempt.amount_cents, attempt.provider_amount, attempt.uncharged_cents) == (47505, 47500, 5)


async def stop_mid_call(stack: Stack, infra: Infra, tenant: Tenant, proxy: StripeProxy, invoice: dict) -> None:
    """A payments process stopped (its call cancelled) while its creation waits at the proxy."""
    proxy.accounts.update(stack.stripe.accounts)
    service = payments_server.build(
        payments_server.Settings(
            "",
            infra.postgres.url("payments"),
            infra.nats.url,
            stack.invoicing,
            stripe_api_base=proxy.url,
        )
    )
    server, address = await start(service)
    async with grpc.aio.insecure_channel(address) as channel:
        stub = payments_pb2_grpc.PaymentServiceStub(channel)
        calling = asyncio.create_task(charge(stub, tenant, invoice))
        await asyncio.wait_for(proxy.arrived.wait(), 10)
        await grpc_server.stop(service, server, grace=0)
        with pytest.raises(grpc.aio.AioRpcError):
            await calling


async def test_a_process_dying_after_stripe_charged_leaves_an_attempt_the_sweep_records(
    stack: Stack, infra: Infra, tenant: Tenant, localstripe: LocalStripe, payments_db: PaymentsDb
):
    h = tenant.http
    stripe_customer, invoice = await customer_invoice(stack, tenant, localstripe)
    async with StripeProxy(localstripe) as proxy:
        proxy.mode = "hold"
        await stop_mid_call(stack, infra, tenant, proxy, invoice)
        proxy.release.set()  # Stripe gets the request after all, and charges

        async def charged():
            assert proxy.forwarded == 1

        await eventually(charged)
    [attempt] = await payments_db.attempts(invoice["id"])
    assert attempt.status == "in_flight"  # nobody recorded what Stripe did
    # A fresh claim is its holder's: charging now is refused, not a second charge.
    busy = await h.post(f"/v1/invoices/{invoice['id']}/charge")
    assert (busy.status_code, busy.json()["error"]["reason"]) == (409, "PAYMENT_IN_PROGRESS")
    charging = payments_db.charging(stale_after=0)
    await Recovery(charging, interval=60).sweep()
    [intent] = await localstripe.intents_of(stripe_customer)
    [attempt] = await payments_db.attempts(invoice["id"])
    assert (attempt.status, attempt.provider_payment_id) == ("succeeded", intent.id)
    assert await payments(stack, tenant, invoice["id"]) == [("PAYMENT_STATUS_SUCCEEDED", 4750)]

    async def paid():
        assert (await h.get(f"/v1/invoices/{invoice['id']}")).json()["status"] == "paid"

    await eventually(paid)
    assert await charging.resume(attempt.payment_id) is None  # settled: nothing left to look up


async def test_a_charge_that_never_reached_stripe_is_made_once_with_its_own_key(
    stack: Stack, infra: Infra, tenant: Tenant, localstripe: LocalStripe, payments_db: PaymentsDb, caplog
):
    stripe_customer, invoice = await customer_invoice(stack, tenant, localstripe)
    async with StripeProxy(localstripe) as proxy:
        proxy.mode = "stall"
        await stop_mid_call(stack, infra, tenant, proxy, invoice)
    assert proxy.forwarded == 0
    # Stripe unreachable: the attempt stays open, for the next sweep.
    nowhere = f"http://127.0.0.1:{free_port()}"
    with caplog.at_level(logging.WARNING, logger="bxb.payments.recovery"):
        await Recovery(payments_db.charging(nowhere, stale_after=0), interval=60).sweep()
    assert "stays open" in caplog.text
    [attempt] = await payments_db.attempts(invoice["id"])
    assert (attempt.status, attempt.failure_reason) == ("unknown", "unreachable")
    await Recovery(payments_db.charging(stale_after=0), interval=60).sweep()
    [intent] = await localstripe.intents_of(stripe_customer)
    assert (intent.status, intent.metadata["bxb_attempt_id"]) == ("succeeded", attempt.id)
    [settled] = await payments_db.attempts(invoice["id"])
    assert (settled.id, settled.status, settled.provider_payment_id) == (attempt.id, "succeeded", intent.id)


async def test_a_holder_whose_claim_was_taken_over_records_nothing(
    stack: Stack, infra: Infra, tenant: Tenant, localstripe: LocalStripe, payments_db: PaymentsDb
):
    stripe_customer, invoice = await customer_invoice(stack, tenant, localstripe)
    async with StripeProxy(localstripe) as proxy, payments_through(stack, infra, proxy) as stub:
        proxy.mode = "hold"
        slow = asyncio.create_task(charge(stub, tenant, invoice))
        await asyncio.wait_for(proxy.arrived.wait(), 10)
        # Another process takes the attempt over as abandoned, and settles it at Stripe.
        await Recovery(payments_db.charging(stale_after=0), interval=60).sweep()
        proxy.mode = "error"  # the slow holder's request then fails
        proxy.release.set()
        late = await slow
    assert late.status == pb.PAYMENT_STATUS_SUCCEEDED  # what the new holder recorded, untouched
    [intent] = await localstripe.intents_of(stripe_customer)
    [attempt] = await payments_db.attempts(invoice["id"])
    assert (attempt.status, attempt.provider_payment_id) == ("succeeded", intent.id)


async def test_an_unreachable_holder_answers_in_progress_when_its_claim_was_taken_over(
    stack: Stack, infra: Infra, tenant: Tenant, localstripe: LocalStripe, payments_db: PaymentsDb
):
    _, invoice = await customer_invoice(stack, tenant, localstripe)
    async with StripeProxy(localstripe) as proxy, payments_through(stack, infra, proxy) as stub:
        proxy.mode = "hold"
        slow = asyncio.create_task(refused(stub, tenant, invoice))
        await asyncio.wait_for(proxy.arrived.wait(), 10)
        async with payments_db.sessions() as session, session.begin():  # as a takeover in progress leaves it
            await session.execute(
                update(PaymentAttempt).where(PaymentAttempt.invoice_id == invoice["id"]).values(claim_token="other")
            )
        proxy.mode = "error"
        proxy.release.set()
        late = await slow
    assert (late.code(), error_info(late).reason) == (grpc.StatusCode.FAILED_PRECONDITION, "PAYMENT_IN_PROGRESS")
    [attempt] = await payments_db.attempts(invoice["id"])
    assert (attempt.status, attempt.claim_token) == ("in_flight", "other")


def refusal(error: grpc.aio.AioRpcError) -> tuple[str, str]:
    """A refused charge's reason and message, checked to be a FAILED_PRECONDITION on the payment method."""
    info = error_info(error)
    assert (error.code(), info.metadata["field"]) == (grpc.StatusCode.FAILED_PRECONDITION, "payment_method")
    assert info.metadata["payment_id"].startswith("pay_") and "provider_payment_id" in info.metadata
    return info.reason, error.details()


async def test_a_decline_whose_answer_was_lost_is_found_and_recorded_as_a_decline(
    stack: Stack, infra: Infra, tenant: Tenant, localstripe: LocalStripe, payments_db: PaymentsDb
):
    stripe_customer, invoice = await customer_invoice(stack, tenant, localstripe, card=DECLINED_CARD)
    async with StripeProxy(localstripe) as proxy, payments_through(stack, infra, proxy) as stub:
        first = await refused(stub, tenant, invoice)  # declined: its failed charge stays at Stripe
        assert refusal(first) == ("PAYMENT_FAILED", "Your card was declined.")
        proxy.mode = "drop"
        assert (await refused(stub, tenant, invoice)).code() == grpc.StatusCode.UNAVAILABLE
        found = await refused(stub, tenant, invoice)  # looked up among the customer's charges, the first one's too
    assert refusal(found) == ("PAYMENT_FAILED", "Your card was declined.")
    assert len(await localstripe.intents_of(stripe_customer)) == 2
    declined, lost = await payments_db.attempts(invoice["id"])
    assert (declined.status, declined.failure_reason) == ("failed", "card_declined")
    assert (lost.status, lost.failure_reason) == ("failed", "card_declined")
    assert lost.provider_payment_id.startswith("pi_")


async def test_over_grpc_a_payment_waiting_for_the_customer_is_an_error_too(
    stack: Stack, tenant: Tenant, localstripe: LocalStripe, payments_db: PaymentsDb
):
    """The rule the REST route's 402 follows lives in the service: a gRPC
    caller is told the same, and the payment is recorded first."""
    stripe_customer, invoice = await customer_invoice(stack, tenant, localstripe, card=AUTHENTICATED_CARD)
    async with stack.channel("payments") as channel:
        error = await refused(payments_pb2_grpc.PaymentServiceStub(channel), tenant, invoice)
    reason, message = refusal(error)
    [intent] = await localstripe.intents_of(stripe_customer)
    assert (reason, intent.id in message, error_info(error).metadata["provider_payment_id"]) == (
        "PAYMENT_REQUIRES_ACTION",
        True,
        intent.id,
    )
    assert await payments(stack, tenant, invoice["id"]) == [("PAYMENT_STATUS_REQUIRES_ACTION", 4750)]


async def test_an_intent_waiting_for_the_customer_is_read_back_by_id(
    stack: Stack, tenant: Tenant, localstripe: LocalStripe, payments_db: PaymentsDb
):
    h = tenant.http
    stripe_customer, invoice = await customer_invoice(stack, tenant, localstripe, card=AUTHENTICATED_CARD)
    assert (await h.post(f"/v1/invoices/{invoice['id']}/charge")).status_code == 402
    [waiting] = await payments_db.attempts(invoice["id"])
    assert waiting.status == "requires_action"
    # Its intent is not done yet (still unconfirmed): the outcome stays unknown, nothing new is made.
    _, method = await localstripe.customer_with_card()
    pending = await localstripe.client().v1.payment_intents.create_async(
        params={"amount": 4750, "currency": "usd", "customer": stripe_customer, "payment_method": method}
    )
    async with payments_db.sessions() as session, session.begin():
        await session.execute(
            update(PaymentAttempt).where(PaymentAttempt.id == waiting.id).values(provider_payment_id=pending.id)
        )
    unknown = await h.post(f"/v1/invoices/{invoice['id']}/charge")
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (503, "UNAVAILABLE")
    [attempt] = await payments_db.attempts(invoice["id"])
    assert (attempt.status, attempt.failure_message) == ("unknown", "the payment intent is requires_confirmation")
    # The customer gave up: the intent is canceled, the attempt failed, and the next charge is a new attempt.
    await localstripe.client().v1.payment_intents.cancel_async(pending.id)
    gave_up = await h.post(f"/v1/invoices/{invoice['id']}/charge")
    assert (gave_up.status_code, gave_up.json()["error"]["reason"]) == (402, "PAYMENT_FAILED")
    assert gave_up.json()["error"]["message"] == "the payment intent is canceled"
    again = await h.post(f"/v1/invoices/{invoice['id']}/charge")
    assert (again.status_code, again.json()["error"]["reason"]) == (402, "PAYMENT_REQUIRES_ACTION")
    assert [a.status for a in await payments_db.attempts(invoice["id"])] == ["failed", "requires_action"]


async def test_a_rejected_request_is_kept_on_its_attempt(
    stack: Stack, tenant: Tenant, localstripe: LocalStripe, payments_db: PaymentsDb
):
    _, invoice = await deleted_at_stripe(stack, tenant, localstripe)
    assert (await tenant.http.post(f"/v1/invoices/{invoice['id']}/charge")).status_code == 409
    [attempt] = await payments_db.attempts(invoice["id"])
    # Stripe's code for a missing object, as the double (like Stripe) gives it.
    assert (attempt.status, attempt.failure_reason, attempt.failure_message) == (
        "rejected",
        "resource_missing",
        "Not Found",
    )
    payment = await payments_db.payment(invoice["id"])
    assert (payment.status, payment.failure_message) == ("PAYMENT_STATUS_PENDING", "")


async def test_a_key_stripe_refuses_is_a_rejection_not_an_outage(localstripe: LocalStripe):
    refused_key = StripeCharges("pk_test_not_a_secret_key", localstripe.url)
    stripe_customer, method = await localstripe.customer_with_card()
    request = IntentRequest("att_x", "inv_x", "org_x", 100, "USD", stripe_customer, method, unique("key"), utcnow())
    outcome = await refused_key.settle(request)
    assert (outcome.status, outcome.message) == (REJECTED, "Unauthorized")


async def test_an_open_attempt_without_a_provider_is_refused(
    stack: Stack, infra: Infra, tenant: Tenant, localstripe: LocalStripe, payments_db: PaymentsDb
):
    _, invoice = await customer_invoice(stack, tenant, localstripe)
    async with StripeProxy(localstripe) as proxy, payments_through(stack, infra, proxy) as stub:
        proxy.mode = "drop"
        assert (await refused(stub, tenant, invoice)).code() == grpc.StatusCode.UNAVAILABLE
    with pytest.raises(FailedPrecondition) as raised:
        await payments_db.charging(accounts=StripeAccounts()).charge(tenant.organization_id, invoice["id"])
    assert raised.value.reason == "PAYMENTS_NOT_CONFIGURED"
    # The database itself holds one open attempt per payment.
    [attempt] = await payments_db.attempts(invoice["id"])
    async with payments_db.sessions() as session:
        second = {c.name: getattr(attempt, c.name) for c in PaymentAttempt.__table__.columns}
        second.update(id=new_id("att"), idempotency_key=unique("key"), status="in_flight")
        with pytest.raises(IntegrityError, match="uq_payment_attempts_open"):
            await session.execute(insert(PaymentAttempt).values(**second))


async def test_the_sweep_survives_a_database_it_cannot_reach(caplog):
    closed = db.create_engine(f"postgresql://postgres@127.0.0.1:{free_port()}/none")
    nowhere = peers.Invoicing(f"127.0.0.1:{free_port()}")  # the sweep asks invoicing nothing
    recovery = Recovery(
        Charging(db.sessions(closed), relay=None, invoicing=nowhere, accounts=StripeAccounts()), interval=0.01
    )
    with caplog.at_level(logging.ERROR, logger="bxb.payments.recovery"):
        recovery.start()

        async def logged():
            assert "recovery sweep failed" in caplog.text

        await eventually(logged)
        await recovery.stop()
    await closed.dispose()
