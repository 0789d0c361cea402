"""invoice lifecycle (a voided invoice frees its period), invoices issued on request

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
    op.add_column("invoices", sa.Column("void_time", sa.DateTime(timezone=True), nullable=True))
    op.drop_constraint("uq_invoices_subscription_id_period_start_timing", "invoices", type_="unique")
    op.create_index(
        "uq_invoices_live_period",
        "invoices",
        ["subscription_id", "period_start", "timing"],
        unique=True,
        postgresql_where=sa.text("void_time IS NULL"),
    )
    op.create_table(
        "interim_amounts",
        sa.Column("invoice_id", sa.String(length=64), nullable=False),
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("subscription_id", sa.String(length=64), nullable=False),
        sa.Column("amount_cents", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("invoice_id", "period_start", name=op.f("pk_interim_amounts")),
    )
    op.create_index(op.f("ix_interim_amounts_subscription_id"), "interim_amounts", ["subscription_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_interim_amounts_subscription_id"), table_name="interim_amounts")
    op.drop_table("interim_amounts")
    op.drop_index("uq_invoices_live_period", table_name="invoices")
    op.create_unique_constraint(
        "uq_invoices_subscription_id_period_start_timing", "invoices", ["subscription_id", "period_start", "timing"]
    )
    op.drop_column("invoices", "void_time")
