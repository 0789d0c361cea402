"""Catalog tables. Every row carries its organization_id; every query filters by it."""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypedDict

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    func,
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


class PropertyFilter(TypedDict):
    """A property charges may filter on, and its values (proto3 JSON of PropertyValues)."""

    key: str
    values: list[str]


class Organization(Base):
    __tablename__ = "organizations"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    create_time: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    # Rate limits (bxb.catalog.v1.RateLimits as proto3 JSON) over all its keys
    # and for each key; {} takes the gateway's defaults.
    rate_limits: Mapped[dict[str, int]] = mapped_column(Json, default=dict, server_default="{}")
    key_rate_limits: Mapped[dict[str, int]] = mapped_column(Json, default=dict, server_default="{}")


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), index=True)
    # A keyed hash of the secret (hash_scheme "hmac-sha256": HMAC-SHA256 under a
    # key derived from BXB_SECRET_KEY), or for rows made before it plain
    # SHA-256 ("sha256"), re-hashed on their first use. Secrets are 256-bit
    # random, so a fast hash allows an indexed lookup without weakening them;
    # the key makes a leaked table useless without the server secret.
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    hash_scheme: Mapped[str] = mapped_column(String(16), default="hmac-sha256", server_default="sha256")
    prefix: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(200), default="", server_default="")
    # admin, write, ingest or read (keys made before roles are admin).
    role: Mapped[str] = mapped_column(String(16), default="admin", server_default="admin")
    create_time: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    expire_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    revoke_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class BillableMetric(Base):
    __tablename__ = "billable_metrics"
    __table_args__ = (UniqueConstraint("organization_id", "code"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    organization_id: Mapped[str] = mapped_column(String(64))
    code: Mapped[str] = mapped_column(String(100))
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    aggregation_type: Mapped[str] = mapped_column(String(32))
    field_name: Mapped[str] = mapped_column(String(200), default="")
    # ValueType name when the metric is fed by the event's top-level value, else "".
    value_type: Mapped[str] = mapped_column(String(32), default="", server_default="")
    # Filter keys and their values as proto3 JSON of bxb.catalog.v1.PropertyValues.
    filters: Mapped[list[PropertyFilter]] = mapped_column(Json, default=list, server_default="[]")
    create_time: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Plan(Base):
    """One immutable version of a plan; the current version has the highest number."""

    __tablename__ = "plans"
    __table_args__ = (UniqueConstraint("organization_id", "code", "version"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    organization_id: Mapped[str] = mapped_column(String(64))
    code: Mapped[str] = mapped_column(String(100))
    version: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    interval: Mapped[str] = mapped_column(String(32))
    amount_cents: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    # Charges as proto3 JSON of bxb.catalog.v1.Charge, metric snapshots included.
    charges: Mapped[list[dict[str, Any]]] = mapped_column(Json)
    pay_in_advance: Mapped[bool] = mapped_column(Boolean, default=False, server_default="false")
    trial_period_days: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    minimum_commitment_cents: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    tax_codes: Mapped[list[str]] = mapped_column(Json, default=list, server_default="[]")
    # Progressive billing thresholds as proto3 JSON of bxb.catalog.v1.UsageThreshold.
    usage_thresholds: Mapped[list[dict[str, Any]]] = mapped_column(Json, default=list, server_default="[]")
    create_time: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Customer(Base):
    __tablename__ = "customers"

    organization_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    email: Mapped[str] = mapped_column(String(320), default="")
    currency: Mapped[str] = mapped_column(String(3), default="")
    # Where the customer is charged: the payment provider and the customer's id there ("" when not set).
    billing_provider: Mapped[str] = mapped_column(String(32), default="", server_default="")
    billing_provider_customer_id: Mapped[str] = mapped_column(String(200), default="", server_default="")
    # Whether its finalized invoices are charged automatically; None: yes when it has a payment method.
    billing_auto_collect: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    tax_codes: Mapped[list[str]] = mapped_column(Json, default=list, server_default="[]")
    create_time: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    # The test clock it lives on (None for a real customer); set at creation only.
    test_clock_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # Days an ended period's invoice stays a recomputed draft.
    invoice_grace_period_days: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class Subscription(Base):
    __tablename__ = "subscriptions"
    __table_args__ = (UniqueConstraint("organization_id", "external_id"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    organization_id: Mapped[str] = mapped_column(String(64), index=True)
    customer_id: Mapped[str] = mapped_column(String(200))
    plan_id: Mapped[str] = mapped_column(ForeignKey("plans.id"))
    billing_time: Mapped[str] = mapped_column(String(32))
    start_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    terminate_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # Plan changes link the replaced and the replacing subscription.
    previous_subscription_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    next_subscription_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    external_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    # End of the free trial; None without one.
    trial_end_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    create_time: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    # The customer's test clock and grace period, copied at creation (a
    # customer's never change), so its time needs no join.
    test_clock_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    invoice_grace_period_days: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class Coupon(Base):
    __tablename__ = "coupons"
    __table_args__ = (UniqueConstraint("organization_id", "code"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    organization_id: Mapped[str] = mapped_column(String(64))
    code: Mapped[str] = mapped_column(String(100))
    # bxb.catalog.v1.Coupon in the protobuf wire format: written once, read whole.
    message: Mapped[bytes] = mapped_column(LargeBinary)
    create_time: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class AppliedCoupon(Base):
    __tablename__ = "applied_coupons"
    __table_args__ = (Index("ix_applied_coupons_customer", "organization_id", "customer_id"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    organization_id: Mapped[str] = mapped_column(String(64))
    customer_id: Mapped[str] = mapped_column(String(200))
    coupon_id: Mapped[str] = mapped_column(ForeignKey("coupons.id"))
    create_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    terminate_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class Tax(Base):
    __tablename__ = "taxes"
    __table_args__ = (UniqueConstraint("organization_id", "code"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    organization_id: Mapped[str] = mapped_column(String(64))
    code: Mapped[str] = mapped_column(String(100))
    name: Mapped[str] = mapped_column(String(200))
    # Percent, as a canonical decimal string.
    rate: Mapped[str] = mapped_column(String(40))
    description: Mapped[str] = mapped_column(Text, default="")
    applied_to_organization: Mapped[bool] = mapped_column(Boolean, default=False)
    create_time: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class AddOn(Base):
    __tablename__ = "add_ons"
    __table_args__ = (UniqueConstraint("organization_id", "code"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    organization_id: Mapped[str] = mapped_column(String(64))
    code: Mapped[str] = mapped_column(String(100))
    # bxb.catalog.v1.AddOn in the protobuf wire format: written once, read whole.
    message: Mapped[bytes] = mapped_column(LargeBinary)
    create_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class AppliedAddOn(Base):
    __tablename__ = "applied_add_ons"
    __table_args__ = (Index("ix_applied_add_ons_customer", "organization_id", "customer_id"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    organization_id: Mapped[str] = mapped_column(String(64))
    customer_id: Mapped[str] = mapped_column(String(200))
    # bxb.catalog.v1.AppliedAddOn in the protobuf wire format, add-on included.
    message: Mapped[bytes] = mapped_column(LargeBinary)
    create_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class TestClock(Base):
    """A simulated time for the customers created on it (test_clocks.py)."""

    __tablename__ = "test_clocks"
    __test__ = False  # not a pytest class, whatever its name

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    organization_id: Mapped[str] = mapped_column(String(64), index=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    frozen_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    create_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
