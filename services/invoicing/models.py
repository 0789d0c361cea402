"""Invoicing tables: a projection of subscriptions (fed by catalog events)
and the invoices this service issues."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from services.common.db import NAMING
from services.common.outbox import outbox_table
from services.common.parking import parked_table


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


Outbox = outbox_table(Base.metadata)
Parked = parked_table(Base.metadata)

Json = JSON().with_variant(JSONB(), "postgresql")


class Subscription(Base):
    """What invoicing knows of a subscription: enough to bill it without
    calling the catalog. Written only from bxb.catalog.v1 events."""

    __tablename__ = "subscriptions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    organization_id: Mapped[str] = mapped_column(String(64), index=True)
    customer_id: Mapped[str] = mapped_column(String(200))
    # The pinned plan version as proto3 JSON of bxb.catalog.v1.Plan.
    plan: Mapped[dict[str, Any]] = mapped_column(Json)
    billing_time: Mapped[str] = mapped_column(String(32))
    start_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    terminate_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    create_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # Every period ending at or before this instant has its invoice.
    billed_through: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # Every period starting before this instant has its in-advance invoice.
    advance_billed_through: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # End of the free trial (periods start there); None without one.
    trial_end_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # Whether trial_ended has been published.
    trial_end_announced: Mapped[bool] = mapped_column(Boolean, default=False, server_default="false")
    # The customer's test clock: its periods close at the clock's time (clocks.py).
    test_clock_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # Days an ended period's invoice stays a draft, recomputed, before it is finalized.
    invoice_grace_period_days: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # Ended, every period billed: nothing can fall due any more, so the billing run skips it.
    billing_finished: Mapped[bool] = mapped_column(Boolean, default=False, server_default="false")

    __table_args__ = (Index("ix_subscriptions_unfinished", "id", postgresql_where=text("NOT billing_finished")),)

    @property
    def billing_start(self) -> datetime:
        """Where billing periods start: the end of the free trial, else the start."""
        return self.trial_end_time or self.start_time


class Invoice(Base):
    __tablename__ = "invoices"
    # Exactly one live invoice per subscription, period and timing, whatever
    # races; a voided one leaves its place to the invoice replacing it.
    __table_args__ = (
        Index(
            "uq_invoices_live_period",
            "subscription_id",
            "period_start",
            "timing",
            unique=True,
            postgresql_where=text("void_time IS NULL AND timing <> 'BILLING_TIMING_ONE_OFF'"),
        ),
        # One one-off invoice per thing it bills (an applied add-on).
        Index("uq_invoices_source", "source_id", unique=True, postgresql_where=text("source_id IS NOT NULL")),
        UniqueConstraint("organization_id", "number"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    organization_id: Mapped[str] = mapped_column(String(64))
    # None while a draft: numbers are taken at finalization, so they stay gapless.
    number: Mapped[str | None] = mapped_column(String(32), nullable=True)
    customer_id: Mapped[str] = mapped_column(String(200), index=True)
    subscription_id: Mapped[str] = mapped_column(String(64))
    plan_code: Mapped[str] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(32))
    currency: Mapped[str] = mapped_column(String(3))
    period_start: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    period_end: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # Fee lines as proto3 JSON of bxb.invoicing.v1.Fee.
    fees: Mapped[list[dict[str, Any]]] = mapped_column(Json)
    subtotal_cents: Mapped[int] = mapped_column(BigInteger)
    total_amount_cents: Mapped[int] = mapped_column(BigInteger)
    issue_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    create_time: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    # BillingTiming name: billed at the period's end (usage) or start (advance fees).
    timing: Mapped[str] = mapped_column(String(32), default="BILLING_TIMING_IN_ARREARS")
    calculation_id: Mapped[str] = mapped_column(String(64), default="")
    # What a one-off invoice bills (an applied add-on's id); None otherwise.
    source_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # When it was voided; it stays voided when archived.
    void_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # Coupon discounts as proto3 JSON of bxb.invoicing.v1.InvoiceCoupon.
    coupons: Mapped[list[dict[str, Any]]] = mapped_column(Json, default=list, server_default="[]")
    coupons_amount_cents: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    # Tax lines as proto3 JSON of bxb.invoicing.v1.InvoiceTax.
    taxes: Mapped[list[dict[str, Any]]] = mapped_column(Json, default=list, server_default="[]")
    taxes_amount_cents: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    # Sum of its credit notes; its own amounts never change.
    credit_notes_amount_cents: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    # A draft's grace period end: it is finalized then, with the usage known by then.
    grace_end_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # Collection as the payments service last announced it (payment_updated): the
    # InvoicePaymentStatus name (None: nothing heard yet), the page the customer acts
    # on, and the payment's version, so an older or repeated announcement changes nothing.
    payment_status: Mapped[str | None] = mapped_column(String(48), nullable=True)
    payment_url: Mapped[str] = mapped_column(Text, default="", server_default="")
    payment_version: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")


class InvoiceSequence(Base):
    """Last invoice number per organization; incremented under a row lock in
    the invoice's own transaction, so numbers are sequential and gapless."""

    __tablename__ = "invoice_sequences"

    organization_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    last_number: Mapped[int] = mapped_column(BigInteger)


class Calculation(Base):
    """A stored pricing calculation."""

    __tablename__ = "calculations"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    organization_id: Mapped[str] = mapped_column(String(64))
    customer_id: Mapped[str] = mapped_column(String(200))
    subscription_id: Mapped[str] = mapped_column(String(64))
    period_start: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    period_end: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    total_amount_cents: Mapped[int] = mapped_column(BigInteger)
    # bxb.invoicing.v1.Calculation in the protobuf wire format: written and
    # read whole, and much faster to encode than JSON.
    message: Mapped[bytes] = mapped_column(LargeBinary)
    create_time: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class AppliedCoupon(Base):
    """A coupon applied to a customer, projected from catalog events."""

    __tablename__ = "applied_coupons"
    __table_args__ = (Index("ix_applied_coupons_customer", "organization_id", "customer_id"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    organization_id: Mapped[str] = mapped_column(String(64))
    customer_id: Mapped[str] = mapped_column(String(200))
    # bxb.catalog.v1.Coupon in the protobuf wire format, as it was when applied.
    coupon: Mapped[bytes] = mapped_column(LargeBinary)
    apply_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    terminate_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class CouponRedemption(Base):
    """What one applied coupon took off one invoice: the record of what a
    coupon has given, from which what it still gives is computed."""

    __tablename__ = "coupon_redemptions"

    invoice_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    applied_coupon_id: Mapped[str] = mapped_column(String(64), primary_key=True, index=True)
    subscription_id: Mapped[str] = mapped_column(String(64))
    period_start: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    amount_cents: Mapped[int] = mapped_column(BigInteger)


class InterimAmount(Base):
    """What an invoice issued on request billed of one subscription period:
    the period's end-of-period invoice deducts it."""

    __tablename__ = "interim_amounts"

    invoice_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    period_start: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    subscription_id: Mapped[str] = mapped_column(String(64), index=True)
    amount_cents: Mapped[int] = mapped_column(BigInteger)


class CreditNote(Base):
    __tablename__ = "credit_notes"
    __table_args__ = (UniqueConstraint("organization_id", "number"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    organization_id: Mapped[str] = mapped_column(String(64))
    number: Mapped[str] = mapped_column(String(32))
    invoice_id: Mapped[str] = mapped_column(String(64), index=True)
    customer_id: Mapped[str] = mapped_column(String(200))
    # bxb.invoicing.v1.CreditNote in the protobuf wire format: written once, read whole.
    message: Mapped[bytes] = mapped_column(LargeBinary)
    create_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class CreditNoteSequence(Base):
    """Last credit note number per organization (gapless, like invoices')."""

    __tablename__ = "credit_note_sequences"

    organization_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    last_number: Mapped[int] = mapped_column(BigInteger)


class ThresholdCrossing(Base):
    """How many of its plan's usage thresholds a subscription period has
    been invoiced for (progressive billing)."""

    __tablename__ = "threshold_crossings"

    subscription_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    period_start: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    crossed: Mapped[int] = mapped_column(BigInteger)


class TestClock(Base):
    """A test clock's time, projected from bxb.catalog.v1.test_clock_advanced."""

    __tablename__ = "test_clocks"
    __test__ = False  # not a pytest class, whatever its name

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    organization_id: Mapped[str] = mapped_column(String(64))
    frozen_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
