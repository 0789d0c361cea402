"""announcements: public events sent to webhook endpoints and analytics
integrations, each sink's deliveries and their attempts, resyncs

Revision ID: 0008
Revises: 0007
"""

from datetime import datetime

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def _times() -> list[sa.Column[datetime]]:
    return [
        sa.Column("create_time", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("update_time", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "announcements",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("sequence", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("organization_id", sa.String(64), nullable=False),
        sa.Column("type", sa.String(100), nullable=False),
        sa.Column("customer_id", sa.String(200), server_default="", nullable=False),
        sa.Column("source_key", sa.String(300), nullable=False),
        sa.Column("occur_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("resync_id", sa.String(64), server_default="", nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.UniqueConstraint("sequence", name="uq_announcements_sequence"),
        sa.UniqueConstraint("organization_id", "source_key", name="uq_announcements_organization_id_source_key"),
    )
    op.create_table(
        "webhook_endpoints",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("organization_id", sa.String(64), nullable=False),
        sa.Column("url", sa.String(2000), nullable=False),
        sa.Column("description", sa.String(500), server_default="", nullable=False),
        sa.Column("event_types", postgresql.ARRAY(sa.String(100)), server_default="{}", nullable=False),
        sa.Column("enabled", sa.Boolean(), server_default="true", nullable=False),
        sa.Column("secret_sealed", sa.String(2000), nullable=False),
        sa.Column("previous_secret_sealed", sa.String(2000), server_default="", nullable=False),
        sa.Column("previous_secret_expire_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("disabled_reason", sa.String(500), server_default="", nullable=False),
        sa.Column("failing_since", sa.DateTime(timezone=True), nullable=True),
        *_times(),
    )
    op.create_index("ix_webhook_endpoints_organization_id", "webhook_endpoints", ["organization_id"])
    op.create_table(
        "integrations",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("organization_id", sa.String(64), nullable=False),
        sa.Column("provider", sa.String(32), nullable=False),
        sa.Column("api_key_sealed", sa.String(2000), nullable=False),
        sa.Column("api_key_hint", sa.String(40), nullable=False),
        sa.Column("data_source_id", sa.String(200), server_default="", nullable=False),
        sa.Column("last_sync_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.String(1000), server_default="", nullable=False),
        sa.Column("last_error_time", sa.DateTime(timezone=True), nullable=True),
        *_times(),
        sa.UniqueConstraint("organization_id", "provider", name="uq_integrations_organization_id_provider"),
    )
    op.create_table(
        "deliveries",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("organization_id", sa.String(64), nullable=False),
        sa.Column(
            "announcement_id",
            sa.String(64),
            sa.ForeignKey("announcements.id", name="fk_deliveries_announcement_id_announcements"),
            nullable=False,
        ),
        sa.Column(
            "endpoint_id",
            sa.String(64),
            sa.ForeignKey(
                "webhook_endpoints.id", name="fk_deliveries_endpoint_id_webhook_endpoints", ondelete="CASCADE"
            ),
            nullable=True,
        ),
        sa.Column(
            "integration_id",
            sa.String(64),
            sa.ForeignKey("integrations.id", name="fk_deliveries_integration_id_integrations", ondelete="CASCADE"),
            nullable=True,
        ),
        sa.Column("sink_id", sa.String(64), nullable=False),
        sa.Column("customer_id", sa.String(200), server_default="", nullable=False),
        sa.Column("sequence", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("attempt_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("next_attempt_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_status_code", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_error", sa.String(1000), server_default="", nullable=False),
        sa.Column("replay_of", sa.String(64), server_default="", nullable=False),
        sa.Column("resync_id", sa.String(64), server_default="", nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("finish_time", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_deliveries_announcement_id", "deliveries", ["announcement_id"])
    op.create_index(
        "ix_deliveries_pending",
        "deliveries",
        ["sink_id", "customer_id", "sequence"],
        postgresql_where=sa.text("status = 'DELIVERY_STATUS_PENDING'"),
    )
    op.create_index("ix_deliveries_sink", "deliveries", ["sink_id", "create_time"])
    op.create_table(
        "delivery_attempts",
        sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True),
        sa.Column(
            "delivery_id",
            sa.String(64),
            sa.ForeignKey("deliveries.id", name="fk_delivery_attempts_delivery_id_deliveries", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("attempt_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status_code", sa.Integer(), server_default="0", nullable=False),
        sa.Column("latency_ms", sa.Integer(), nullable=False),
        sa.Column("response_snippet", sa.String(1000), server_default="", nullable=False),
        sa.Column("error", sa.String(1000), server_default="", nullable=False),
        sa.Column("succeeded", sa.Boolean(), nullable=False),
    )
    op.create_index("ix_delivery_attempts_delivery_id", "delivery_attempts", ["delivery_id"])
    op.create_table(
        "resyncs",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("organization_id", sa.String(64), nullable=False),
        sa.Column(
            "integration_id",
            sa.String(64),
            sa.ForeignKey("integrations.id", name="fk_resyncs_integration_id_integrations", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("total_count", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("create_time", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("finish_time", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_resyncs_integration_id", "resyncs", ["integration_id"])


def downgrade() -> None:
    for table in ("resyncs", "delivery_attempts", "deliveries", "integrations", "webhook_endpoints", "announcements"):
        op.drop_table(table)
