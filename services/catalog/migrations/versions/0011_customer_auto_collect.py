"""a customer's automatic collection setting (billing.auto_collect)

Revision ID: 0011
Revises: 0010
"""

from alembic import op
import sqlalchemy as sa

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("customers", sa.Column("billing_auto_collect", sa.Boolean(), nullable=True))


def downgrade() -> None:
    op.drop_column("customers", "billing_auto_collect")
