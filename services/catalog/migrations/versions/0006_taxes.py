"""taxes, and the tax codes of plans and customers

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
    op.create_table(
        "taxes",
        sa.Column("id", sa.String(length=64), primary_key=True),
        sa.Column("organization_id", sa.String(length=64), nullable=False),
        sa.Column("code", sa.String(length=100), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("rate", sa.String(length=40), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("applied_to_organization", sa.Boolean(), nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.UniqueConstraint("organization_id", "code"),
    )
    for table in ("plans", "customers"):
        op.add_column(
            table,
            sa.Column("tax_codes", postgresql.JSONB(), server_default=sa.text("'[]'::jsonb"), nullable=False),
        )


def downgrade() -> None:
    for table in ("customers", "plans"):
        op.drop_column(table, "tax_codes")
    op.drop_table("taxes")
