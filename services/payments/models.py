"""Payments tables: what is owed per finalized invoice and its charges, payment methods, the outbox."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, DateTime, Integer, String, UniqueConstraint, func
from sqlalchemy.orm import Mapped, mapped_column

from services.common.db import declarative_base
from services.common.outbox import outbox_table

Base = declarative_base()
Outbox = outbox_table(Base.metadata)


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
    # The provider's id of the last charge (a Stripe PaymentIntent), and why it failed.
    provider_payment_id: Mapped[str] = mapped_column(String(200), default="", server_default="")
    failure_message: Mapped[str] = mapped_column(String(500), default="", server_default="")
    # Failed charges so far: each attempt's idempotency key, so a retry after
    # a crash replays the attempt at the provider instead of charging twice.
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


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
