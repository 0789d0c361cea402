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
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal, localcontext

from services.metering.clickhouse import ClickHouse

# Templates over one source value: SRC is its text and HAS whether the event
# has one. A property `field` reads `properties[field]`; an empty field reads
# the event's top-level `value`. Values read as Decimal128 with 12 decimal
# places (events.py refuses top-level values that do not fit it exactly).
AGGREGATIONS = {
    "count": "toString(count())",
    "sum": "toString(sum(toDecimal128OrZero(SRC, 12)))",
    "max": "toString(max(toDecimal128OrNull(SRC, 12)))",
    "unique_count": "toString(uniqExactIf(SRC, HAS))",
    "latest": "toString(argMax(toDecimal128OrNull(SRC, 12), (timestamp, ingest_time)))",
}
SOURCES = {
    True: ("properties[{field:String}]", "mapContains(properties, {field:String})"),
    False: ("ifNull(value, '')", "isNotNull(value)"),
}

# Each event's value, ordered by (timestamp, ingest_time, transaction_id): the
# tuples sort on their leading elements, and after FINAL no two events share a
# transaction_id, so the order is total. The value reads as `sum` reads it, so
# the values add up to the sum exactly; a missing or non-numeric one is 0.
VALUES = (
    "arrayMap(e -> e.4, arraySort(groupArray("
    "(timestamp, ingest_time, transaction_id, toString(toDecimal128OrZero(SRC, 12))))))"
)

# weighted_sum reads every event of the customer and metric before the window's
# end: the level carried into the window is summed in ClickHouse (exact in
# Decimal128(12)), and the events inside the window come back one by one, with
# their time in milliseconds, for the time weighting in Python (Decimal).
WEIGHTED = (
    "toString(sumIf(toDecimal128OrZero(SRC, 12), timestamp < {start:DateTime64(3, 'UTC')})), "
    "countIf(timestamp >= {start:DateTime64(3, 'UTC')}), "
    "arrayMap(e -> (toString(toUnixTimestamp64Milli(e.1)), e.4), arraySort(groupArrayIf("
    "(timestamp, ingest_time, transaction_id, toString(toDecimal128OrZero(SRC, 12))), "
    "timestamp >= {start:DateTime64(3, 'UTC')})))"
)
# A weighted sum keeps 12 decimal places, as the values it weighs do; the
# division by the window's length is rounded half-even to that scale.
WEIGHTED_SCALE = Decimal("1e-12")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MS = timedelta(milliseconds=1)


def _source(sql: str, field: str) -> str:
    src, has = SOURCES[bool(field)]
    return sql.replace("SRC", src).replace("HAS", has)


def weighted(carried: Decimal, changes: list[tuple[int, Decimal]], start_ms: int, end_ms: int) -> Decimal:
    """The time-weighted level over [start_ms, end_ms): the level starts at
    `carried` and each change adds its value from its time on, so each change
    weighs the share of the window after it. An empty window weighs nothing."""
    duration = end_ms - start_ms
    if duration <= 0:
        return Decimal(0)
    with localcontext(prec=120):
        numerator = carried * duration + sum((value * (end_ms - at) for at, value in changes), Decimal(0))
        return (numerator / duration).quantize(WEIGHTED_SCALE, rounding=ROUND_HALF_EVEN)


def epoch_ms(value: datetime) -> int:
    return (value - EPOCH) // MS


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


def ch_time(value: datetime) -> str:
    """ClickHouse DateTime64(3) text in UTC. The year has four digits: strftime's
    %Y writes year 1 as "1", which ClickHouse reads as 2001."""
    return value.replace(tzinfo=None).isoformat(" ", "milliseconds")


@dataclass(frozen=True)
class Usage:
    value: Decimal
    count: int
    # Each event's value in order, when asked for.
    values: tuple[Decimal, ...] = ()


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
        weighted_sum = aggregation == "weighted_sum"
        if weighted_sum:
            columns = WEIGHTED
        else:
            columns = f"{AGGREGATIONS[aggregation]}, count()" + (f", {VALUES}" if include_values else "")
        since = "" if weighted_sum else "timestamp >= {start:DateTime64(3, 'UTC')} AND "
        rows = await self.ch.query(
            f"SELECT {_source(columns, field)} FROM {self.db}.events FINAL "
            "WHERE organization_id = {org:String} AND customer_id = {customer:String} AND code = {code:String} "
            f"AND {since}timestamp < {{end:DateTime64(3, 'UTC')}}",
            {
                "org": org,
                "customer": customer_id,
                "code": code,
                "field": field,
                "start": ch_time(start),
                "end": ch_time(end),
            },
        )
        if weighted_sum:
            carried, count, changes = rows[0]
            listed = tuple(Decimal(v) for _, v in changes)
            value = weighted(
                Decimal(carried),
                [(int(at), v) for (at, _), v in zip(changes, listed, strict=True)],
                epoch_ms(start),
                epoch_ms(end),
            )
            return Usage(value, int(count), listed if include_values else ())
        value, count, *listed = rows[0]
        return Usage(
            Decimal(value) if value not in (None, "", "\\N") else Decimal(0),
            int(count),
            tuple(Decimal(v) for v in listed[0]) if listed else (),
        )

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
