"""metric filters, plan terms (advance base fee, trial, commitment), plan changes

Revision ID: 0004
Revises: 0003
"""

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "billable_metrics",
        sa.Column("filters", postgresql.JSONB(), server_default=sa.text("'[]'::jsonb"), nullable=False),
    )
    op.add_column("plans", sa.Column("pay_in_advance", sa.Boolean(), server_default=sa.false(), nullable=False))
    op.add_column("plans", sa.Column("trial_period_days", sa.Integer(), server_default="0", nullable=False))
    op.add_column("plans", sa.Column("minimum_commitment_cents", sa.BigInteger(), server_default="0", nullable=False))
    op.add_column("subscriptions", sa.Column("previous_subscription_id", sa.String(length=64), nullable=True))
    op.add_column("subscriptions", sa.Column("next_subscription_id", sa.String(length=64), nullable=True))


def downgrade() -> None:
    op.drop_column("subscriptions", "next_subscription_id")
    op.drop_column("subscriptions", "previous_subscription_id")
    op.drop_column("plans", "minimum_commitment_cents")
    op.drop_column("plans", "trial_period_days")
    op.drop_column("plans", "pay_in_advance")
    op.drop_column("billable_metrics", "filters")
