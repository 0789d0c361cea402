"""progressive billing: usage thresholds each period has been invoiced for

Revision ID: 0008
Revises: 0007
"""

from alembic import op
import sqlalchemy as sa

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "threshold_crossings",
        sa.Column("subscription_id", sa.String(length=64), nullable=False),
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("crossed", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("subscription_id", "period_start", name=op.f("pk_threshold_crossings")),
    )


def downgrade() -> None:
    op.drop_table("threshold_crossings")
