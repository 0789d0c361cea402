"""PaymentService payment methods over gRPC: each checked at Stripe, with
the organization's own account (the test double in front of localstripe),
to be the account's and its customer's; the newest is the default, at Stripe
too; a deleted one is detached there first."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
import stripe
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from bxb.payments.v1 import payments_pb2 as pb
from bxb.payments.v1 import payments_pb2_grpc, providers_pb2, providers_pb2_grpc
from services.common import grpc_server
from services.common.errors import error_info
from services.common.tenancy import metadata
from services.payments import server as payments_server
from services.payments import stripe_customers
from services.payments.stripe_charges import StripeCharges
from tests.conftest import Infra, Stack, organization, start, unique
from tests.stripe import GOOD_CARD, LocalStripe
from tests.stripe_double import Account, StripeDouble

# localstripe's card whose attaching to a customer is declined.
ATTACH_DECLINED_CARD = "4000000000000002"


class Methods:
    """One organization's payment methods over gRPC, and its own Stripe account."""

    def __init__(self, channel: grpc.aio.Channel, org: str, double: StripeDouble, account: Account):
        self.stub = payments_pb2_grpc.PaymentServiceStub(channel)
        self.providers = providers_pb2_grpc.PaymentProviderServiceStub(channel)
        self.org = org
        self.md = metadata(org)
        self.double = double
        self.account = account
        self.customers: dict[str, str] = {}  # bxb customer -> its Stripe customer

    async def connect(self) -> None:
        request = providers_pb2.ConnectPaymentProviderRequest(
            provider="stripe", secret_key=self.account.api_key, webhook_secret=self.account.webhook_secret
        )
        await self.providers.ConnectPaymentProvider(request, metadata=self.md)

    def stripe(self) -> stripe.StripeClient:
        return stripe.StripeClient(
            self.account.api_key,
            base_addresses={"api": self.double.url},
            http_client=stripe.HTTPXClient(),
            max_network_retries=0,
        )

    async def stripe_customer(self, customer_id: str = "cus_1") -> str:
        """The Stripe customer of a bxb customer in this account, made on first use."""
        if customer_id not in self.customers:
            made = await self.stripe().v1.customers.create_async(params={"email": f"{customer_id}@acme.test"})
            self.customers[customer_id] = made.id
        return self.customers[customer_id]

    async def card(self, attach_to: str | None = None, number: str = GOOD_CARD) -> str:
        """A card in this account, attached to a Stripe customer when named."""
        details = {"number": number, "exp_month": 12, "exp_year": 2040, "cvc": "123"}
        method = await self.stripe().v1.payment_methods.create_async(params={"type": "card", "card": details})
        if attach_to:
            await self.stripe().v1.payment_methods.attach_async(method.id, params={"customer": attach_to})
        return method.id

    async def create(self, customer_id: str = "cus_1", **fields) -> pb.PaymentMethod:
        """Saves a method of the customer: by default a new card attached to its Stripe customer."""
        if "provider_customer_id" not in fields:
            fields["provider_customer_id"] = await self.stripe_customer(customer_id)
        if "provider_payment_method" not in fields:
            fields["provider_payment_method"] = await self.card(fields["provider_customer_id"])
        spec = pb.PaymentMethod(customer_id=customer_id, **fields)
        return await self.stub.CreatePaymentMethod(pb.CreatePaymentMethodRequest(payment_method=spec), metadata=self.md)

    async def list(self, customer_id: str = "cus_1") -> list[pb.PaymentMethod]:
        request = pb.ListPaymentMethodsRequest(customer_id=customer_id)
        return list((await self.stub.ListPaymentMethods(request, metadata=self.md)).payment_methods)

    async def set_default(self, method_id: str, customer_id: str = "cus_1") -> pb.PaymentMethod:
        request = pb.SetDefaultPaymentMethodRequest(customer_id=customer_id, id=method_id)
        return await self.stub.SetDefaultPaymentMethod(request, metadata=self.md)

    async def delete(self, method_id: str, customer_id: str = "cus_1") -> None:
        request = pb.DeletePaymentMethodRequest(customer_id=customer_id, id=method_id)
        await self.stub.DeletePaymentMethod(request, metadata=self.md)

    async def stripe_default(self, customer_id: str = "cus_1") -> str | None:
        """The default payment method Stripe holds for the customer."""
        found = await self.stripe().v1.customers.retrieve_async(self.customers[customer_id])
        return found.invoice_settings.default_payment_method

    async def refused(self, call, code: grpc.StatusCode = grpc.StatusCode.INVALID_ARGUMENT) -> grpc.aio.AioRpcError:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call
        assert raised.value.code() == code, raised.value.details()
        return raised.value

    async def rejected(self, field: str, reason: str, **fields) -> grpc.aio.AioRpcError:
        error = await self.refused(self.create(**fields))
        info = error_info(error)
        assert (info.reason, info.metadata["field"]) == (reason, field)
        [detail] = [d for d in rpc_status.from_call(error).details if d.Is(error_details_pb2.BadRequest.DESCRIPTOR)]
        bad = error_details_pb2.BadRequest()
        detail.Unpack(bad)
        assert [(v.field, v.description) for v in bad.field_violations] == [(field, error.details())]
        return error


@pytest.fixture
async def methods(stack: Stack) -> AsyncIterator[Methods]:
    async with stack.channel("payments") as channel:
        handle = Methods(channel, await organization(stack, unique("org_pm")), stack.stripe, stack.stripe.add_account())
        await handle.connect()
        yield handle


async def test_a_first_method_is_checked_at_stripe_and_becomes_the_default(methods: Methods):
    stripe_customer = await methods.stripe_customer()
    card = await methods.card(stripe_customer)
    method = await methods.create(provider_customer_id=stripe_customer, provider_payment_method=card)
    assert method.id.startswith("pm_") and method.id != card
    assert (method.customer_id, method.provider) == ("cus_1", "stripe")
    assert (method.provider_customer_id, method.provider_payment_method) == (stripe_customer, card)
    assert (method.card_brand, method.card_last4, method.card_exp_month, method.card_exp_year) == (
        "visa",
        "4242",
        12,
        2040,
    )
    assert method.is_default
    assert method.create_time.seconds > 0
    assert await methods.list() == [method]
    assert await methods.stripe_default() == card
    # The customer unknown to payments until then is linked to that Stripe customer.
    linked = await methods.stub.GetProviderCustomer(
        pb.GetProviderCustomerRequest(customer_id="cus_1"), metadata=methods.md
    )
    assert (linked.status, linked.provider_customer_id, linked.auto_collect, linked.provider) == (
        pb.PROVIDER_CUSTOMER_STATUS_LINKED,
        stripe_customer,
        True,  # unset: on, as the customer has a method
        "stripe",
    )


async def test_a_new_method_becomes_the_default_and_lists_first(methods: Methods):
    first = await methods.create(provider="stripe")
    second = await methods.create()
    listed = await methods.list()
    assert [(m.id, m.is_default) for m in listed] == [(second.id, True), (first.id, False)]
    third = await methods.create()
    listed = await methods.list()
    assert [(m.id, m.is_default) for m in listed] == [(third.id, True), (second.id, False), (first.id, False)]
    assert await methods.stripe_default() == third.provider_payment_method
    # Saving a saved method again makes it the default again, not a second copy.
    again = await methods.create(provider_payment_method=first.provider_payment_method)
    assert (again.id, again.is_default) == (first.id, True)
    assert [m.id for m in await methods.list()] == [first.id, third.id, second.id]


async def test_an_unattached_method_is_attached_to_the_customer(methods: Methods):
    stripe_customer = await methods.stripe_customer()
    loose = await methods.card()
    saved = await methods.create(provider_payment_method=loose)
    attached = await methods.stripe().v1.payment_methods.retrieve_async(loose)
    assert (attached.customer, saved.card_last4) == (stripe_customer, "4242")


async def test_a_method_that_is_not_a_card_shows_no_card(methods: Methods):
    stripe_customer = await methods.stripe_customer()
    debit = await methods.stripe().v1.payment_methods.create_async(
        params={"type": "sepa_debit", "sepa_debit": {"iban": "DE89370400440532013000"}}
    )
    saved = await methods.create(provider_customer_id=stripe_customer, provider_payment_method=debit.id)
    assert (saved.card_brand, saved.card_last4, saved.card_exp_month, saved.is_default) == ("", "", 0, True)


async def test_a_customer_deleted_at_stripe_is_not_found_there(methods: Methods, monkeypatch):
    """Stripe answers a deleted customer (localstripe forgets it: 404) as `deleted: true`."""
    charges = StripeCharges(methods.account.api_key, methods.double.url)

    async def deleted(customer_id: str, *args):
        return stripe.Customer.construct_from({"id": customer_id, "object": "customer", "deleted": True}, "k")

    monkeypatch.setattr(charges.client.v1.customers, "retrieve_async", deleted)
    with pytest.raises(stripe_customers.Missing, match="cus_gone was deleted"):
        await stripe_customers.customer(charges, "cus_gone")


async def test_a_method_of_another_customer_is_refused_and_nothing_saved(methods: Methods):
    await methods.stripe_customer()
    others = await methods.card(await methods.stripe_customer("someone_else"))
    error = await methods.rejected(
        "payment_method.provider_payment_method", "OTHER_CUSTOMERS_METHOD", provider_payment_method=others
    )
    assert others in error.details()
    assert await methods.list() == []


async def test_ids_the_organization_s_stripe_account_does_not_hold_are_refused(methods: Methods):
    await methods.rejected(
        "payment_method.provider_payment_method", "NOT_IN_PROVIDER_ACCOUNT", provider_payment_method="pm_nowhere"
    )
    error = await methods.rejected(
        "payment_method.provider_customer_id",
        "NOT_IN_PROVIDER_ACCOUNT",
        provider_customer_id="cus_nowhere",
        provider_payment_method="pm_any",
    )
    assert error.details() == "the Stripe customer cus_nowhere is not in the organization's Stripe account"
    assert await methods.list() == []


async def test_a_card_stripe_declines_to_attach_is_refused(methods: Methods):
    declined = await methods.card(number=ATTACH_DECLINED_CARD)
    error = await methods.rejected(
        "payment_method.provider_payment_method", "PROVIDER_REFUSED", provider_payment_method=declined
    )
    assert "declined" in error.details()


async def test_a_customer_linked_to_a_stripe_customer_takes_no_other(methods: Methods):
    await methods.create()
    other = await methods.stripe_customer("other")
    error = await methods.rejected(
        "payment_method.provider_customer_id",
        "OTHER_PROVIDER_CUSTOMER",
        provider_customer_id=other,
        provider_payment_method=await methods.card(other),
    )
    assert f"linked to the Stripe customer {methods.customers['cus_1']}, not {other}" in error.details()


async def test_defaults_are_per_customer_and_per_organization(stack: Stack, methods: Methods):
    mine = await methods.create(customer_id="a")
    await methods.create(customer_id="b")
    assert [(m.id, m.is_default) for m in await methods.list("a")] == [(mine.id, True)]
    async with stack.channel("payments") as channel:
        other = Methods(channel, await organization(stack, unique("org_pm")), stack.stripe, stack.stripe.add_account())
        await other.connect()
        assert await other.list("a") == []
        await other.create(customer_id="a")
        # Nor are this organization's methods the other's to change.
        await other.refused(other.set_default(mine.id, "a"), grpc.StatusCode.NOT_FOUND)
        await other.refused(other.delete(mine.id, "a"), grpc.StatusCode.NOT_FOUND)
    assert [(m.id, m.is_default) for m in await methods.list("a")] == [(mine.id, True)]
    assert await methods.list("nobody") == []


async def test_concurrent_creates_leave_exactly_one_default(methods: Methods):
    stripe_customer = await methods.stripe_customer()
    cards = [await methods.card(stripe_customer) for _ in range(6)]
    made = await asyncio.gather(*(methods.create(provider_payment_method=card) for card in cards))
    listed = await methods.list()
    assert {m.id for m in listed} == {m.id for m in made}
    defaults = [m for m in listed if m.is_default]
    assert len(defaults) == 1
    assert listed[0] == defaults[0]


async def test_setting_the_default_is_reflected_at_stripe(methods: Methods):
    first, second = await methods.create(), await methods.create()
    chosen = await methods.set_default(first.id)
    assert (chosen.id, chosen.is_default) == (first.id, True)
    assert [(m.id, m.is_default) for m in await methods.list()] == [(first.id, True), (second.id, False)]
    assert await methods.stripe_default() == first.provider_payment_method
    missing = await methods.refused(methods.set_default("pm_unknown"), grpc.StatusCode.NOT_FOUND)
    assert error_info(missing).metadata["field"] == "id"
    await methods.refused(methods.set_default(first.id, "another_customer"), grpc.StatusCode.NOT_FOUND)


async def test_deleting_detaches_at_stripe_and_the_newest_remaining_becomes_the_default(methods: Methods):
    first, second, third = await methods.create(), await methods.create(), await methods.create()
    await methods.delete(second.id)  # not the default: the default stays
    assert [(m.id, m.is_default) for m in await methods.list()] == [(third.id, True), (first.id, False)]
    detached = await methods.stripe().v1.payment_methods.retrieve_async(second.provider_payment_method)
    assert detached.customer is None
    await methods.delete(third.id)  # the default: the newest remaining one follows, at Stripe too
    assert [(m.id, m.is_default) for m in await methods.list()] == [(first.id, True)]
    assert await methods.stripe_default() == first.provider_payment_method
    # One already detached at Stripe (by someone else) is forgotten all the same.
    await methods.stripe().v1.payment_methods.detach_async(first.provider_payment_method)
    await methods.delete(first.id)
    assert await methods.list() == []
    await methods.refused(methods.delete(first.id), grpc.StatusCode.NOT_FOUND)


async def test_without_a_connected_account_nothing_is_saved(stack: Stack):
    async with stack.channel("payments") as channel:
        alone = Methods(channel, await organization(stack, unique("org_pm")), stack.stripe, stack.stripe.add_account())
        error = await alone.refused(alone.create(), grpc.StatusCode.FAILED_PRECONDITION)
        assert error_info(error).reason == "PAYMENTS_NOT_CONFIGURED"
        missing = await alone.refused(
            alone.stub.GetProviderCustomer(pb.GetProviderCustomerRequest(customer_id="cus_1"), metadata=alone.md),
            grpc.StatusCode.NOT_FOUND,
        )
        assert error_info(missing).metadata["field"] == "customer_id"


async def test_a_key_stripe_no_longer_takes_is_a_failed_precondition(stack: Stack, methods: Methods):
    method = await methods.create()
    del stack.stripe.accounts[methods.account.api_key]  # the key rolled at Stripe, not in bxb
    try:
        calls = (
            lambda: methods.create(provider_payment_method=method.provider_payment_method),
            lambda: methods.set_default(method.id),
            lambda: methods.delete(method.id),
        )
        for call in calls:
            error = await methods.refused(call(), grpc.StatusCode.FAILED_PRECONDITION)
            assert error_info(error).reason == "PROVIDER_KEY_REFUSED"
    finally:
        stack.stripe.accounts[methods.account.api_key] = methods.account
    assert [m.id for m in await methods.list()] == [method.id]


async def test_stripe_unreachable_or_failing_is_unavailable_and_changes_nothing(
    stack: Stack, infra: Infra, localstripe: LocalStripe, methods: Methods
):
    method = await methods.create()
    card = await methods.card(methods.customers["cus_1"])
    async with StripeDouble(localstripe, faulted=f"GET /v1/payment_methods/{card}") as proxy:
        proxy.accounts.update(stack.stripe.accounts)
        settings = payments_server.Settings(
            "",
            infra.postgres.url("payments"),
            infra.nats.url,
            stack.invoicing,
            stripe_api_base=proxy.url,
            stripe_timeout=0.5,
        )
        service = payments_server.build(settings)
        server, address = await start(service)
        try:
            async with grpc.aio.insecure_channel(address) as channel:
                through = Methods(channel, methods.org, stack.stripe, methods.account)
                through.customers = methods.customers
                for mode in ("stall", "error"):
                    proxy.mode = mode
                    error = await through.refused(
                        through.create(provider_payment_method=card), grpc.StatusCode.UNAVAILABLE
                    )
                    assert "Stripe" in error.details()
        finally:
            await grpc_server.stop(service, server, grace=1)
    assert [m.id for m in await methods.list()] == [method.id]


@pytest.mark.parametrize("field", ["customer_id", "provider_customer_id", "provider_payment_method"])
async def test_identifiers_are_required(methods: Methods, field):
    ids = {"provider_customer_id": "cus_x", "provider_payment_method": "pm_x", field: ""}
    error = await methods.rejected(f"payment_method.{field}", "MISSING_FIELD", **ids)  # the proto's rules
    assert error.details() == f"payment_method.{field} is required"
    assert await methods.list() == []


@pytest.mark.parametrize("field", ["customer_id", "provider_customer_id", "provider_payment_method"])
async def test_identifiers_longer_than_200_characters_are_rejected(methods: Methods, field):
    ids = {"provider_customer_id": "cus_x", "provider_payment_method": "pm_x", field: "x" * 201}
    await methods.rejected(f"payment_method.{field}", "INVALID_VALUE", **ids)
    assert await methods.list() == []


async def test_only_known_providers_are_accepted(methods: Methods):
    error = await methods.rejected("payment_method.provider", "INVALID_VALUE", provider="paypal")
    assert error.details() == "payment_method.provider must be one of: stripe"
    assert await methods.list() == []
