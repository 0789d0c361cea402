"""Usage events in ClickHouse: storage, exact deduplication, aggregation.

Tables (in database `db`):
- `events`: one row per accepted event, partitioned by month and ordered for
  per-customer, per-metric reads. ReplacingMergeTree collapses a re-inserted
  copy of the same event, and reads use FINAL, so a copy can never count.
- `event_keys`: every accepted idempotency key of an organization, with no
  time window: a retry a year later is still recognized. A materialized view
  fills it from `events`, so one INSERT writes an event and its key (and its
  daily rollup, rollups.py): no crash can leave one without the other.
- `rejected_events`: refusals and their reasons (rejections.py).

Writes of one process go through a single writer task, so the
check-then-insert on `event_keys` is exact.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from services.metering import histogram, rejections, rollups
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
        f"""CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.event_keys_mv TO {db}.event_keys AS
        SELECT organization_id, transaction_id, ingest_time FROM {db}.events""",
        *rejections.schema(db),
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
        [[rolled_up]] = await self.ch.query(f"EXISTS TABLE {self.db}.usage_daily")
        for statement in rollups.schema(self.db):
            await self.ch.execute(statement)
        if not int(rolled_up):  # the first start with rollups: roll up what is stored
            await self.ch.execute(rollups.fill(self.db))

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
        outcomes, event_rows = [], []
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
            outcomes.append(outcome)
        if event_rows:
            await self.ch.insert(f"{self.db}.events", event_rows)  # their keys and rollups too
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

    async def summarize(self, org: str, summary: rollups.Summary) -> tuple[Decimal, int]:
        """A summary's value and event count from the daily rollups (eventual)."""
        sql, params = rollups.statement(self.db, org, summary)
        [row] = await self.ch.query(sql, params)
        return rollups.result(summary, row)

    async def histogram(self, org: str, request: histogram.Histogram) -> list[histogram.Bar]:
        sql, params = histogram.statement(self.db, org, request)
        return histogram.bars(request, await self.ch.query(sql, params))

    async def get(self, org: str, transaction_id: str) -> StoredEvent | None:
        found = await self.list(org, transaction_id=transaction_id, limit=1)
        return found[0] if found else None

    async def list(
        self, org: str, *, customer_id: str = "", code: str = "", transaction_id: str = "", offset: int = 0, limit: int
    ) -> list[StoredEvent]:
        """Stored events, the most recent (by timestamp) first."""
        where = ["organization_id = {org:String}"]
        for column, wanted in (("customer_id", customer_id), ("code", code), ("transaction_id", transaction_id)):
            if wanted:
                where.append(f"{column} = {{{column}:String}}")
        rows = await self.ch.query(
            "SELECT transaction_id, customer_id, code, toString(timestamp), properties, subscription_id, "
            f"value, toString(ingest_time) FROM {self.db}.events FINAL WHERE {' AND '.join(where)} "
            "ORDER BY timestamp DESC, transaction_id DESC LIMIT {limit:UInt32} OFFSET {offset:UInt64}",
            {
                "org": org,
                "customer_id": customer_id,
                "code": code,
                "transaction_id": transaction_id,
                "limit": limit,
                "offset": offset,
            },
        )
        return [
            StoredEvent(
                txn, customer, code, _parse(timestamp), properties, subscription, value, ingest_time=_parse(ingest)
            )
            for txn, customer, code, timestamp, properties, subscription, value, ingest in rows
        ]


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)
