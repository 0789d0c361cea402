"""refunds: a payment's status long enough for PAYMENT_STATUS_PARTIALLY_REFUNDED,
refunds made at Stripe itself (no credit note), due refunds and charges found
by index

Revision ID: 0006
Revises: 0005
"""

from alembic import op
import sqlalchemy as sa

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.alter_column("payments", "status", type_=sa.String(length=40), existing_nullable=False)
    op.drop_constraint("uq_refunds_organization_id_credit_note_id", "refunds", type_="unique")
    op.create_index(
        "uq_refunds_credit_note",
        "refunds",
        ["organization_id", "credit_note_id"],
        unique=True,
        postgresql_where=sa.text("credit_note_id <> ''"),
    )
    op.create_index(
        "ix_refunds_due", "refunds", ["next_attempt_time"], postgresql_where=sa.text("status = 'REFUND_STATUS_PENDING'")
    )
    op.create_index(
        "ix_payment_attempts_provider_payment_id",
        "payment_attempts",
        ["provider_payment_id"],
        postgresql_where=sa.text("provider_payment_id <> ''"),
    )


def downgrade() -> None:
    # What does not fit any more: a partially refunded payment is told collected.
    op.execute("UPDATE payments SET status = 'PAYMENT_STATUS_SUCCEEDED' WHERE length(status) > 32")
    op.alter_column("payments", "status", type_=sa.String(length=32), existing_nullable=False)
    op.drop_index("ix_payment_attempts_provider_payment_id", table_name="payment_attempts")
    op.drop_index("ix_refunds_due", table_name="refunds")
    op.drop_index("uq_refunds_credit_note", table_name="refunds")
    # Refunds made at Stripe keep a key of their own: their Stripe id.
    op.execute("UPDATE refunds SET credit_note_id = provider_refund_id WHERE credit_note_id = ''")
    op.create_unique_constraint(
        "uq_refunds_organization_id_credit_note_id", "refunds", ["organization_id", "credit_note_id"]
    )
