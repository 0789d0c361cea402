"""collecting the money: provider accounts and customers, automatic
collection and dunning, webhook events, refunds

Revision ID: 0005
Revises: 0004
"""

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

NOW = sa.text("now()")


def text(name: str, length: int) -> sa.Column[str]:
    """A text column that is never null, empty by default."""
    return sa.Column(name, sa.String(length=length), server_default="", nullable=False)


def upgrade() -> None:
    op.add_column("payments", text("failure_reason", 100))
    op.add_column("payments", text("payment_url", 2000))
    op.add_column("payments", text("payment_link_id", 200))
    op.add_column("payments", sa.Column("refunded_amount_cents", sa.BigInteger(), server_default="0", nullable=False))
    op.add_column("payments", sa.Column("attempt_count", sa.Integer(), server_default="0", nullable=False))
    op.add_column("payments", sa.Column("next_attempt_time", sa.DateTime(timezone=True), nullable=True))
    op.add_column("payments", text("test_clock_id", 64))
    op.add_column("payments", text("dunning_campaign_id", 64))
    op.add_column("payments", sa.Column("first_failure_time", sa.DateTime(timezone=True), nullable=True))
    op.add_column("payments", sa.Column("version", sa.BigInteger(), server_default="0", nullable=False))
    op.add_column("payments", sa.Column("update_time", sa.DateTime(timezone=True), server_default=NOW, nullable=False))
    op.create_index(
        "ix_payments_next_attempt_time",
        "payments",
        ["next_attempt_time"],
        postgresql_where=sa.text("next_attempt_time IS NOT NULL"),
    )
    op.add_column(
        "payment_attempts",
        sa.Column("trigger", sa.String(length=40), server_default="PAYMENT_ATTEMPT_TRIGGER_MANUAL", nullable=False),
    )
    op.add_column("payment_methods", text("card_brand", 32))
    op.add_column("payment_methods", text("card_last4", 4))
    op.add_column("payment_methods", sa.Column("card_exp_month", sa.Integer(), server_default="0", nullable=False))
    op.add_column("payment_methods", sa.Column("card_exp_year", sa.Integer(), server_default="0", nullable=False))
    op.create_table(
        "provider_accounts",
        sa.Column("organization_id", sa.String(length=64), nullable=False),
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("account_id", sa.String(length=200), nullable=False),
        sa.Column("livemode", sa.Boolean(), nullable=False),
        sa.Column("secret_key_sealed", sa.String(length=2000), nullable=False),
        sa.Column("webhook_secret_sealed", sa.String(length=2000), nullable=False),
        sa.Column("secret_key_hint", sa.String(length=40), nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), server_default=NOW, nullable=False),
        sa.Column("update_time", sa.DateTime(timezone=True), server_default=NOW, nullable=False),
        sa.PrimaryKeyConstraint("organization_id", "provider", name=op.f("pk_provider_accounts")),
    )
    op.create_table(
        "provider_customers",
        sa.Column("organization_id", sa.String(length=64), nullable=False),
        sa.Column("customer_id", sa.String(length=200), nullable=False),
        sa.Column("provider", sa.String(length=32), nullable=False),
        text("provider_customer_id", 200),
        sa.Column("status", sa.String(length=40), nullable=False),
        text("failure_message", 500),
        sa.Column("auto_collect", sa.Boolean(), nullable=True),
        text("email", 320),
        text("name", 200),
        text("test_clock_id", 64),
        sa.Column("create_time", sa.DateTime(timezone=True), server_default=NOW, nullable=False),
        sa.PrimaryKeyConstraint("organization_id", "customer_id", name=op.f("pk_provider_customers")),
    )
    op.create_index(
        "ix_provider_customers_pending",
        "provider_customers",
        ["organization_id"],
        postgresql_where=sa.text("status = 'PROVIDER_CUSTOMER_STATUS_PENDING'"),
    )
    op.create_table(
        "test_clocks",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("organization_id", sa.String(length=64), nullable=False),
        sa.Column("frozen_time", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_test_clocks")),
    )
    op.create_table(
        "dunning_campaigns",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("organization_id", sa.String(length=64), nullable=False),
        sa.Column("code", sa.String(length=100), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("retry_days", postgresql.ARRAY(sa.Integer()), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("send_emails", sa.Boolean(), nullable=False),
        sa.Column("is_default", sa.Boolean(), nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), server_default=NOW, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dunning_campaigns")),
        sa.UniqueConstraint("organization_id", "code", name=op.f("uq_dunning_campaigns_organization_id_code")),
    )
    op.create_index(
        "uq_dunning_campaigns_default",
        "dunning_campaigns",
        ["organization_id"],
        unique=True,
        postgresql_where=sa.text("is_default"),
    )
    op.create_table(
        "provider_events",
        sa.Column("organization_id", sa.String(length=64), nullable=False),
        sa.Column("event_id", sa.String(length=200), nullable=False),
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("type", sa.String(length=100), nullable=False),
        sa.Column("object_id", sa.String(length=200), nullable=False),
        sa.Column("created", sa.BigInteger(), nullable=False),
        sa.Column("receive_time", sa.DateTime(timezone=True), server_default=NOW, nullable=False),
        sa.PrimaryKeyConstraint("organization_id", "event_id", name=op.f("pk_provider_events")),
    )
    op.create_table(
        "refunds",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("organization_id", sa.String(length=64), nullable=False),
        sa.Column("payment_id", sa.String(length=64), nullable=False),
        sa.Column("invoice_id", sa.String(length=64), nullable=False),
        sa.Column("credit_note_id", sa.String(length=64), nullable=False),
        sa.Column("idempotency_key", sa.String(length=200), nullable=False),
        sa.Column("amount_cents", sa.BigInteger(), nullable=False),
        sa.Column("provider_amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("provider_payment_id", sa.String(length=200), nullable=False),
        sa.Column("status", sa.String(length=40), nullable=False),
        sa.Column("sent", sa.Boolean(), server_default="false", nullable=False),
        text("provider_refund_id", 200),
        text("failure_message", 500),
        sa.Column("next_attempt_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("create_time", sa.DateTime(timezone=True), server_default=NOW, nullable=False),
        sa.ForeignKeyConstraint(["payment_id"], ["payments.id"], name=op.f("fk_refunds_payment_id_payments")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_refunds")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_refunds_idempotency_key")),
        sa.UniqueConstraint(
            "organization_id", "credit_note_id", name=op.f("uq_refunds_organization_id_credit_note_id")
        ),
    )
    op.create_index(op.f("ix_refunds_payment_id"), "refunds", ["payment_id"])
    op.create_table(
        "payment_notices",
        sa.Column("payment_id", sa.String(length=64), nullable=False),
        sa.Column("attempt_count", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=60), nullable=False),
        sa.Column("organization_id", sa.String(length=64), nullable=False),
        sa.Column("send_time", sa.DateTime(timezone=True), server_default=NOW, nullable=False),
        sa.ForeignKeyConstraint(["payment_id"], ["payments.id"], name=op.f("fk_payment_notices_payment_id_payments")),
        sa.PrimaryKeyConstraint("payment_id", "attempt_count", "kind", name=op.f("pk_payment_notices")),
    )


def downgrade() -> None:
    for table in (
        "payment_notices",
        "refunds",
        "provider_events",
        "dunning_campaigns",
        "test_clocks",
        "provider_customers",
    ):
        op.drop_table(table)
    op.drop_table("provider_accounts")
    for column in ("card_brand", "card_last4", "card_exp_month", "card_exp_year"):
        op.drop_column("payment_methods", column)
    op.drop_column("payment_attempts", "trigger")
    op.drop_index("ix_payments_next_attempt_time", table_name="payments")
    for column in (
        "failure_reason",
        "payment_url",
        "payment_link_id",
        "refunded_amount_cents",
        "attempt_count",
        "next_attempt_time",
        "test_clock_id",
        "dunning_campaign_id",
        "first_failure_time",
        "version",
        "update_time",
    ):
        op.drop_column("payments", column)
