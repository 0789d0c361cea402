"""outbox rows parked because NATS will never take them

Revision ID: 0010
Revises: 0009
"""

from alembic import op

from services.common import parking

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    parking.create_table(op)


def downgrade() -> None:
    parking.drop_table(op)
