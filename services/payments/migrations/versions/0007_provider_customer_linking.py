"""linking provider customers: the payment method given at creation, and
the linker's retries

Revision ID: 0007
Revises: 0006
"""

from alembic import op
import sqlalchemy as sa

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

PENDING = sa.text("status = 'PROVIDER_CUSTOMER_STATUS_PENDING'")


def upgrade() -> None:
    op.add_column(
        "provider_customers", sa.Column("payment_method", sa.String(length=200), server_default="", nullable=False)
    )
    op.add_column("provider_customers", sa.Column("attempt_count", sa.Integer(), server_default="0", nullable=False))
    op.add_column("provider_customers", sa.Column("next_attempt_time", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_provider_customers_due", "provider_customers", ["next_attempt_time"], postgresql_where=PENDING)


def downgrade() -> None:
    op.drop_index("ix_provider_customers_due", table_name="provider_customers")
    op.drop_column("provider_customers", "next_attempt_time")
    op.drop_column("provider_customers", "attempt_count")
    op.drop_column("provider_customers", "payment_method")
