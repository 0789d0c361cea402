"""Usage events in ClickHouse: storage, exact deduplication, aggregation.

Tables (in database `db`):
- `events`: one row per accepted event, partitioned by month and ordered for
  per-customer, per-metric reads. ReplacingMergeTree collapses a re-inserted
  copy of the same event, and reads use FINAL, so a copy can never count.
- `event_keys`: every accepted idempotency key of an organization, with no
  time window: a retry a year later is still recognized.

Writes of one process go through a single writer task, so the
check-then-insert on `event_keys` is exact.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime

from services.metering.aggregation import Statement, Usage, UsageQuery, assemble, ch_time
from services.metering.clickhouse import ClickHouse

__all__ = ["Event", "EventStore", "StoredEvent", "Usage", "UsageQuery", "ch_time"]


def schema(db: str) -> list[str]:
    return [
        f"CREATE DATABASE IF NOT EXISTS {db}",
        f"""CREATE TABLE IF NOT EXISTS {db}.events (
            organization_id LowCardinality(String),
            customer_id String,
            code LowCardinality(String),
            transaction_id String,
            timestamp DateTime64(3, 'UTC'),
            properties Map(String, String),
            subscription_id String,
            ingest_time DateTime64(3, 'UTC'),
            value Nullable(String)
        ) ENGINE = ReplacingMergeTree
        PARTITION BY toYYYYMM(timestamp)
        ORDER BY (organization_id, customer_id, code, timestamp, transaction_id)""",
        f"""CREATE TABLE IF NOT EXISTS {db}.event_keys (
            organization_id LowCardinality(String),
            transaction_id String,
            ingest_time DateTime64(3, 'UTC')
        ) ENGINE = ReplacingMergeTree
        ORDER BY (organization_id, transaction_id)""",
        # Tables created before events had a top-level value gain the column.
        f"ALTER TABLE {db}.events ADD COLUMN IF NOT EXISTS value Nullable(String)",
    ]


# ClickHouse servers cap one HTTP form field at 128 KiB; a query parameter
# stays well below that.
MAX_PARAM_BYTES = 64 * 1024


def id_chunks(ids: list[str]) -> list[list[str]]:
    """Splits ids into lists whose encoded size fits one query parameter."""
    chunks: list[list[str]] = [[]]
    size = 0
    for txn in ids:
        cost = len(txn.encode()) + 4  # quotes, comma, space
        if chunks[-1] and size + cost > MAX_PARAM_BYTES:
            chunks.append([])
            size = 0
        chunks[-1].append(txn)
        size += cost
    return chunks


@dataclass(frozen=True)
class Event:
    transaction_id: str
    customer_id: str
    code: str
    timestamp: datetime
    properties: dict[str, str]
    subscription_id: str = ""
    # The top-level value in canonical decimal notation, or None.
    value: str | None = None


@dataclass(frozen=True)
class StoredEvent(Event):
    ingest_time: datetime | None = None


class EventStore:
    def __init__(self, clickhouse: ClickHouse, db: str):
        self.ch = clickhouse
        self.db = db
        self._pending: list[tuple[str, list[Event], datetime, asyncio.Future]] = []
        self._writer: asyncio.Task | None = None

    async def create_schema(self) -> None:
        for statement in schema(self.db):
            await self.ch.execute(statement)

    async def ingest(self, org: str, events: list[Event], now: datetime) -> list[bool]:
        """Stores new events; returns, per event, whether it was new.

        Concurrent calls are group-committed: while one write is in flight,
        the next calls queue up and go out together as one deduplication query
        and one insert per table, which is what ClickHouse is fast at.
        """
        future: asyncio.Future[list[bool]] = asyncio.get_running_loop().create_future()
        self._pending.append((org, events, now, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                outcomes = await self._write(batch)
            except Exception as error:
                for *_, future in batch:
                    if not future.done():
                        future.set_exception(error)
            else:
                for (*_, future), outcome in zip(batch, outcomes, strict=True):
                    if not future.done():
                        future.set_result(outcome)

    async def _write(self, batch: list[tuple[str, list[Event], datetime, asyncio.Future]]) -> list[list[bool]]:
        orgs = sorted({org for org, *_ in batch})
        ids = sorted({e.transaction_id for _, events, *_ in batch for e in events})
        seen: set[tuple[str, str]] = set()
        for chunk in id_chunks(ids):
            rows = await self.ch.query(
                f"SELECT organization_id, transaction_id FROM {self.db}.event_keys "
                "WHERE organization_id IN {orgs:Array(String)} AND transaction_id IN {ids:Array(String)}",
                {"orgs": orgs, "ids": chunk},
            )
            seen.update((org, txn) for org, txn in rows)
        outcomes, event_rows, key_rows = [], [], []
        for org, events, now, _ in batch:
            stamp = ch_time(now)
            outcome = []
            for e in events:
                new = (org, e.transaction_id) not in seen
                seen.add((org, e.transaction_id))  # a repeat within the batch counts once
                outcome.append(new)
                if new:
                    event_rows.append(
                        {
                            "organization_id": org,
                            "customer_id": e.customer_id,
                            "code": e.code,
                            "transaction_id": e.transaction_id,
                            "timestamp": ch_time(e.timestamp),
                            "properties": e.properties,
                            "subscription_id": e.subscription_id,
                            "ingest_time": stamp,
                            "value": e.value,
                        }
                    )
                    key_rows.append({"organization_id": org, "transaction_id": e.transaction_id, "ingest_time": stamp})
            outcomes.append(outcome)
        if event_rows:
            # Events first: a crash before the keys are written leaves a retry
            # that re-inserts identical rows, which FINAL collapses.
            await self.ch.insert(f"{self.db}.events", event_rows)
            await self.ch.insert(f"{self.db}.event_keys", key_rows)
        return outcomes

    async def aggregate(
        self,
        org: str,
        customer_id: str,
        code: str,
        aggregation: str,
        field: str,
        start: datetime,
        end: datetime,
        *,
        include_values: bool = False,
    ) -> Usage:
        """Exact usage of one customer and metric over [start, end); with
        include_values, also each event's value, in the same read. `field`
        names a property; empty, it means the events' top-level value."""
        query = UsageQuery(customer_id, code, aggregation, field, start, end, include_values)
        [[usage]] = await self.aggregate_many(org, [query])
        return usage

    async def aggregate_many(self, org: str, queries: list[UsageQuery]) -> list[list[Usage]]:
        """Each query's usage per bucket and group (see aggregation.py), all in
        one ClickHouse query."""
        if not queries:
            return []
        distinct = list(dict.fromkeys(queries))  # a repeated query is asked once
        statement = Statement(self.db, org, distinct)
        answers = assemble(distinct, await self.ch.query(statement.sql, statement.params))
        by_query = dict(zip(distinct, answers, strict=True))
        return [list(by_query[q]) for q in queries]

    async def get(self, org: str, transaction_id: str) -> StoredEvent | None:
        rows = await self.ch.query(
            "SELECT transaction_id, customer_id, code, toString(timestamp), properties, subscription_id, "
            f"value, toString(ingest_time) FROM {self.db}.events FINAL "
            "WHERE organization_id = {org:String} AND transaction_id = {id:String} LIMIT 1",
            {"org": org, "id": transaction_id},
        )
        if not rows:
            return None
        txn, customer, code, timestamp, properties, subscription, value, ingest = rows[0]
        return StoredEvent(
            txn, customer, code, _parse(timestamp), properties, subscription, value, ingest_time=_parse(ingest)
        )


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)
