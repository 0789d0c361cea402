"""subscription trials, applied coupons and their redemptions, invoice discounts

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
    op.add_column("subscriptions", sa.Column("trial_end_time", sa.DateTime(timezone=True), nullable=True))
    op.add_column(
        "subscriptions", sa.Column("trial_end_announced", sa.Boolean(), server_default=sa.false(), nullable=False)
    )
    op.add_column(
        "invoices", sa.Column("coupons", postgresql.JSONB(), server_default=sa.text("'[]'::jsonb"), nullable=False)
    )
    op.add_column("invoices", sa.Column("coupons_amount_cents", sa.BigInteger(), server_default="0", nullable=False))
    op.create_table(
        "applied_coupons",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("organization_id", sa.String(length=64), nullable=False),
        sa.Column("customer_id", sa.String(length=200), nullable=False),
        sa.Column("coupon", sa.LargeBinary(), nullable=False),
        sa.Column("apply_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("terminate_time", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_applied_coupons")),
    )
    op.create_index("ix_applied_coupons_customer", "applied_coupons", ["organization_id", "customer_id"])
    op.create_table(
        "coupon_redemptions",
        sa.Column("invoice_id", sa.String(length=64), nullable=False),
        sa.Column("applied_coupon_id", sa.String(length=64), nullable=False),
        sa.Column("subscription_id", sa.String(length=64), nullable=False),
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("amount_cents", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("invoice_id", "applied_coupon_id", name=op.f("pk_coupon_redemptions")),
    )
    op.create_index(op.f("ix_coupon_redemptions_applied_coupon_id"), "coupon_redemptions", ["applied_coupon_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_coupon_redemptions_applied_coupon_id"), table_name="coupon_redemptions")
    op.drop_table("coupon_redemptions")
    op.drop_index("ix_applied_coupons_customer", table_name="applied_coupons")
    op.drop_table("applied_coupons")
    op.drop_column("invoices", "coupons_amount_cents")
    op.drop_column("invoices", "coupons")
    op.drop_column("subscriptions", "trial_end_announced")
    op.drop_column("subscriptions", "trial_end_time")
