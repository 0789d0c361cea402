"""tax lines of invoices

Revision ID: 0006
Revises: 0005
"""

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "invoices", sa.Column("taxes", postgresql.JSONB(), server_default=sa.text("'[]'::jsonb"), nullable=False)
    )
    op.add_column("invoices", sa.Column("taxes_amount_cents", sa.BigInteger(), server_default="0", nullable=False))


def downgrade() -> None:
    op.drop_column("invoices", "taxes_amount_cents")
    op.drop_column("invoices", "taxes")
