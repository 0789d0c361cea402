"""payment attempts: each charge stored before the provider is called

Revision ID: 0003
Revises: 0002
"""

from alembic import op
import sqlalchemy as sa

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

OPEN_ATTEMPT = "status IN ('in_flight', 'unknown', 'requires_action')"


def upgrade() -> None:
    op.create_table(
        "payment_attempts",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("organization_id", sa.String(length=64), nullable=False),
        sa.Column("payment_id", sa.String(length=64), nullable=False),
        sa.Column("invoice_id", sa.String(length=64), nullable=False),
        sa.Column("idempotency_key", sa.String(length=200), nullable=False),
        sa.Column("amount_cents", sa.BigInteger(), nullable=False),
        sa.Column("provider_amount", sa.BigInteger(), nullable=False),
        sa.Column("uncharged_cents", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("provider_customer_id", sa.String(length=200), nullable=False),
        sa.Column("provider_payment_method", sa.String(length=200), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("provider_payment_id", sa.String(length=200), server_default="", nullable=False),
        sa.Column("failure_reason", sa.String(length=100), server_default="", nullable=False),
        sa.Column("failure_message", sa.String(length=500), server_default="", nullable=False),
        sa.Column("claim_token", sa.String(length=32), nullable=False),
        sa.Column("claim_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["payment_id"], ["payments.id"], name=op.f("fk_payment_attempts_payment_id_payments")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payment_attempts")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_payment_attempts_idempotency_key")),
    )
    op.create_index(op.f("ix_payment_attempts_payment_id"), "payment_attempts", ["payment_id"], unique=False)
    op.create_index(op.f("ix_payment_attempts_status"), "payment_attempts", ["status"], unique=False)
    op.create_index(
        "uq_payment_attempts_open",
        "payment_attempts",
        ["payment_id"],
        unique=True,
        postgresql_where=sa.text(OPEN_ATTEMPT),
    )
    # The count of failed charges only made each attempt's idempotency key; attempts have their own now.
    op.drop_column("payments", "attempts")


def downgrade() -> None:
    op.add_column("payments", sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"))
    op.drop_index("uq_payment_attempts_open", table_name="payment_attempts")
    op.drop_index(op.f("ix_payment_attempts_status"), table_name="payment_attempts")
    op.drop_index(op.f("ix_payment_attempts_payment_id"), table_name="payment_attempts")
    op.drop_table("payment_attempts")
