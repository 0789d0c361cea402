"""Stripe's webhooks about customers and their payment methods, for the
dispatcher (webhooks.py), which verified, deduplicated and ordered nothing
else: `handlers()` by event type.

- `setup_intent.succeeded`: the end customer saved a card (a setup link);
  the method is saved as the default of the customer linked to the intent's
  Stripe customer within the organization. Its card is read at Stripe; a
  method no longer attached to that customer there (detached since) is not
  saved. When Stripe cannot be read, the signed event is trusted: the method
  is saved without its card, unless a later `payment_method.detached` of it
  was received already (provider_events).
- `payment_method.detached`: the method is forgotten; the default moves to
  the newest remaining one.
- `customer.deleted`: the customer becomes FAILED ("deleted at Stripe"), a
  terminal state, and its methods are forgotten: nothing is charged.

Each finds its object only within the organization (another's, or unknown,
changes nothing) and may be applied twice.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.common.errors import DomainError
from services.payments import stripe_customers
from services.payments.accounts import StripeAccounts
from services.payments.methods import lock_customer, remove, save
from services.payments.models import LINK_FAILED, LINK_LINKED, PaymentMethod, ProviderCustomer, ProviderEvent
from services.payments.stripe_charges import Unreachable
from services.payments.stripe_customers import Card

log = logging.getLogger("bxb.payments.method_events")

Handler = Callable[[str, dict[str, Any], int], Awaitable[None]]
DETACHED = "payment_method.detached"


def _id(value: Any) -> str:
    """An object's id, whether Stripe sent the id or the object expanded."""
    found = value.get("id") if isinstance(value, dict) else value
    return found if isinstance(found, str) else ""


class MethodEvents:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], accounts: StripeAccounts):
        self.sessions = sessions
        self.accounts = accounts

    def handlers(self) -> dict[str, Handler]:
        return {
            "setup_intent.succeeded": self.setup_succeeded,
            DETACHED: self.method_detached,
            "customer.deleted": self.customer_deleted,
        }

    async def _linked(self, session: AsyncSession, org: str, stripe_customer: str) -> list[ProviderCustomer]:
        query = select(ProviderCustomer).where(
            ProviderCustomer.organization_id == org,
            ProviderCustomer.provider_customer_id == stripe_customer,
            ProviderCustomer.status == LINK_LINKED,
        )
        return list((await session.execute(query)).scalars())

    async def _card(self, org: str, stripe_method: str, stripe_customer: str) -> Card | None:
        """The method's card as Stripe has it now; None when it is no longer
        the customer's; an empty card when Stripe cannot say."""
        try:
            charges = await self.accounts.charges(org)
            method = await stripe_customers.payment_method(charges, stripe_method)
        except stripe_customers.Missing:
            return None
        except (DomainError, Unreachable, stripe_customers.Refused) as error:
            log.warning("organization %s: the card of %s is not known: %s", org, stripe_method, error)
            return Card()
        return stripe_customers.card_of(method) if stripe_customers.owner(method) == stripe_customer else None

    async def setup_succeeded(self, org: str, obj: dict[str, Any], created: int) -> None:
        stripe_customer, stripe_method = _id(obj.get("customer")), _id(obj.get("payment_method"))
        if not stripe_customer or not stripe_method:
            return  # a SetupIntent of no customer, or without its method: nothing bxb saves
        async with self.sessions() as session:
            if not await self._linked(session, org, stripe_customer):
                return  # another organization's customer, unknown, or no longer linked
        card = await self._card(org, stripe_method, stripe_customer)
        if card is None:
            return
        async with self.sessions() as session, session.begin():
            detached = await session.execute(
                select(ProviderEvent.event_id).where(
                    ProviderEvent.organization_id == org,
                    ProviderEvent.type == DETACHED,
                    ProviderEvent.object_id == stripe_method,
                    ProviderEvent.created >= created,
                )
            )
            if detached.first() is not None:
                return  # delivered out of order: the method was detached after it was saved
            for customer in await self._linked(session, org, stripe_customer):
                await lock_customer(session, org, customer.customer_id)
                await save(session, org, customer.customer_id, stripe_customer, stripe_method, card)

    async def method_detached(self, org: str, obj: dict[str, Any], created: int) -> None:
        stripe_method = _id(obj)
        async with self.sessions() as session, session.begin():
            query = select(PaymentMethod).where(
                PaymentMethod.organization_id == org, PaymentMethod.provider_payment_method == stripe_method
            )
            for method in list((await session.execute(query)).scalars()):
                await lock_customer(session, org, method.customer_id)
                await remove(session, method)

    async def customer_deleted(self, org: str, obj: dict[str, Any], created: int) -> None:
        stripe_customer = _id(obj)
        async with self.sessions() as session, session.begin():
            query = select(ProviderCustomer).where(
                ProviderCustomer.organization_id == org, ProviderCustomer.provider_customer_id == stripe_customer
            )
            for customer in list((await session.execute(query)).scalars()):
                await lock_customer(session, org, customer.customer_id)
                customer.status, customer.failure_message = LINK_FAILED, f"{stripe_customer} was deleted at Stripe"
                customer.next_attempt_time = None
                await session.execute(
                    delete(PaymentMethod).where(
                        PaymentMethod.organization_id == org, PaymentMethod.customer_id == customer.customer_id
                    )
                )
