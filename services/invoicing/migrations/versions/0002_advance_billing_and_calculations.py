"""advance billing, plan changes, stored price calculations

Revision ID: 0002
Revises: 0001
"""

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "invoices",
        sa.Column("timing", sa.String(length=32), server_default="BILLING_TIMING_IN_ARREARS", nullable=False),
    )
    op.add_column("invoices", sa.Column("calculation_id", sa.String(length=64), server_default="", nullable=False))
    op.drop_constraint("uq_invoices_subscription_id_period_start", "invoices", type_="unique")
    op.create_unique_constraint(
        "uq_invoices_subscription_id_period_start_timing", "invoices", ["subscription_id", "period_start", "timing"]
    )
    op.add_column("subscriptions", sa.Column("advance_billed_through", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "calculations",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("organization_id", sa.String(length=64), nullable=False),
        sa.Column("customer_id", sa.String(length=200), nullable=False),
        sa.Column("subscription_id", sa.String(length=64), nullable=False),
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("period_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("total_amount_cents", sa.BigInteger(), nullable=False),
        sa.Column("calculation", postgresql.JSONB(), nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_calculations")),
    )
    op.create_index(
        op.f("ix_calculations_organization_id_customer_id"), "calculations", ["organization_id", "customer_id"]
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_calculations_organization_id_customer_id"), table_name="calculations")
    op.drop_table("calculations")
    op.drop_column("subscriptions", "advance_billed_through")
    op.drop_constraint("uq_invoices_subscription_id_period_start_timing", "invoices", type_="unique")
    op.create_unique_constraint(
        "uq_invoices_subscription_id_period_start", "invoices", ["subscription_id", "period_start"]
    )
    op.drop_column("invoices", "calculation_id")
    op.drop_column("invoices", "timing")
