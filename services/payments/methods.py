"""Customers' payment methods: saved only once checked at Stripe, with the
organization's own key, to belong to the organization's account and to the
customer's Stripe customer; the newest saved is the default.

`PaymentMethods` serves the routes (`/v1/customers/{id}/payment_methods`,
PaymentMethodRpcs): a method named by the tenant is looked up at Stripe and
attached to the customer when unattached (one attached to another customer
is refused: Stripe would never charge it for this one); a default is set at
Stripe too (`invoice_settings.default_payment_method`); a deletion detaches
the method at Stripe first. Stripe is called within a request, never inside
a database transaction. A customer unknown to payments is linked on the
fly to the Stripe customer named, once Stripe shows it is the account's.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from google.protobuf import empty_pb2
from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bxb.payments.v1 import payments_pb2 as pb
from services.common import tenancy
from services.common.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable
from services.common.grpc_server import Context
from services.common.ids import new_id
from services.common.timestamps import to_proto
from services.payments import stripe_customers
from services.payments.accounts import STRIPE, StripeAccounts
from services.payments.customers import provider_customer_proto, require_linked
from services.payments.models import LINK_LINKED, PaymentMethod, ProviderCustomer
from services.payments.stripe_charges import StripeCharges, Unreachable
from services.payments.stripe_customers import Card


def method_proto(method: PaymentMethod) -> pb.PaymentMethod:
    return pb.PaymentMethod(
        id=method.id,
        customer_id=method.customer_id,
        provider=method.provider,
        provider_customer_id=method.provider_customer_id,
        provider_payment_method=method.provider_payment_method,
        is_default=method.is_default,
        create_time=to_proto(method.create_time),
        card_brand=method.card_brand,
        card_last4=method.card_last4,
        card_exp_month=method.card_exp_month,
        card_exp_year=method.card_exp_year,
    )


async def lock_customer(session: AsyncSession, org: str, customer_id: str) -> None:
    """One writer per customer at a time (until the transaction ends), so concurrent saves leave exactly one default."""
    await session.execute(select(func.pg_advisory_xact_lock(func.hashtextextended(f"{org}/{customer_id}", 0))))


async def _make_default(session: AsyncSession, method: PaymentMethod) -> None:
    await session.execute(
        update(PaymentMethod)
        .where(
            PaymentMethod.organization_id == method.organization_id,
            PaymentMethod.customer_id == method.customer_id,
            PaymentMethod.id != method.id,
        )
        .values(is_default=False)
    )
    method.is_default = True


async def save(
    session: AsyncSession,
    org: str,
    customer_id: str,
    stripe_customer: str,
    stripe_method: str,
    card: Card,
    make_default: bool = True,
) -> PaymentMethod:
    """The method checked at Stripe, saved as the customer's default; one
    saved already has its card refreshed, and becomes the default again
    when `make_default`. The caller holds lock_customer."""
    query = select(PaymentMethod).where(
        PaymentMethod.organization_id == org,
        PaymentMethod.customer_id == customer_id,
        PaymentMethod.provider_payment_method == stripe_method,
    )
    method = (await session.execute(query)).scalars().first()
    if method is None:
        method = PaymentMethod(
            id=new_id("pm"),
            organization_id=org,
            customer_id=customer_id,
            provider=STRIPE,
            provider_payment_method=stripe_method,
            is_default=False,  # until made the default below
        )
        session.add(method)
        make_default = True  # the newest is the default
    method.provider_customer_id = stripe_customer
    method.card_brand, method.card_last4 = card.brand, card.last4
    method.card_exp_month, method.card_exp_year = card.exp_month, card.exp_year
    if make_default:
        await _make_default(session, method)
    await session.flush()
    await session.refresh(method)
    return method


async def newest(session: AsyncSession, org: str, customer_id: str, but: str = "") -> PaymentMethod | None:
    """The customer's newest saved method (other than `but`)."""
    query = (
        select(PaymentMethod)
        .where(PaymentMethod.organization_id == org, PaymentMethod.customer_id == customer_id, PaymentMethod.id != but)
        .order_by(PaymentMethod.create_time.desc(), PaymentMethod.id.desc())
        .limit(1)
    )
    return (await session.execute(query)).scalar_one_or_none()


async def remove(session: AsyncSession, method: PaymentMethod) -> None:
    """Forgets a saved method; when it was the default, the newest remaining
    one becomes the default. The caller holds lock_customer."""
    await session.execute(delete(PaymentMethod).where(PaymentMethod.id == method.id))
    if method.is_default:
        successor = await newest(session, method.organization_id, method.customer_id)
        if successor is not None:
            successor.is_default = True


def key_refused() -> FailedPrecondition:
    return FailedPrecondition(
        "Stripe refused the organization's secret key: connect the account again (POST /v1/payment_providers/stripe)",
        reason="PROVIDER_KEY_REFUSED",
    )


@contextmanager
def at_stripe(field: str, what: str) -> Iterator[None]:
    """Stripe's errors for `what` (named by `field`) as the caller's errors."""
    try:
        yield
    except Unreachable as error:
        raise Unavailable(str(error)) from None
    except stripe_customers.KeyRefused:
        raise key_refused() from None
    except stripe_customers.Missing:
        raise InvalidArgument(
            f"{what} is not in the organization's Stripe account", field=field, reason="NOT_IN_PROVIDER_ACCOUNT"
        ) from None
    except stripe_customers.Refused as error:
        raise InvalidArgument(f"Stripe refused {what}: {error}", field=field, reason="PROVIDER_REFUSED") from None


METHOD = "payment_method.provider_payment_method"
CUSTOMER = "payment_method.provider_customer_id"


class PaymentMethods:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], accounts: StripeAccounts):
        self.sessions = sessions
        self.accounts = accounts  # each organization's Stripe account

    async def _find(self, session: AsyncSession, org: str, customer_id: str, method_id: str) -> PaymentMethod:
        query = select(PaymentMethod).where(
            PaymentMethod.organization_id == org,
            PaymentMethod.customer_id == customer_id,
            PaymentMethod.id == method_id,
        )
        method = (await session.execute(query)).scalar_one_or_none()
        if method is None:
            raise NotFound(f"payment method {method_id!r} of customer {customer_id!r} not found", field="id")
        return method

    @staticmethod
    def _linked_to(linked: ProviderCustomer | None, stripe_customer: str) -> None:
        """Refuses a Stripe customer other than the one the customer is linked to."""
        if linked is None:
            return
        require_linked(linked)
        if linked.provider_customer_id != stripe_customer:
            raise InvalidArgument(
                f"customer {linked.customer_id!r} is linked to the Stripe customer {linked.provider_customer_id}, "
                f"not {stripe_customer}",
                field=CUSTOMER,
                reason="OTHER_PROVIDER_CUSTOMER",
            )

    async def _checked(self, charges: StripeCharges, known: bool, stripe_customer: str, stripe_method: str) -> Card:
        """The method's card, once Stripe shows the customer (unless `known`)
        and the method are the account's, the method attached to the
        customer (attached here when it was not) and its default."""
        if not known:
            with at_stripe(CUSTOMER, f"the Stripe customer {stripe_customer}"):
                await stripe_customers.customer(charges, stripe_customer)
        with at_stripe(METHOD, f"the payment method {stripe_method}"):
            method = await stripe_customers.payment_method(charges, stripe_method)
            holder = stripe_customers.owner(method)
            if not holder:
                method = await stripe_customers.attach(charges, stripe_method, stripe_customer)
            elif holder != stripe_customer:
                raise InvalidArgument(
                    f"the payment method {stripe_method} is attached to another Stripe customer than {stripe_customer}",
                    field=METHOD,
                    reason="OTHER_CUSTOMERS_METHOD",
                )
            await stripe_customers.set_default(charges, stripe_customer, stripe_method)
        return stripe_customers.card_of(method)

    async def create(self, org: str, spec: pb.PaymentMethod) -> PaymentMethod:
        # The proto's rules hold (the ids given, at most 200 characters, a
        # known provider): the server checked them before this runs.
        charges = await self.accounts.charges(org)
        async with self.sessions() as session:
            linked = await session.get(ProviderCustomer, (org, spec.customer_id))
        self._linked_to(linked, spec.provider_customer_id)
        card = await self._checked(charges, linked is not None, spec.provider_customer_id, spec.provider_payment_method)
        async with self.sessions() as session, session.begin():
            await lock_customer(session, org, spec.customer_id)
            linked = await session.get(ProviderCustomer, (org, spec.customer_id), with_for_update=True)
            self._linked_to(linked, spec.provider_customer_id)  # as it was checked, unless it changed meanwhile
            if linked is None:
                session.add(
                    ProviderCustomer(
                        organization_id=org,
                        customer_id=spec.customer_id,
                        provider=STRIPE,
                        provider_customer_id=spec.provider_customer_id,
                        status=LINK_LINKED,
                    )
                )
            return await save(
                session, org, spec.customer_id, spec.provider_customer_id, spec.provider_payment_method, card
            )

    async def list(self, org: str, customer_id: str) -> list[PaymentMethod]:
        query = (
            select(PaymentMethod)
            .where(PaymentMethod.organization_id == org, PaymentMethod.customer_id == customer_id)
            .order_by(PaymentMethod.is_default.desc(), PaymentMethod.create_time.desc(), PaymentMethod.id.desc())
        )
        async with self.sessions() as session:
            return list((await session.execute(query)).scalars())

    async def set_default(self, org: str, customer_id: str, method_id: str) -> PaymentMethod:
        async with self.sessions() as session:
            method = await self._find(session, org, customer_id, method_id)
        charges = await self.accounts.charges(org)
        with at_stripe("id", f"the payment method {method.provider_payment_method}"):
            await stripe_customers.set_default(charges, method.provider_customer_id, method.provider_payment_method)
        async with self.sessions() as session, session.begin():
            await lock_customer(session, org, customer_id)
            method = await self._find(session, org, customer_id, method_id)
            await _make_default(session, method)
        return method

    async def delete(self, org: str, customer_id: str, method_id: str) -> None:
        async with self.sessions() as session:
            method = await self._find(session, org, customer_id, method_id)
            successor = await newest(session, org, customer_id, but=method.id) if method.is_default else None
        charges = await self.accounts.charges(org)
        with at_stripe("id", f"the payment method {method.provider_payment_method}"):
            if successor is not None:
                await stripe_customers.set_default(
                    charges, successor.provider_customer_id, successor.provider_payment_method
                )
            try:
                await stripe_customers.detach(charges, method.provider_payment_method)
            except stripe_customers.KeyRefused:
                raise
            except (stripe_customers.Missing, stripe_customers.Refused):
                pass  # gone, or no longer attached: nothing to charge there either
        async with self.sessions() as session, session.begin():
            await lock_customer(session, org, customer_id)
            method = await self._find(session, org, customer_id, method_id)
            await remove(session, method)

    async def setup_link(self, org: str, request: pb.CreateSetupLinkRequest) -> pb.SetupLink:
        async with self.sessions() as session:
            linked = await session.get(ProviderCustomer, (org, request.customer_id))
        if linked is None:
            raise NotFound(f"customer {request.customer_id!r} has no Stripe customer", field="customer_id")
        require_linked(linked)
        charges = await self.accounts.charges(org)
        stripe_customer, key = linked.provider_customer_id, new_id("setup")
        with at_stripe("customer_id", f"the Stripe customer {stripe_customer}"):
            intent = await stripe_customers.setup_intent(charges, org, request.customer_id, stripe_customer, key)
            url = ""
            if request.success_url:
                checkout = await stripe_customers.setup_session(
                    charges, org, request.customer_id, stripe_customer, key, request.success_url, request.cancel_url
                )
                url = checkout.url or ""
        return pb.SetupLink(
            customer_id=request.customer_id,
            provider_customer_id=stripe_customer,
            setup_intent_id=intent.id,
            client_secret=intent.client_secret or "",
            url=url,
        )

    async def provider_customer(self, org: str, customer_id: str) -> pb.ProviderCustomer:
        async with self.sessions() as session:
            linked = await session.get(ProviderCustomer, (org, customer_id))
            if linked is None:
                raise NotFound(f"customer {customer_id!r} is not known to payments", field="customer_id")
            has_method = await newest(session, org, customer_id) is not None
        return provider_customer_proto(linked, has_method)


class PaymentMethodRpcs:
    """PaymentService's payment method RPCs; PaymentServicer inherits them and gives `methods`."""

    methods: PaymentMethods | None

    def _methods(self) -> PaymentMethods:
        assert self.methods is not None  # the server gives one
        return self.methods

    async def CreatePaymentMethod(self, request: pb.CreatePaymentMethodRequest, context: Context) -> pb.PaymentMethod:
        return method_proto(await self._methods().create(tenancy.organization_id(), request.payment_method))

    async def ListPaymentMethods(
        self, request: pb.ListPaymentMethodsRequest, context: Context
    ) -> pb.ListPaymentMethodsResponse:
        listed = await self._methods().list(tenancy.organization_id(), request.customer_id)
        return pb.ListPaymentMethodsResponse(payment_methods=[method_proto(m) for m in listed])

    async def SetDefaultPaymentMethod(
        self, request: pb.SetDefaultPaymentMethodRequest, context: Context
    ) -> pb.PaymentMethod:
        org = tenancy.organization_id()
        return method_proto(await self._methods().set_default(org, request.customer_id, request.id))

    async def DeletePaymentMethod(self, request: pb.DeletePaymentMethodRequest, context: Context) -> empty_pb2.Empty:
        await self._methods().delete(tenancy.organization_id(), request.customer_id, request.id)
        return empty_pb2.Empty()

    async def CreateSetupLink(self, request: pb.CreateSetupLinkRequest, context: Context) -> pb.SetupLink:
        return await self._methods().setup_link(tenancy.organization_id(), request)

    async def GetProviderCustomer(
        self, request: pb.GetProviderCustomerRequest, context: Context
    ) -> pb.ProviderCustomer:
        return await self._methods().provider_customer(tenancy.organization_id(), request.customer_id)
