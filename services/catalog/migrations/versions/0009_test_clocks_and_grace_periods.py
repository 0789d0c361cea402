"""test clocks; customers' clock and invoice grace period, copied to their subscriptions

Revision ID: 0009
Revises: 0008
"""

from alembic import op
import sqlalchemy as sa

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "test_clocks",
        sa.Column("id", sa.String(length=64), primary_key=True),
        sa.Column("organization_id", sa.String(length=64), nullable=False, index=True),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("frozen_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
    )
    for table in ("customers", "subscriptions"):
        op.add_column(table, sa.Column("test_clock_id", sa.String(length=64), nullable=True))
        op.add_column(table, sa.Column("invoice_grace_period_days", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    for table in ("customers", "subscriptions"):
        op.drop_column(table, "invoice_grace_period_days")
        op.drop_column(table, "test_clock_id")
    op.drop_table("test_clocks")
