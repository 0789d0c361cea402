"""invoices: how collecting them stands, as the payments service announced

Revision ID: 0012
Revises: 0011
"""

from alembic import op
import sqlalchemy as sa

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("invoices", sa.Column("payment_status", sa.String(length=48), nullable=True))
    op.add_column("invoices", sa.Column("payment_url", sa.Text(), nullable=False, server_default=""))
    op.add_column("invoices", sa.Column("payment_version", sa.BigInteger(), nullable=False, server_default="0"))


def downgrade() -> None:
    op.drop_column("invoices", "payment_version")
    op.drop_column("invoices", "payment_url")
    op.drop_column("invoices", "payment_status")
