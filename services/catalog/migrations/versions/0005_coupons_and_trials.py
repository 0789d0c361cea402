"""coupons, applied coupons, subscription trials

Revision ID: 0005
Revises: 0004
"""

from alembic import op
import sqlalchemy as sa

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("subscriptions", sa.Column("trial_end_time", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "coupons",
        sa.Column("id", sa.String(length=64), primary_key=True),
        sa.Column("organization_id", sa.String(length=64), nullable=False),
        sa.Column("code", sa.String(length=100), nullable=False),
        sa.Column("message", sa.LargeBinary(), nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.UniqueConstraint("organization_id", "code"),
    )
    op.create_table(
        "applied_coupons",
        sa.Column("id", sa.String(length=64), primary_key=True),
        sa.Column("organization_id", sa.String(length=64), nullable=False),
        sa.Column("customer_id", sa.String(length=200), nullable=False),
        sa.Column("coupon_id", sa.String(length=64), sa.ForeignKey("coupons.id"), nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("terminate_time", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_applied_coupons_customer", "applied_coupons", ["organization_id", "customer_id"])


def downgrade() -> None:
    op.drop_index("ix_applied_coupons_customer", table_name="applied_coupons")
    op.drop_table("applied_coupons")
    op.drop_table("coupons")
    op.drop_column("subscriptions", "trial_end_time")
