"""charges of invoices (the provider's payment id, why a charge failed) and the outbox

Revision ID: 0002
Revises: 0001
"""

from alembic import op
import sqlalchemy as sa

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "payments", sa.Column("provider_payment_id", sa.String(length=200), nullable=False, server_default="")
    )
    op.add_column("payments", sa.Column("failure_message", sa.String(length=500), nullable=False, server_default=""))
    op.add_column("payments", sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"))
    op.create_table(
        "outbox",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("event_id", sa.String(length=64), nullable=False),
        sa.Column("organization_id", sa.String(length=64), nullable=False),
        sa.Column("subject", sa.String(length=200), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("publish_time", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox")),
        sa.UniqueConstraint("event_id", name=op.f("uq_outbox_event_id")),
    )
    op.create_index(op.f("ix_outbox_publish_time"), "outbox", ["publish_time"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_outbox_publish_time"), table_name="outbox")
    op.drop_table("outbox")
    op.drop_column("payments", "attempts")
    op.drop_column("payments", "failure_message")
    op.drop_column("payments", "provider_payment_id")
