"""api keys: name, role, keyed hash scheme, expiry and revocation; organizations' rate limits

Existing keys keep their plain SHA-256 (hash_scheme "sha256") and the admin
role; the catalog re-hashes each with HMAC on its first use.

Revision ID: 0012
Revises: 0011
"""

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("api_keys", sa.Column("hash_scheme", sa.String(16), server_default="sha256", nullable=False))
    op.add_column("api_keys", sa.Column("name", sa.String(200), server_default="", nullable=False))
    op.add_column("api_keys", sa.Column("role", sa.String(16), server_default="admin", nullable=False))
    op.add_column("api_keys", sa.Column("expire_time", sa.DateTime(timezone=True), nullable=True))
    op.add_column("api_keys", sa.Column("revoke_time", sa.DateTime(timezone=True), nullable=True))
    for column in ("rate_limits", "key_rate_limits"):
        op.add_column("organizations", sa.Column(column, postgresql.JSONB(), server_default="{}", nullable=False))


def downgrade() -> None:
    for column in ("rate_limits", "key_rate_limits"):
        op.drop_column("organizations", column)
    for column in ("revoke_time", "expire_time", "role", "name", "hash_scheme"):
        op.drop_column("api_keys", column)
