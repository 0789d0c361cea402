"""Customers as the payment provider knows them (provider_customers), from
bxb.catalog.v1.customer_created.

A customer billed through Stripe (billing.provider "stripe", or a payment
method given at creation) is recorded PENDING, with the Stripe customer and
payment method the tenant named, if any, its email, name, test clock and
auto_collect. Nothing is asked of Stripe here (a queue must not wait on a
remote call): the linker (linking.py) creates or checks it at Stripe, and
saves the payment method once it is shown to be that customer's. A
redelivered event changes nothing; a customer linked meanwhile (a method
added over HTTP) keeps its link and has the new method checked.

Until its customer is LINKED, nothing is charged: `require_linked` refuses
a PENDING customer (not checked yet) and a FAILED one (refused by Stripe,
or deleted there), with the reason.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bxb.catalog.v1 import events_pb2
from bxb.payments.v1 import payments_pb2 as pb
from services.common.errors import FailedPrecondition
from services.common.timestamps import to_proto
from services.payments.models import LINK_FAILED, LINK_PENDING, ProviderCustomer

CUSTOMER_CREATED = "bxb.catalog.v1.customer_created"
STRIPE = "stripe"


def provider_customer_proto(customer: ProviderCustomer, has_method: bool) -> pb.ProviderCustomer:
    auto_collect = customer.auto_collect if customer.auto_collect is not None else has_method
    return pb.ProviderCustomer(
        customer_id=customer.customer_id,
        provider=customer.provider,
        provider_customer_id=customer.provider_customer_id,
        status=pb.ProviderCustomerStatus.Value(customer.status),
        failure_message=customer.failure_message,
        auto_collect=auto_collect,
        create_time=to_proto(customer.create_time),
    )


def require_linked(customer: ProviderCustomer) -> None:
    """Refuses what waits for Stripe or was refused there."""
    if customer.status == LINK_PENDING:
        raise FailedPrecondition(
            f"customer {customer.customer_id!r} is still being linked to Stripe: its payment method is not "
            "checked yet; retry shortly",
            field="customer_id",
            reason="PROVIDER_CUSTOMER_PENDING",
        )
    if customer.status == LINK_FAILED:
        raise FailedPrecondition(
            f"customer {customer.customer_id!r} could not be linked to Stripe: {customer.failure_message}",
            field="customer_id",
            reason="PROVIDER_CUSTOMER_FAILED",
        )


async def require_chargeable(session: AsyncSession, org: str, customer_id: str) -> None:
    """Refuses to charge a customer whose Stripe customer is not linked (a
    customer payments has no record of, from before, is charged as it was)."""
    customer = await session.get(ProviderCustomer, (org, customer_id))
    if customer is not None:
        require_linked(customer)


class ProviderCustomers:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], recorded: Callable[[], None] = lambda: None):
        self.sessions = sessions
        self.recorded = recorded  # wakes the linker

    async def handle(self, subject: str, payload: bytes) -> None:
        if subject != CUSTOMER_CREATED:
            return  # other catalog facts (subscriptions, ...) are not the payments service's
        event = events_pb2.CustomerCreated.FromString(payload)
        customer, billing = event.customer, event.customer.billing
        method = event.payment_method.provider_payment_method if event.HasField("payment_method") else ""
        if (billing.provider or (STRIPE if method else "")) != STRIPE:
            return  # not charged through Stripe
        org = event.organization_id
        details = {
            "email": customer.email,
            "name": customer.name,
            "test_clock_id": customer.test_clock_id,
            "auto_collect": billing.auto_collect if billing.HasField("auto_collect") else None,
        }
        async with self.sessions() as session, session.begin():
            inserted = await session.execute(
                insert(ProviderCustomer)
                .values(
                    organization_id=org,
                    customer_id=customer.id,
                    provider=STRIPE,
                    provider_customer_id=billing.provider_customer_id or event.payment_method.provider_customer_id,
                    status=LINK_PENDING,
                    payment_method=method,
                    **details,
                )
                .on_conflict_do_nothing()
                .returning(ProviderCustomer.customer_id)
            )
            if inserted.first() is None:  # redelivered, or linked over HTTP first
                known = await session.get_one(ProviderCustomer, (org, customer.id), with_for_update=True)
                for name, value in details.items():
                    setattr(known, name, value)
                if method and method != known.payment_method and known.status != LINK_FAILED:
                    known.payment_method, known.status, known.next_attempt_time = method, LINK_PENDING, None
        self.recorded()
