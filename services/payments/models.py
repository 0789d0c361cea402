"""Payments tables: what is owed per finalized invoice, each attempt to
charge it, payment methods, the outbox."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, DateTime, ForeignKey, Index, MetaData, String, UniqueConstraint, func, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from services.common.db import NAMING
from services.common.outbox import outbox_table
from services.common.parking import parked_table


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


Outbox = outbox_table(Base.metadata)
Parked = parked_table(Base.metadata)

# A payment's status: bxb.payments.v1.PaymentStatus names.
PAYMENT_PENDING, PAYMENT_SUCCEEDED, PAYMENT_FAILED = (
    "PAYMENT_STATUS_PENDING",
    "PAYMENT_STATUS_SUCCEEDED",
    "PAYMENT_STATUS_FAILED",
)
PAYMENT_CANCELED, PAYMENT_REQUIRES_ACTION = "PAYMENT_STATUS_CANCELED", "PAYMENT_STATUS_REQUIRES_ACTION"


class Payment(Base):
    __tablename__ = "payments"
    __table_args__ = (UniqueConstraint("organization_id", "invoice_id"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    organization_id: Mapped[str] = mapped_column(String(64))
    invoice_id: Mapped[str] = mapped_column(String(64))
    customer_id: Mapped[str] = mapped_column(String(200), index=True)
    amount_cents: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(32))
    create_time: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    # The provider's id of the charge that succeeded or waits for the
    # customer (a Stripe PaymentIntent), and why the last one was declined.
    provider_payment_id: Mapped[str] = mapped_column(String(200), default="", server_default="")
    failure_message: Mapped[str] = mapped_column(String(500), default="", server_default="")


# Attempts that may still move money: one at most per payment.
OPEN_ATTEMPT = "status IN ('in_flight', 'unknown', 'requires_action')"


class PaymentAttempt(Base):
    """One charge of a payment at the provider, stored (in_flight) before
    the provider is called, so a process that dies mid-call leaves it to be
    looked up instead of charged again. See services/payments/attempts.py."""

    __tablename__ = "payment_attempts"
    __table_args__ = (
        Index("uq_payment_attempts_open", "payment_id", unique=True, postgresql_where=text(OPEN_ATTEMPT)),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    organization_id: Mapped[str] = mapped_column(String(64))
    payment_id: Mapped[str] = mapped_column(String(64), ForeignKey("payments.id"), index=True)
    invoice_id: Mapped[str] = mapped_column(String(64))
    # Sent with every request of this attempt: the provider replays it, never charges twice.
    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)
    amount_cents: Mapped[int] = mapped_column(BigInteger)  # what the invoice asked, bxb's minor units
    provider_amount: Mapped[int] = mapped_column(BigInteger)  # what is charged, in the provider's units
    uncharged_cents: Mapped[int] = mapped_column(BigInteger)  # left out by the provider's rounding
    currency: Mapped[str] = mapped_column(String(3))
    # The provider's customer and payment method charged: a retry sends the very same request.
    provider_customer_id: Mapped[str] = mapped_column(String(200))
    provider_payment_method: Mapped[str] = mapped_column(String(200))
    # in_flight, unknown, requires_action (open); succeeded, failed, rejected (final).
    status: Mapped[str] = mapped_column(String(32), index=True)
    provider_payment_id: Mapped[str] = mapped_column(String(200), default="", server_default="")
    failure_reason: Mapped[str] = mapped_column(String(100), default="", server_default="")  # the provider's code
    failure_message: Mapped[str] = mapped_column(String(500), default="", server_default="")
    # Who talks to the provider for an in_flight attempt, since when: a claim
    # older than the provider's deadline was left by a process that died.
    claim_token: Mapped[str] = mapped_column(String(32))
    claim_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    create_time: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class PaymentMethod(Base):
    __tablename__ = "payment_methods"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    organization_id: Mapped[str] = mapped_column(String(64))
    customer_id: Mapped[str] = mapped_column(String(200), index=True)
    provider: Mapped[str] = mapped_column(String(32))
    provider_customer_id: Mapped[str] = mapped_column(String(200))
    provider_payment_method: Mapped[str] = mapped_column(String(200))
    is_default: Mapped[bool] = mapped_column(Boolean)
    create_time: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
