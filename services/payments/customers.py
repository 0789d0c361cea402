"""Saves the default payment method given when a customer is created.

Fed by bxb.catalog.v1.customer_created; a redelivered event finds the method
already saved (under the customer's lock) and changes nothing.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bxb.catalog.v1 import events_pb2
from services.common.ids import new_id
from services.payments.models import LINK_LINKED, PaymentMethod, ProviderCustomer
from services.payments.payments import lock_customer, save_default

CUSTOMER_CREATED = "bxb.catalog.v1.customer_created"


class CustomerPaymentMethods:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]):
        self.sessions = sessions

    async def handle(self, subject: str, payload: bytes) -> None:
        if subject != CUSTOMER_CREATED:
            return  # other catalog facts (subscriptions, ...) are not the payments service's
        event = events_pb2.CustomerCreated.FromString(payload)
        org, customer, details = event.organization_id, event.customer, event.payment_method
        async with self.sessions() as session, session.begin():
            await lock_customer(session, org, customer.id)
            if customer.billing.provider:
                billing = customer.billing
                await session.execute(
                    insert(ProviderCustomer)
                    .values(
                        organization_id=org,
                        customer_id=customer.id,
                        provider=billing.provider,
                        provider_customer_id=billing.provider_customer_id or details.provider_customer_id,
                        status=LINK_LINKED,
                        auto_collect=billing.auto_collect if billing.HasField("auto_collect") else None,
                        email=customer.email,
                        name=customer.name,
                        test_clock_id=customer.test_clock_id,
                    )
                    .on_conflict_do_nothing()
                )
            if not event.HasField("payment_method"):
                return  # a customer created without a payment method
            saved = await session.execute(
                select(PaymentMethod.id).where(
                    PaymentMethod.organization_id == org,
                    PaymentMethod.customer_id == customer.id,
                    PaymentMethod.provider_payment_method == details.provider_payment_method,
                )
            )
            if saved.first() is not None:
                return  # redelivered
            method = PaymentMethod(
                id=new_id("pm"),
                organization_id=org,
                customer_id=customer.id,
                provider=customer.billing.provider or "stripe",
                provider_customer_id=details.provider_customer_id,
                provider_payment_method=details.provider_payment_method,
                is_default=True,
            )
            await save_default(session, method)
