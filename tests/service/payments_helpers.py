"""The payments database as tests read it, and charging as another payments process does it."""

from __future__ import annotations

from sqlalchemy import select

from services.common import bus, db, peers
from services.common.outbox import OutboxRelay
from services.payments.accounts import StripeAccounts
from services.payments.charging import Charging
from services.payments.models import Outbox, Payment, PaymentAttempt
from tests.conftest import Infra, Stack, unique


class PaymentsDb:
    def __init__(self, infra: Infra, stack: Stack):
        assert stack.stripe is not None
        self.stack = stack
        self.stripe_url = stack.stripe.url  # the Stripe the stack's payments call
        self.engine = db.create_engine(infra.postgres.url("payments"), pool_size=2)
        self.sessions = db.sessions(self.engine)
        self.invoicing = peers.Invoicing(stack.invoicing)
        self.bus = bus.Bus(infra.nats.url, unique("unopened"))  # never opened: the stack's relay publishes

    async def attempts(self, invoice_id: str) -> list[PaymentAttempt]:
        async with self.sessions() as session:
            query = select(PaymentAttempt).where(PaymentAttempt.invoice_id == invoice_id)
            return list((await session.execute(query.order_by(PaymentAttempt.create_time))).scalars())

    async def payment(self, invoice_id: str) -> Payment:
        """The invoice's payment; an AssertionError (which `eventually` waits out) until payments has recorded it."""
        async with self.sessions() as session:
            found = await session.execute(select(Payment).where(Payment.invoice_id == invoice_id))
        payment = found.scalar_one_or_none()
        assert payment is not None, f"payments has no payment of {invoice_id} yet"
        return payment

    def charging(self, stripe_url: str = "", accounts: StripeAccounts | None = None, **options) -> Charging:
        """Charging as another payments process does it, with each
        organization's own account at `stripe_url` (the stack's Stripe by
        default), or `accounts`; its outbox rows are published by the stack's."""
        relay = OutboxRelay(self.sessions, Outbox, self.bus)
        accounts = accounts or StripeAccounts(self.sessions, stripe_url or self.stripe_url)
        return Charging(self.sessions, relay, self.invoicing, accounts, **options)
