"""subscriptions whose billing is finished; messages parked by the consumers

Revision ID: 0011
Revises: 0010
"""

from alembic import op
import sqlalchemy as sa

from services.common import parking

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("subscriptions", sa.Column("billing_finished", sa.Boolean(), nullable=False, server_default="false"))
    op.create_index(
        "ix_subscriptions_unfinished", "subscriptions", ["id"], postgresql_where=sa.text("NOT billing_finished")
    )
    parking.create_table(op)


def downgrade() -> None:
    parking.drop_table(op)
    op.drop_index("ix_subscriptions_unfinished", "subscriptions")
    op.drop_column("subscriptions", "billing_finished")
