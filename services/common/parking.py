"""Parked messages: what a service's NATS consumers gave up on (bus.py), kept
in its own database where ParkedMessageService lists it and retries it.

A message is parked when it can never be handled (it does not decode, its
handler raises Poison) or still fails after its consumer's last attempt; it
is acknowledged only once its row is stored, so nothing is lost. Retrying
runs the consumer's handler on it again in this process: the row goes when
it succeeds, and records the new failure when it does not. Handlers are
idempotent, so a retry of something handled meanwhile changes nothing.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.sql.schema import SchemaItem

from bxb.common.v1 import parked_messages_pb2 as pb
from bxb.common.v1 import parked_messages_pb2_grpc
from services.common import bus, pagination, tenancy
from services.common.db import TableRow
from services.common.errors import FailedPrecondition, NotFound
from services.common.grpc_server import Context
from services.common.ids import new_id
from services.common.timestamps import to_proto, utcnow

TABLE = "parked_messages"


def _columns() -> list[sa.Column[Any] | sa.UniqueConstraint]:
    return [
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("organization_id", sa.String(64), nullable=False),
        sa.Column("stream", sa.String(100), nullable=False),
        sa.Column("durable", sa.String(100), nullable=False),
        sa.Column("sequence", sa.BigInteger(), nullable=False),
        sa.Column("subject", sa.String(300), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("park_time", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("durable", "sequence", name=f"uq_{TABLE}_durable_sequence"),
    ]


class Migration(Protocol):
    """What of Alembic's `op` a migration of the table uses."""

    def create_table(self, table_name: str, *columns: SchemaItem) -> sa.Table: ...
    def create_index(self, index_name: str | None, table_name: str, columns: Sequence[str]) -> None: ...
    def drop_table(self, table_name: str) -> None: ...


def parked_table(metadata: sa.MetaData) -> sa.Table:
    return sa.Table(TABLE, metadata, *_columns(), sa.Index(f"ix_{TABLE}_organization_id", "organization_id"))


def create_table(op: Migration) -> None:
    """The table, for a service's Alembic migration."""
    op.create_table(TABLE, *_columns())
    op.create_index(f"ix_{TABLE}_organization_id", TABLE, ["organization_id"])


def drop_table(op: Migration) -> None:
    op.drop_table(TABLE)


async def park(sessions: async_sessionmaker[AsyncSession], table: sa.Table, parked: bus.Parked) -> None:
    """Stores a message given up on (once per consumer and stream position)."""
    row = {
        "id": new_id("pkm"),
        "organization_id": parked.organization_id,
        "stream": parked.stream,
        "durable": parked.durable,
        "sequence": parked.sequence,
        "subject": parked.subject,
        "payload": parked.payload,
        "error": parked.error,
        "attempts": parked.attempts,
        "park_time": utcnow(),
    }
    async with sessions() as session, session.begin():
        await session.execute(insert(table).values(row).on_conflict_do_nothing())


def parker(sessions: async_sessionmaker[AsyncSession], table: sa.Table) -> bus.Parker:
    """The parker of a service's consumers and outbox relay, which exist
    before the ParkedMessages that retries through them."""
    return functools.partial(park, sessions, table)


class ParkedMessages(parked_messages_pb2_grpc.ParkedMessageServiceServicer):
    """A service's parked messages: the parker its consumers are given, and
    the API that lists and retries them (`handlers`: each consumer's
    handler, by durable name)."""

    def __init__(
        self,
        service: str,
        sessions: async_sessionmaker[AsyncSession],
        table: sa.Table,
        handlers: Mapping[str, bus.Handler],
    ):
        self.service = service
        self.sessions = sessions
        self.table = table
        self.handlers = handlers

    async def park(self, parked: bus.Parked) -> None:
        await park(self.sessions, self.table, parked)

    def _proto(self, row: TableRow) -> pb.ParkedMessage:
        return pb.ParkedMessage(
            id=row.id,
            service=self.service,
            subject=row.subject,
            error=row.error,
            attempts=row.attempts,
            park_time=to_proto(row.park_time),
            payload_size=len(row.payload),
        )

    async def ListParkedMessages(
        self, request: pb.ListParkedMessagesRequest, context: Context
    ) -> pb.ListParkedMessagesResponse:
        org = tenancy.organization_id()
        page = pagination.page(request, "ListParkedMessages")
        query = (
            select(self.table)
            .where(self.table.c.organization_id == org)
            .order_by(self.table.c.park_time.desc(), self.table.c.id)
            .offset(page.offset)
            .limit(page.size + 1)
        )
        async with self.sessions() as session:
            rows = (await session.execute(query)).all()
        parked_messages, token = pagination.answer(page, [self._proto(row) for row in rows])
        return pb.ListParkedMessagesResponse(parked_messages=parked_messages, next_page_token=token)

    async def RetryParkedMessage(self, request: pb.RetryParkedMessageRequest, context: Context) -> pb.ParkedMessage:
        org = tenancy.organization_id()
        where = (self.table.c.id == request.id, self.table.c.organization_id == org)
        async with self.sessions() as session:
            row = (await session.execute(select(self.table).where(*where))).one_or_none()
        if row is None:
            raise NotFound(f"parked message {request.id!r} not found", field="id")
        handler = self.handlers[row.durable]
        try:
            await handler(row.subject, row.payload)
        except Exception as error:
            failure = f"{type(error).__name__}: {error}"[: bus.MAX_ERROR]
            async with self.sessions() as session, session.begin():
                await session.execute(
                    sa.update(self.table).where(*where).values(error=failure, attempts=self.table.c.attempts + 1)
                )
            raise FailedPrecondition(
                f"the message failed again: {failure}", field="id", reason="STILL_FAILING"
            ) from None
        async with self.sessions() as session, session.begin():
            await session.execute(sa.delete(self.table).where(*where))
        handled = self._proto(row)
        handled.handle_time.CopyFrom(to_proto(utcnow()))
        return handled


__all__ = ["ParkedMessages", "create_table", "drop_table", "parked_table"]
