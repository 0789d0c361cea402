"""one-off invoices (add-ons): not tied to a subscription period

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
    op.add_column("invoices", sa.Column("source_id", sa.String(length=64), nullable=True))
    op.create_index(
        "uq_invoices_source", "invoices", ["source_id"], unique=True, postgresql_where=sa.text("source_id IS NOT NULL")
    )
    op.drop_index("uq_invoices_live_period", table_name="invoices")
    op.create_index(
        "uq_invoices_live_period",
        "invoices",
        ["subscription_id", "period_start", "timing"],
        unique=True,
        postgresql_where=sa.text("void_time IS NULL AND timing <> 'BILLING_TIMING_ONE_OFF'"),
    )


def downgrade() -> None:
    op.drop_index("uq_invoices_live_period", table_name="invoices")
    op.create_index(
        "uq_invoices_live_period",
        "invoices",
        ["subscription_id", "period_start", "timing"],
        unique=True,
        postgresql_where=sa.text("void_time IS NULL"),
    )
    op.drop_index("uq_invoices_source", table_name="invoices")
    op.drop_column("invoices", "source_id")
