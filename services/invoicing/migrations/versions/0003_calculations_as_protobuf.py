"""stored calculations in the protobuf wire format

Revision ID: 0003
Revises: 0002
"""

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from google.protobuf import json_format

from bxb.invoicing.v1 import calculations_pb2

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

calculations = sa.table(
    "calculations",
    sa.column("id", sa.String),
    sa.column("calculation", sa.JSON),
    sa.column("message", sa.LargeBinary),
)


def upgrade() -> None:
    op.add_column("calculations", sa.Column("message", sa.LargeBinary(), nullable=True))
    bind = op.get_bind()
    for row_id, stored in bind.execute(sa.select(calculations.c.id, calculations.c.calculation)).all():
        message = json_format.ParseDict(stored, calculations_pb2.Calculation()).SerializeToString()
        bind.execute(calculations.update().where(calculations.c.id == row_id).values(message=message))
    op.alter_column("calculations", "message", nullable=False)
    op.drop_column("calculations", "calculation")


def downgrade() -> None:
    op.add_column("calculations", sa.Column("calculation", postgresql.JSONB(), nullable=True))
    bind = op.get_bind()
    for row_id, message in bind.execute(sa.select(calculations.c.id, calculations.c.message)).all():
        stored = json_format.MessageToDict(
            calculations_pb2.Calculation.FromString(message), preserving_proto_field_name=True
        )
        bind.execute(calculations.update().where(calculations.c.id == row_id).values(calculation=stored))
    op.alter_column("calculations", "calculation", nullable=False)
    op.drop_column("calculations", "message")
