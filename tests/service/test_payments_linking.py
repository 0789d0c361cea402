"""Customers linked to Stripe (provider_customers, linking.py): recorded
PENDING from customer_created without a call to Stripe, then created at
Stripe once (an idempotency key of bxb's ids: however often the linker runs,
or dies mid-call) or checked there with the organization's own key; the
payment method given at creation saved only once Stripe shows it is that
customer's. Nothing is charged before the customer is LINKED."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import timedelta

import grpc
import pytest
from sqlalchemy import select, update

from bxb.payments.v1 import payments_pb2 as pb
from bxb.payments.v1 import payments_pb2_grpc
from deploy.embedded import free_port
from services.common import db
from services.common.tenancy import metadata
from services.common.timestamps import utcnow
from services.payments import stripe_customers
from services.payments.accounts import StripeAccounts
from services.payments.linking import Job, Linker
from services.payments.models import LINK_FAILED, LINK_PENDING, PaymentMethod, ProviderCustomer
from tests.conftest import Infra, Stack, Tenant, eventually, organization, unique
from tests.service.test_gateway_charge import issued, payment_methods_saved
from tests.stripe import LocalStripe
from tests.stripe_double import StripeDouble

ATTACH_DECLINED_CARD = "4000000000000002"


class LinkingDb:
    """The payments database, read and written directly, and linkers of the test's own on it."""

    def __init__(self, infra: Infra, stack: Stack):
        self.engine = db.create_engine(infra.postgres.url("payments"), pool_size=4)
        self.sessions = db.sessions(self.engine)
        self.stack = stack

    def linker(self, stripe_url: str = "", timeout: float = 20.0, **options) -> Linker:
        accounts = StripeAccounts(self.sessions, stripe_url or self.stack.stripe.url, timeout)
        return Linker(self.sessions, accounts, **options)

    async def customer(self, org: str, customer_id: str) -> ProviderCustomer | None:
        async with self.sessions() as session:
            return await session.get(ProviderCustomer, (org, customer_id))

    async def pending(self, org: str, customer_id: str, **values) -> None:
        """A customer recorded as customer_created records one, not yet due unless said."""
        values.setdefault("next_attempt_time", utcnow() + timedelta(hours=1))
        async with self.sessions() as session, session.begin():
            session.add(
                ProviderCustomer(
                    organization_id=org, customer_id=customer_id, provider="stripe", status=LINK_PENDING, **values
                )
            )

    async def due(self, org: str, customer_id: str) -> None:
        async with self.sessions() as session, session.begin():
            await session.execute(
                update(ProviderCustomer)
                .where(ProviderCustomer.organization_id == org, ProviderCustomer.customer_id == customer_id)
                .values(next_attempt_time=utcnow() - timedelta(seconds=1))
            )

    async def methods(self, org: str, customer_id: str) -> list[PaymentMethod]:
        async with self.sessions() as session:
            query = select(PaymentMethod).where(
                PaymentMethod.organization_id == org, PaymentMethod.customer_id == customer_id
            )
            return list((await session.execute(query)).scalars())


@pytest.fixture
async def linking_db(infra: Infra, stack: Stack) -> AsyncIterator[LinkingDb]:
    handle = LinkingDb(infra, stack)
    yield handle
    await handle.engine.dispose()


async def provider_customer(tenant: Tenant, customer_id: str, status: str = "linked") -> dict:
    """The customer as payments knows it (GET .../provider_customer), once its status is `status`."""

    async def reached():
        answer = await tenant.http.get(f"/v1/customers/{customer_id}/provider_customer")
        assert answer.status_code == 200, answer.text
        assert answer.json()["status"] == status, answer.json()
        return answer.json()

    return await eventually(reached)


async def stripe_customers_of(tenant: Tenant, customer_id: str) -> list:
    """The Stripe customers of the tenant's account made for one bxb customer."""
    page = await tenant.stripe_client().v1.customers.list_async(params={"limit": 100})
    return [
        found
        async for found in page.auto_paging_iter()
        if found.metadata.to_dict() == {"bxb_customer_id": customer_id, "bxb_organization_id": tenant.organization_id}
    ]


async def test_a_customer_without_a_stripe_customer_gets_one_once_with_its_details(stripe_tenant: Tenant, stack: Stack):
    tenant = stripe_tenant
    before = stack.stripe.created("/v1/customers")
    body = {
        "id": "cus_new",
        "name": "Acme Corp",
        "email": "billing@acme.test",
        "billing": {"provider": "stripe", "auto_collect": False},
    }
    created = await tenant.http.post("/v1/customers", json=body)
    assert created.status_code == 201, created.text
    assert created.json()["billing"] == {"provider": "stripe", "provider_customer_id": None, "auto_collect": False}
    linked = await provider_customer(tenant, "cus_new")
    assert linked["provider_customer_id"].startswith("cus_")
    assert (linked["provider"], linked["auto_collect"], linked["failure_message"]) == ("stripe", False, "")
    [made] = await stripe_customers_of(tenant, "cus_new")
    assert (made.id, made.email, made.name) == (linked["provider_customer_id"], "billing@acme.test", "Acme Corp")
    assert stack.stripe.created("/v1/customers") == before + 1
    assert (await tenant.http.get("/v1/customers/cus_new/payment_methods")).json() == {"payment_methods": []}
    # GET /v1/customers reads auto_collect back.
    assert (await tenant.http.get("/v1/customers/cus_new")).json()["billing"]["auto_collect"] is False


async def test_a_customer_named_by_the_tenant_is_checked_and_its_card_saved(stripe_tenant: Tenant, stack: Stack):
    tenant = stripe_tenant
    stripe_customer, card = await tenant.customer_with_card()
    body = {
        "id": "cus_named",
        "billing": {"provider": "stripe", "provider_customer_id": stripe_customer, "auto_collect": True},
        "payment_method": {"provider_payment_method": card},
    }
    assert (await tenant.http.post("/v1/customers", json=body)).status_code == 201
    linked = await provider_customer(tenant, "cus_named")
    assert (linked["provider_customer_id"], linked["auto_collect"]) == (stripe_customer, True)
    [method] = (await tenant.http.get("/v1/customers/cus_named/payment_methods")).json()["payment_methods"]
    assert (method["provider_payment_method"], method["is_default"], method["card_brand"], method["card_last4"]) == (
        card,
        True,
        "visa",
        "4242",
    )
    assert (method["card_exp_month"], method["card_exp_year"]) == (12, 2040)


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("another customer's", "is attached to another Stripe customer: not saved"),
        ("unknown", "is not in the organization's Stripe account: not saved"),
        ("declined", "Stripe refused the payment method"),
    ],
)
async def test_a_method_given_at_creation_that_is_not_the_customer_s_is_not_saved(
    stripe_tenant: Tenant, stack: Stack, kind: str, message: str
):
    tenant = stripe_tenant
    stripe_customer, _ = await tenant.customer_with_card()
    if kind == "another customer's":
        _, card = await tenant.customer_with_card()
    elif kind == "unknown":
        card = "pm_unknown_to_the_account"
    else:
        number = {"number": ATTACH_DECLINED_CARD, "exp_month": 12, "exp_year": 2040, "cvc": "123"}
        card = (
            await tenant.stripe_client().v1.payment_methods.create_async(params={"type": "card", "card": number})
        ).id
    body = {"id": "cus_m", "payment_method": {"provider_customer_id": stripe_customer, "provider_payment_method": card}}
    assert (await tenant.http.post("/v1/customers", json=body)).status_code == 201
    linked = await provider_customer(tenant, "cus_m")
    assert linked["provider_customer_id"] == stripe_customer
    assert card in linked["failure_message"] and message in linked["failure_message"]
    assert linked["auto_collect"] is False  # unset, and no method
    assert (await tenant.http.get("/v1/customers/cus_m/payment_methods")).json() == {"payment_methods": []}


async def test_an_unattached_method_given_at_creation_is_attached_and_saved(stripe_tenant: Tenant):
    tenant = stripe_tenant
    stripe_customer, _ = await tenant.customer_with_card()
    number = {"number": "4242424242424242", "exp_month": 3, "exp_year": 2039, "cvc": "123"}
    loose = (await tenant.stripe_client().v1.payment_methods.create_async(params={"type": "card", "card": number})).id
    body = {
        "id": "cus_l",
        "payment_method": {"provider_customer_id": stripe_customer, "provider_payment_method": loose},
    }
    assert (await tenant.http.post("/v1/customers", json=body)).status_code == 201
    await provider_customer(tenant, "cus_l")
    [method] = (await tenant.http.get("/v1/customers/cus_l/payment_methods")).json()["payment_methods"]
    assert (method["provider_payment_method"], method["card_exp_month"]) == (loose, 3)
    assert (await tenant.stripe_client().v1.payment_methods.retrieve_async(loose)).customer == stripe_customer


async def test_a_customer_of_no_stripe_account_of_the_organization_fails_and_is_never_charged(
    tenant: Tenant, stack: Stack, localstripe: LocalStripe, other_localstripe: LocalStripe
):
    await tenant.connect_stripe(stack.stripe.add_account(other_localstripe))  # its account is elsewhere
    invoice = await issued(tenant, localstripe, connect=False)  # a card of an account it does not hold
    failed = await provider_customer(tenant, "cust_acme", "failed")
    assert "is not in the organization's Stripe account" in failed["failure_message"]
    charged = await tenant.http.post(f"/v1/invoices/{invoice['id']}/charge")
    assert (charged.status_code, charged.json()["error"]["reason"]) == (409, "PROVIDER_CUSTOMER_FAILED")
    assert failed["failure_message"] in charged.json()["error"]["message"]
    assert await localstripe.intents_of(failed["provider_customer_id"]) == []
    for route in ("payment_methods/setup_link",):
        refused = await tenant.http.post(f"/v1/customers/cust_acme/{route}", json={})
        assert (refused.status_code, refused.json()["error"]["reason"]) == (409, "PROVIDER_CUSTOMER_FAILED")


async def test_a_customer_waits_for_an_account_and_is_not_charged_meanwhile(
    tenant: Tenant, stack: Stack, localstripe: LocalStripe, linking_db: LinkingDb
):
    invoice = await issued(tenant, localstripe, connect=False)  # no account connected yet

    async def waiting():
        recorded = await linking_db.customer(tenant.organization_id, "cust_acme")
        assert recorded is not None and recorded.status == LINK_PENDING
        assert "no payment provider is connected" in recorded.failure_message
        return recorded

    pending = await eventually(waiting)
    assert pending.attempt_count >= 1 and pending.next_attempt_time > utcnow()
    shown = await provider_customer(tenant, "cust_acme", "pending")
    assert shown["provider_customer_id"] == pending.provider_customer_id
    charged = await tenant.http.post(f"/v1/invoices/{invoice['id']}/charge")
    assert (charged.status_code, charged.json()["error"]["reason"]) == (409, "PROVIDER_CUSTOMER_PENDING")
    for answer in (
        await tenant.http.post("/v1/customers/cust_acme/payment_methods/setup_link", json={}),
        await tenant.http.post(
            "/v1/customers/cust_acme/payment_methods",
            json={"provider_customer_id": pending.provider_customer_id, "provider_payment_method": "pm_x"},
        ),
    ):
        assert (answer.status_code, answer.json()["error"]["reason"]) in (
            (409, "PROVIDER_CUSTOMER_PENDING"),
            (409, "PAYMENTS_NOT_CONFIGURED"),
        )
    # Connecting the account links it at once, not after its backoff.
    await tenant.connect_stripe()
    await payment_methods_saved(stack, tenant)
    await provider_customer(tenant, "cust_acme")
    paid = await tenant.http.post(f"/v1/invoices/{invoice['id']}/charge")
    assert (paid.status_code, paid.json()["status"]) == (200, "paid")


async def test_the_customer_is_created_at_stripe_once_however_many_linkers_run(
    stripe_tenant: Tenant, stack: Stack, linking_db: LinkingDb
):
    org = stripe_tenant.organization_id
    await linking_db.pending(org, "cus_twice", email="twice@acme.test")
    await linking_db.due(org, "cus_twice")
    before = stack.stripe.created("/v1/customers")
    linkers = [linking_db.linker() for _ in range(3)]
    await asyncio.gather(*(linker.run_once() for linker in linkers))

    async def linked():
        recorded = await linking_db.customer(org, "cus_twice")
        assert recorded.status == "PROVIDER_CUSTOMER_STATUS_LINKED"
        return recorded

    recorded = await eventually(linked)  # by one of them, or by the stack's own linker
    assert stack.stripe.created("/v1/customers") == before + 1
    assert [c.id for c in await stripe_customers_of(stripe_tenant, "cus_twice")] == [recorded.provider_customer_id]


async def test_a_linker_that_died_after_stripe_answered_leaves_a_customer_the_next_gets_back(
    stripe_tenant: Tenant, stack: Stack, linking_db: LinkingDb
):
    org = stripe_tenant.organization_id
    await linking_db.pending(org, "cus_died", name="Died Inc")
    await linking_db.due(org, "cus_died")
    dying = linking_db.linker()
    [job] = [j for j in await dying._claim() if j.org == org]  # other tests' customers may be due too
    made = await dying._link(job)  # Stripe made the customer; the linker died before recording it
    recorded = await linking_db.customer(org, "cus_died")
    assert recorded.status == LINK_PENDING and recorded.next_attempt_time > utcnow()  # leased: nobody takes it
    await linking_db.linker().run_once()
    assert (await linking_db.customer(org, "cus_died")).status == LINK_PENDING  # still leased: nobody took it
    await linking_db.due(org, "cus_died")  # the lease ran out
    await linking_db.linker().run_once()
    recorded = await linking_db.customer(org, "cus_died")
    assert (recorded.status, recorded.provider_customer_id) == ("PROVIDER_CUSTOMER_STATUS_LINKED", made.stripe_customer)
    assert [c.id for c in await stripe_customers_of(stripe_tenant, "cus_died")] == [made.stripe_customer]


async def test_an_answer_lost_mid_call_is_retried_later_and_makes_no_second_customer(
    stripe_tenant: Tenant, stack: Stack, linking_db: LinkingDb
):
    tenant = stripe_tenant
    double = stack.stripe
    before = double.created("/v1/customers")
    double.faulted, double.mode = "POST /v1/customers", "drop"  # Stripe makes it, the answer is lost
    try:
        assert (
            await tenant.http.post("/v1/customers", json={"id": "cus_lost", "billing": {"provider": "stripe"}})
        ).status_code == 201

        async def retrying():
            recorded = await linking_db.customer(tenant.organization_id, "cus_lost")
            assert recorded is not None and recorded.attempt_count == 1
            return recorded

        recorded = await eventually(retrying)
    finally:
        double.faulted, double.mode = "POST /v1/payment_intents", "pass"
    assert recorded.status == LINK_PENDING and recorded.failure_message.startswith(
        "Stripe: Stripe could not be reached"
    )
    assert recorded.next_attempt_time > utcnow()
    await linking_db.due(tenant.organization_id, "cus_lost")
    await linking_db.linker().run_once()
    linked = await provider_customer(tenant, "cus_lost")
    assert [c.id for c in await stripe_customers_of(tenant, "cus_lost")] == [linked["provider_customer_id"]]
    assert double.created("/v1/customers") == before + 1  # the retry was answered from the key, not made again


async def test_stripe_slower_than_the_deadline_leaves_the_customer_pending_with_a_backoff(
    stripe_tenant: Tenant, stack: Stack, localstripe: LocalStripe, linking_db: LinkingDb
):
    org = stripe_tenant.organization_id
    await linking_db.pending(org, "cus_slow", attempt_count=2)
    async with StripeDouble(localstripe, faulted="POST /v1/customers") as slow:
        slow.accounts.update(stack.stripe.accounts)
        slow.mode = "stall"
        linker = linking_db.linker(slow.url, timeout=0.3, poll=1.0)
        job = Job(org, "cus_slow", "", "", "", "", 2)
        outcome = await linker._link(job)
        assert (outcome.status, outcome.message) == (None, "Stripe did not answer within 0.3 s")
        await linker._record(job, outcome)
    recorded = await linking_db.customer(org, "cus_slow")
    assert (recorded.status, recorded.attempt_count) == (LINK_PENDING, 3)
    backoff = recorded.next_attempt_time - utcnow()
    assert timedelta(seconds=2) < backoff <= timedelta(seconds=4)  # poll * 2**2


async def test_an_outcome_is_not_recorded_over_a_customer_that_changed_meanwhile(
    stripe_tenant: Tenant, linking_db: LinkingDb
):
    org = stripe_tenant.organization_id
    await linking_db.pending(org, "cus_changed")
    await linking_db.due(org, "cus_changed")
    linker = linking_db.linker()
    [job] = [j for j in await linker._claim() if j.org == org]  # other tests' customers may be due too
    outcome = await linker._link(job)
    async with linking_db.sessions() as session, session.begin():  # deleted at Stripe meanwhile (the webhook)
        await session.execute(
            update(ProviderCustomer)
            .where(ProviderCustomer.organization_id == org, ProviderCustomer.customer_id == "cus_changed")
            .values(status=LINK_FAILED, failure_message="deleted at Stripe")
        )
    await linker._record(job, outcome)
    recorded = await linking_db.customer(org, "cus_changed")
    assert (recorded.status, recorded.failure_message, recorded.provider_customer_id) == (
        LINK_FAILED,
        "deleted at Stripe",
        "",
    )


async def test_stripe_refusing_the_customer_fails_it_with_stripe_s_reason(stripe_tenant: Tenant, linking_db: LinkingDb):
    org = stripe_tenant.organization_id
    # The linker's key already used for another request: Stripe refuses it (idempotency_error).
    key = stripe_customers.idempotency_key("customer", org, "cus_refused")
    await stripe_tenant.stripe_client().v1.customers.create_async(
        params={"email": "someone@else.test"}, options={"idempotency_key": key}
    )
    await linking_db.pending(org, "cus_refused")
    await linking_db.due(org, "cus_refused")
    await linking_db.linker().run_once()
    recorded = await linking_db.customer(org, "cus_refused")
    assert recorded.status == LINK_FAILED and recorded.failure_message.startswith("Stripe refused the customer: ")


async def test_a_key_stripe_refuses_leaves_customers_pending(
    stripe_tenant: Tenant, stack: Stack, linking_db: LinkingDb
):
    tenant = stripe_tenant
    stripe_customer, card = await tenant.customer_with_card()
    linker = linking_db.linker()
    del stack.stripe.accounts[tenant.stripe.api_key]  # revoked at Stripe
    try:
        outcome = await linker._link(Job(tenant.organization_id, "cus_k", stripe_customer, card, "", "", 0))
        assert (outcome.status, outcome.stripe_customer) == (None, stripe_customer)
        assert outcome.message.startswith("Stripe: Invalid API Key provided")
        charges = await linker.accounts.charges(tenant.organization_id)
        with pytest.raises(stripe_customers.KeyRefused):
            await Linker._method(
                charges, Job(tenant.organization_id, "cus_k", stripe_customer, card, "", "", 0), stripe_customer
            )
    finally:
        stack.stripe.accounts[tenant.stripe.api_key] = tenant.stripe


async def test_the_loop_links_batch_after_batch_and_survives_a_database_it_cannot_reach(
    stripe_tenant: Tenant, linking_db: LinkingDb, caplog
):
    org = stripe_tenant.organization_id
    for customer_id in ("cus_b1", "cus_b2", "cus_b3"):
        await linking_db.pending(org, customer_id)
        await linking_db.due(org, customer_id)
    linker = linking_db.linker(batch=1, concurrency=1, poll=60)
    linker.start()
    linker.wake()

    async def linked():
        for customer_id in ("cus_b1", "cus_b2", "cus_b3"):
            assert (await linking_db.customer(org, customer_id)).status == "PROVIDER_CUSTOMER_STATUS_LINKED"

    await eventually(linked)
    await linker.stop()
    closed = db.create_engine(f"postgresql://postgres@127.0.0.1:{free_port()}/none")
    broken = Linker(db.sessions(closed), StripeAccounts(), poll=0.01)
    with caplog.at_level(logging.ERROR, logger="bxb.payments.linking"):
        broken.start()

        async def logged():
            assert "linking customers failed" in caplog.text

        await eventually(logged)
        await broken.stop()
    await closed.dispose()


async def test_connecting_another_account_checks_every_linked_customer_against_it(
    stripe_tenant: Tenant, stack: Stack, other_localstripe: LocalStripe
):
    tenant = stripe_tenant
    stripe_customer, card = await tenant.customer_with_card()
    body = {
        "id": "cus_moved",
        "payment_method": {"provider_customer_id": stripe_customer, "provider_payment_method": card},
    }
    assert (await tenant.http.post("/v1/customers", json=body)).status_code == 201
    await provider_customer(tenant, "cus_moved")
    other_card = {"number": "5555555555554444", "exp_month": 1, "exp_year": 2041, "cvc": "123"}
    other = (
        await tenant.stripe_client().v1.payment_methods.create_async(params={"type": "card", "card": other_card})
    ).id
    body = {"provider_customer_id": stripe_customer, "provider_payment_method": other}
    assert (await tenant.http.post("/v1/customers/cus_moved/payment_methods", json=body)).status_code == 201
    # The same account with a rolled key: nothing to check again.
    await tenant.connect_stripe(tenant.stripe)
    assert (await provider_customer(tenant, "cus_moved"))["status"] == "linked"
    # Another account that holds the customer too (on the same localstripe): checked, linked again,
    # the default left as the tenant chose it.
    await tenant.connect_stripe(stack.stripe.add_account())
    await provider_customer(tenant, "cus_moved", "pending")
    await provider_customer(tenant, "cus_moved")
    listed = (await tenant.http.get("/v1/customers/cus_moved/payment_methods")).json()["payment_methods"]
    assert [(m["provider_payment_method"], m["is_default"]) for m in listed] == [(other, True), (card, False)]
    # Another account, which does not hold the customer: it fails, and is not charged there.
    await tenant.connect_stripe(stack.stripe.add_account(other_localstripe))
    failed = await provider_customer(tenant, "cus_moved", "failed")
    assert stripe_customer in failed["failure_message"]


async def test_the_grpc_answer_of_an_unknown_customer_is_not_found(stack: Stack):
    async with stack.channel("payments") as channel:
        stub = payments_pb2_grpc.PaymentServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await stub.GetProviderCustomer(
                pb.GetProviderCustomerRequest(customer_id="cus_nobody"),
                metadata=metadata(await organization(stack, unique("org"))),
            )
    assert (missing.value.code(), "not known to payments" in missing.value.details()) == (
        grpc.StatusCode.NOT_FOUND,
        True,
    )
