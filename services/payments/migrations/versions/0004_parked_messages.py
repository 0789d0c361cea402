"""messages parked by the consumers and the outbox

Revision ID: 0004
Revises: 0003
"""

from alembic import op

from services.common import parking

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    parking.create_table(op)


def downgrade() -> None:
    parking.drop_table(op)
