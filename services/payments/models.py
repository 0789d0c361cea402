"""Payments tables: what is owed per finalized invoice, each attempt to
charge it, payment methods, the outbox."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY
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
PAYMENT_REFUNDED, PAYMENT_PARTIALLY_REFUNDED = "PAYMENT_STATUS_REFUNDED", "PAYMENT_STATUS_PARTIALLY_REFUNDED"
PAYMENT_DISPUTED, PAYMENT_UNCOLLECTIBLE = "PAYMENT_STATUS_DISPUTED", "PAYMENT_STATUS_UNCOLLECTIBLE"


class Payment(Base):
    __tablename__ = "payments"
    __table_args__ = (UniqueConstraint("organization_id", "invoice_id"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    organization_id: Mapped[str] = mapped_column(String(64))
    invoice_id: Mapped[str] = mapped_column(String(64))
    customer_id: Mapped[str] = mapped_column(String(200), index=True)
    amount_cents: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(40))  # PAYMENT_STATUS_PARTIALLY_REFUNDED is 33 characters
    create_time: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    # The provider's id of the charge that succeeded or waits for the
    # customer (a Stripe PaymentIntent), and why the last one was declined.
    provider_payment_id: Mapped[str] = mapped_column(String(200), default="", server_default="")
    failure_message: Mapped[str] = mapped_column(String(500), default="", server_default="")
    failure_reason: Mapped[str] = mapped_column(String(100), default="", server_default="")
    # The 3-D Secure page while requires_action, the payment link after a decline.
    payment_url: Mapped[str] = mapped_column(String(2000), default="", server_default="")
    # The open payment link (a Stripe Checkout Session) behind payment_url after a decline.
    payment_link_id: Mapped[str] = mapped_column(String(200), default="", server_default="")
    refunded_amount_cents: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    attempt_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # When collection (automatic, then dunning) charges next, in the
    # customer's time: its test clock's when it has one (test_clock_id).
    next_attempt_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    test_clock_id: Mapped[str] = mapped_column(String(64), default="", server_default="")
    # The dunning campaign retrying it, and when its first charge was declined.
    dunning_campaign_id: Mapped[str] = mapped_column(String(64), default="", server_default="")
    first_failure_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # Grows with every change announced (payment_updated), so readers apply only newer ones.
    version: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    update_time: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


# Payments whose collection is due, found by the collector without a scan.
Index(
    "ix_payments_next_attempt_time",
    Payment.next_attempt_time,
    postgresql_where=text("next_attempt_time IS NOT NULL"),
)

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
    # Why it was made: bxb.payments.v1.PaymentAttemptTrigger names.
    trigger: Mapped[str] = mapped_column(
        String(40), default="PAYMENT_ATTEMPT_TRIGGER_MANUAL", server_default="PAYMENT_ATTEMPT_TRIGGER_MANUAL"
    )


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
    card_brand: Mapped[str] = mapped_column(String(32), default="", server_default="")
    card_last4: Mapped[str] = mapped_column(String(4), default="", server_default="")
    card_exp_month: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    card_exp_year: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class ProviderAccount(Base):
    """An organization's own account at a payment provider; its secrets
    sealed (services/common/sealing.py), never returned."""

    __tablename__ = "provider_accounts"

    organization_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    provider: Mapped[str] = mapped_column(String(32), primary_key=True)
    account_id: Mapped[str] = mapped_column(String(200))
    livemode: Mapped[bool] = mapped_column(Boolean)
    secret_key_sealed: Mapped[str] = mapped_column(String(2000))
    webhook_secret_sealed: Mapped[str] = mapped_column(String(2000))
    secret_key_hint: Mapped[str] = mapped_column(String(40))
    create_time: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    update_time: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


# A provider customer's linking state: bxb.payments.v1.ProviderCustomerStatus names.
LINK_PENDING, LINK_LINKED, LINK_FAILED = (
    "PROVIDER_CUSTOMER_STATUS_PENDING",
    "PROVIDER_CUSTOMER_STATUS_LINKED",
    "PROVIDER_CUSTOMER_STATUS_FAILED",
)


class ProviderCustomer(Base):
    """What payments knows of a bxb customer (from customer_created): its
    customer at the provider, how it collects, the clock it lives on."""

    __tablename__ = "provider_customers"

    organization_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    provider: Mapped[str] = mapped_column(String(32))
    provider_customer_id: Mapped[str] = mapped_column(String(200), default="", server_default="")
    status: Mapped[str] = mapped_column(String(40))
    failure_message: Mapped[str] = mapped_column(String(500), default="", server_default="")
    auto_collect: Mapped[bool | None] = mapped_column(Boolean, nullable=True)  # None: when a method exists
    email: Mapped[str] = mapped_column(String(320), default="", server_default="")
    name: Mapped[str] = mapped_column(String(200), default="", server_default="")
    test_clock_id: Mapped[str] = mapped_column(String(64), default="", server_default="")
    create_time: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    # The payment method given at creation, saved once checked at the provider (linking.py).
    payment_method: Mapped[str] = mapped_column(String(200), default="", server_default="")
    # While PENDING: the provider calls that found it unreachable in a row, and
    # when the linker may take it next (its lease while it is being linked, then its backoff).
    attempt_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    next_attempt_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


# Customers still to be created or checked at the provider, found without a scan.
Index(
    "ix_provider_customers_pending",
    ProviderCustomer.organization_id,
    postgresql_where=text("status = 'PROVIDER_CUSTOMER_STATUS_PENDING'"),
)
# ... in the order the linker takes them.
Index(
    "ix_provider_customers_due",
    ProviderCustomer.next_attempt_time,
    postgresql_where=text("status = 'PROVIDER_CUSTOMER_STATUS_PENDING'"),
)


class TestClock(Base):
    """Test clocks' times, projected from bxb.catalog.v1.test_clock_advanced:
    a clock's customers are collected and dunned at its time."""

    __test__ = False  # not a pytest class, whatever its name
    __tablename__ = "test_clocks"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    organization_id: Mapped[str] = mapped_column(String(64))
    frozen_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class DunningCampaign(Base):
    __tablename__ = "dunning_campaigns"
    __table_args__ = (
        UniqueConstraint("organization_id", "code"),
        Index("uq_dunning_campaigns_default", "organization_id", unique=True, postgresql_where=text("is_default")),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    organization_id: Mapped[str] = mapped_column(String(64))
    code: Mapped[str] = mapped_column(String(100))
    name: Mapped[str] = mapped_column(String(200))
    retry_days: Mapped[list[int]] = mapped_column(ARRAY(Integer))
    max_attempts: Mapped[int] = mapped_column(Integer)
    send_emails: Mapped[bool] = mapped_column(Boolean)
    is_default: Mapped[bool] = mapped_column(Boolean)
    create_time: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class ProviderEvent(Base):
    """A webhook event received from a provider, once: its id is the dedup
    key; `created` orders what it says against later events."""

    __tablename__ = "provider_events"

    organization_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    provider: Mapped[str] = mapped_column(String(32))
    type: Mapped[str] = mapped_column(String(100))
    object_id: Mapped[str] = mapped_column(String(200))
    created: Mapped[int] = mapped_column(BigInteger)  # the provider's time of the event, Unix seconds
    receive_time: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


# A refund's status: bxb.payments.v1.RefundStatus names.
REFUND_PENDING, REFUND_SUCCEEDED, REFUND_FAILED = (
    "REFUND_STATUS_PENDING",
    "REFUND_STATUS_SUCCEEDED",
    "REFUND_STATUS_FAILED",
)


class Refund(Base):
    """Money given back for one refund credit note, sent to the provider
    with an idempotency key of its own, so it is given back once; or a
    refund made at the provider itself (its dashboard), recorded from its
    webhook with no credit note. See services/payments/refunds.py."""

    __tablename__ = "refunds"
    __table_args__ = (
        # One per refund credit note; refunds made at Stripe itself have none (credit_note_id "").
        Index(
            "uq_refunds_credit_note",
            "organization_id",
            "credit_note_id",
            unique=True,
            postgresql_where=text("credit_note_id <> ''"),
        ),
        # Refunds the refunder sends or looks up, found without a scan.
        Index("ix_refunds_due", "next_attempt_time", postgresql_where=text("status = 'REFUND_STATUS_PENDING'")),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    organization_id: Mapped[str] = mapped_column(String(64))
    payment_id: Mapped[str] = mapped_column(String(64), ForeignKey("payments.id"), index=True)
    invoice_id: Mapped[str] = mapped_column(String(64))
    credit_note_id: Mapped[str] = mapped_column(String(64))
    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)
    amount_cents: Mapped[int] = mapped_column(BigInteger)
    provider_amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    provider_payment_id: Mapped[str] = mapped_column(String(200))  # the PaymentIntent refunded
    status: Mapped[str] = mapped_column(String(40))
    # Whether the provider was asked yet (a pending refund not yet sent is sent by the refunder).
    sent: Mapped[bool] = mapped_column(Boolean, default=False, server_default="false")
    provider_refund_id: Mapped[str] = mapped_column(String(200), default="", server_default="")
    failure_message: Mapped[str] = mapped_column(String(500), default="", server_default="")
    next_attempt_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    create_time: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class PaymentNotice(Base):
    """An email sent to a customer about its payment (a decline, 3-D Secure,
    giving up), once per payment, charge and kind."""

    __tablename__ = "payment_notices"

    payment_id: Mapped[str] = mapped_column(String(64), ForeignKey("payments.id"), primary_key=True)
    attempt_count: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(60), primary_key=True)
    organization_id: Mapped[str] = mapped_column(String(64))
    send_time: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


# The attempt that made a provider's charge, found from the charge's webhooks without a scan.
Index(
    "ix_payment_attempts_provider_payment_id",
    PaymentAttempt.provider_payment_id,
    postgresql_where=text("provider_payment_id <> ''"),
)


class Announcement(Base):
    """A public event (the catalog in services/payments/event_catalog.py) as
    sent to webhook endpoints and analytics tools: its body is rendered once,
    so every attempt and replay sends the very same bytes under one id."""

    __tablename__ = "announcements"
    __table_args__ = (UniqueConstraint("organization_id", "source_key"),)

    # "evt_...": the `webhook-id` receivers deduplicate on.
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    # Its place among all announcements: deliveries of one customer go in this order.
    sequence: Mapped[int] = mapped_column(BigInteger, Identity(), unique=True)
    organization_id: Mapped[str] = mapped_column(String(64))
    type: Mapped[str] = mapped_column(String(100))
    # The customer it concerns (deliveries are ordered per customer); "" for none.
    customer_id: Mapped[str] = mapped_column(String(200), default="", server_default="")
    # What it was made from (a domain event's id and the type), so a
    # redelivered domain event announces nothing twice.
    source_key: Mapped[str] = mapped_column(String(300))
    occur_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # The JSON body sent: {"type", "timestamp", "data"}.
    payload: Mapped[str] = mapped_column(Text)
    # For a resync's history: the resync it belongs to (sent to its integration only).
    resync_id: Mapped[str] = mapped_column(String(64), default="", server_default="")
    create_time: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class WebhookEndpoint(Base):
    """An organization's URL receiving its announcements, with its signing
    secrets sealed (the previous one signs beside it until it expires)."""

    __tablename__ = "webhook_endpoints"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    organization_id: Mapped[str] = mapped_column(String(64), index=True)
    url: Mapped[str] = mapped_column(String(2000))
    description: Mapped[str] = mapped_column(String(500), default="", server_default="")
    event_types: Mapped[list[str]] = mapped_column(ARRAY(String(100)), default=list, server_default="{}")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True, server_default="true")
    secret_sealed: Mapped[str] = mapped_column(String(2000))
    previous_secret_sealed: Mapped[str] = mapped_column(String(2000), default="", server_default="")
    previous_secret_expire_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    disabled_reason: Mapped[str] = mapped_column(String(500), default="", server_default="")
    failing_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    create_time: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    update_time: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Integration(Base):
    """An organization's account at a revenue-analytics tool (chartmogul,
    baremetrics, profitwell): its API key sealed, where its data lives there."""

    __tablename__ = "integrations"
    __table_args__ = (UniqueConstraint("organization_id", "provider"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    organization_id: Mapped[str] = mapped_column(String(64))
    provider: Mapped[str] = mapped_column(String(32))
    api_key_sealed: Mapped[str] = mapped_column(String(2000))
    api_key_hint: Mapped[str] = mapped_column(String(40))
    # ChartMogul's data source uuid, Baremetrics' source id; "" for ProfitWell.
    data_source_id: Mapped[str] = mapped_column(String(200), default="", server_default="")
    last_sync_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    last_error: Mapped[str] = mapped_column(String(1000), default="", server_default="")
    last_error_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    create_time: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    update_time: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


# A delivery's status: bxb.payments.v1.DeliveryStatus names.
DELIVERY_PENDING, DELIVERY_SUCCEEDED = "DELIVERY_STATUS_PENDING", "DELIVERY_STATUS_SUCCEEDED"
DELIVERY_FAILED, DELIVERY_CANCELED = "DELIVERY_STATUS_FAILED", "DELIVERY_STATUS_CANCELED"


class Delivery(Base):
    """One announcement on its way to one sink: a webhook endpoint
    (endpoint_id) or an analytics integration (integration_id). Each sink is
    its own queue: a delivery waits only for the sink's earlier deliveries
    of the same customer, never for another sink's."""

    __tablename__ = "deliveries"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    organization_id: Mapped[str] = mapped_column(String(64))
    announcement_id: Mapped[str] = mapped_column(String(64), ForeignKey("announcements.id"), index=True)
    # The sink: exactly one of the two is set.
    endpoint_id: Mapped[str | None] = mapped_column(
        String(64), ForeignKey("webhook_endpoints.id", ondelete="CASCADE"), nullable=True
    )
    integration_id: Mapped[str | None] = mapped_column(
        String(64), ForeignKey("integrations.id", ondelete="CASCADE"), nullable=True
    )
    # The sink's id (endpoint_id or integration_id) and the announcement's
    # customer and sequence, copied so the queue is read from one index.
    sink_id: Mapped[str] = mapped_column(String(64))
    customer_id: Mapped[str] = mapped_column(String(200), default="", server_default="")
    sequence: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(32))
    attempt_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    next_attempt_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # A sender working on it until then: another replica leaves it alone meanwhile.
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    last_status_code: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    last_error: Mapped[str] = mapped_column(String(1000), default="", server_default="")
    replay_of: Mapped[str] = mapped_column(String(64), default="", server_default="")
    resync_id: Mapped[str] = mapped_column(String(64), default="", server_default="")
    create_time: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    finish_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


# The queues: each sink's pending deliveries per customer in order.
Index(
    "ix_deliveries_pending",
    Delivery.sink_id,
    Delivery.customer_id,
    Delivery.sequence,
    postgresql_where=text("status = 'DELIVERY_STATUS_PENDING'"),
)
Index("ix_deliveries_sink", Delivery.sink_id, Delivery.create_time)


class DeliveryAttempt(Base):
    """One try of a delivery: what the receiver answered, how fast."""

    __tablename__ = "delivery_attempts"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    delivery_id: Mapped[str] = mapped_column(String(64), ForeignKey("deliveries.id", ondelete="CASCADE"), index=True)
    attempt_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    status_code: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    latency_ms: Mapped[int] = mapped_column(Integer)
    response_snippet: Mapped[str] = mapped_column(String(1000), default="", server_default="")
    error: Mapped[str] = mapped_column(String(1000), default="", server_default="")
    succeeded: Mapped[bool] = mapped_column(Boolean)


# A resync's state: bxb.payments.v1.ResyncState names.
RESYNC_GATHERING, RESYNC_SENDING, RESYNC_DONE = (
    "RESYNC_STATE_GATHERING",
    "RESYNC_STATE_SENDING",
    "RESYNC_STATE_DONE",
)


class Resync(Base):
    """All of an organization's history sent again to one integration."""

    __tablename__ = "resyncs"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    organization_id: Mapped[str] = mapped_column(String(64))
    integration_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("integrations.id", ondelete="CASCADE"), index=True
    )
    state: Mapped[str] = mapped_column(String(32))
    total_count: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    # Who gathers the history, since when: a lease older than that was left by a process that died.
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    create_time: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    finish_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
