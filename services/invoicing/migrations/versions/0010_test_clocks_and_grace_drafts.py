"""test clocks; stored drafts during an invoice grace period

Revision ID: 0010
Revises: 0009
"""

from alembic import op
import sqlalchemy as sa

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "test_clocks",
        sa.Column("id", sa.String(length=64), primary_key=True),
        sa.Column("organization_id", sa.String(length=64), nullable=False),
        sa.Column("frozen_time", sa.DateTime(timezone=True), nullable=False),
    )
    op.add_column("subscriptions", sa.Column("test_clock_id", sa.String(length=64), nullable=True))
    op.add_column(
        "subscriptions", sa.Column("invoice_grace_period_days", sa.Integer(), nullable=False, server_default="0")
    )
    op.alter_column("invoices", "number", existing_type=sa.String(length=32), nullable=True)
    op.add_column("invoices", sa.Column("grace_end_time", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_column("invoices", "grace_end_time")
    op.execute("DELETE FROM invoices WHERE number IS NULL")
    op.alter_column("invoices", "number", existing_type=sa.String(length=32), nullable=False)
    op.drop_column("subscriptions", "invoice_grace_period_days")
    op.drop_column("subscriptions", "test_clock_id")
    op.drop_table("test_clocks")
