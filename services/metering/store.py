"""Usage events in ClickHouse: storage, exact deduplication, aggregation.

Tables (in database `db`):
- `events`: one row per accepted event, partitioned by month and ordered for
  per-customer, per-metric reads. ReplacingMergeTree collapses a re-inserted
  copy of the same event, and reads use FINAL, so a copy can never count.
- `event_copies`: every stored copy of an idempotency key (the key and the
  row's place in `events`), ordered by organization and key, with no time
  window: a retry a year later is still recognized. A materialized view
  fills it from `events`, so one INSERT writes an event and its key (and its
  daily rollup, rollups.py): no crash can leave one without the other.
- `rejected_events`: refusals and their reasons (rejections.py).

Writes of one process go through a single writer task, so its
check-then-insert is exact. Two processes can still both pass the check for
the same key at the same moment; when their copies differ (a retry stamped
with a new time), FINAL would count both. So after each insert the writer
looks its keys up again: of several copies of a key, the first accepted
(earliest ingest time, then customer, code and time) is kept and the others
are deleted, before the messages are acknowledged and so before any usage
query counts them. Whichever of the two writers finishes last sees both.

One event that cannot be stored never holds up the others: when a write
fails and a canary row (organization "", which no tenant can name; one per
shard on a cluster, tables.py) is still stored, the failure lies in the
data, so the calls are written one by one and a failing call's events in
halves, down to the events that fail alone; those come back `Unstorable`
with ClickHouse's reason and the rest are stored. When the canary fails too, ClickHouse itself is failing and every
caller gets the error (retried later, nothing lost).

An insert touches at most PARTITIONS_PER_INSERT months, ClickHouse's own
default limit per insert block: a batch spanning decades is written in
several inserts instead of being refused whole.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from services.metering import histogram, rejections, rollups
from services.metering.aggregation import EPOCH, Statement, Usage, UsageQuery, assemble, ch_time
from services.metering.clickhouse import DURABLE, ClickHouse
from services.metering.tables import BY_KEY, LOCAL, Layout, canaries

__all__ = ["Event", "EventStore", "StoredEvent", "Unstorable", "Usage", "UsageQuery", "ch_time"]


EVENT_COLUMNS = """
            organization_id LowCardinality(String),
            customer_id String,
            code LowCardinality(String),
            transaction_id String,
            timestamp DateTime64(3, 'UTC'),
            properties Map(String, String),
            subscription_id String,
            ingest_time DateTime64(3, 'UTC'),
            value Nullable(String)
        """


def schema(layout: Layout) -> list[str]:
    db = layout.db
    events = layout.table(
        "events",
        EVENT_COLUMNS,
        "ReplacingMergeTree",
        f"""PARTITION BY toYYYYMM(timestamp)
        ORDER BY (organization_id, customer_id, code, timestamp, transaction_id)
        SETTINGS {DURABLE}""",
        BY_KEY,
    )
    # Upgrades of tables an older version created on one server; a cluster's are new.
    upgrades = [
        # Tables created before events had a top-level value gain the column.
        f"ALTER TABLE {db}.events ADD COLUMN IF NOT EXISTS value Nullable(String)",
        # Every insert is on disk before the queue's message is acknowledged.
        f"ALTER TABLE {db}.events MODIFY SETTING {DURABLE}",
        # Replaced by event_copies, which is filled from events (the record).
        f"DROP VIEW IF EXISTS {db}.event_keys_mv",
        f"DROP TABLE IF EXISTS {db}.event_keys",
    ]
    return [layout.database(), *events, *([] if layout.cluster else upgrades), *rejections.schema(layout)]


COPY_COLUMNS = "organization_id, transaction_id, customer_id, code, timestamp, ingest_time"


def copies_schema(layout: Layout) -> list[str]:
    """event_copies, sharded as events are: a view fills each host's copies
    from its own events."""
    copies = layout.table(
        "event_copies",
        """
            organization_id LowCardinality(String),
            transaction_id String,
            customer_id String,
            code LowCardinality(String),
            timestamp DateTime64(3, 'UTC'),
            ingest_time DateTime64(3, 'UTC')
        """,
        "ReplacingMergeTree",
        f"""ORDER BY (organization_id, transaction_id, customer_id, code, timestamp)
        SETTINGS {DURABLE}""",
        BY_KEY,
    )
    upgrades = [f"ALTER TABLE {layout.db}.event_copies MODIFY SETTING {DURABLE}"]
    return [
        *copies,
        *([] if layout.cluster else upgrades),
        layout.view("event_copies_mv", "event_copies", f"SELECT {COPY_COLUMNS} FROM {layout.local('events')}"),
    ]


# ClickHouse servers cap one HTTP form field at 128 KiB; a query parameter
# stays well below that.
MAX_PARAM_BYTES = 64 * 1024
# Copies of at most 200 characters per field fit that parameter 80 at a time.
DELETED_PER_STATEMENT = 80
MAX_REASON = 500  # characters of ClickHouse's message kept with an unstorable event


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


# Not frozen: a frozen dataclass is built attribute by attribute through
# object.__setattr__, which cost the queue's consumer more than the rest of
# turning a queued message into events.
@dataclass(slots=True)
class Event:
    transaction_id: str
    customer_id: str
    code: str
    timestamp: datetime
    properties: dict[str, str]
    subscription_id: str = ""
    # The top-level value in canonical decimal notation, or None.
    value: str | None = None


@dataclass(slots=True)
class StoredEvent(Event):
    ingest_time: datetime = field(kw_only=True)


@dataclass(frozen=True, slots=True)
class Unstorable:
    """An event ClickHouse refused even when written alone: not stored."""

    reason: str


# What a write answers per event: True when new, False for a duplicate.
Outcome = bool | Unstorable
# One ingest call waiting for the writer: (organization, events, ingest time, its answer).
Call = tuple[str, list[Event], datetime, asyncio.Future[list[Outcome]]]

# ClickHouse's default max_partitions_per_insert_block: the months one insert may touch.
PARTITIONS_PER_INSERT = 100
CANARY_ORGANIZATION = ""  # no tenant has an empty id (tenancy refuses one)
# Candidate canary keys and their hash by the events' sharding key (tables.BY_KEY).
CANARY_HASHES = (
    "SELECT key, toString(cityHash64({org:String}, key)) FROM "
    "(SELECT number, concat('canary-', toString(number)) AS key FROM numbers(4096)) ORDER BY number"
)
# What create_schema makes on a cluster: each table local and Distributed, and the views.
CLUSTER_TABLES = ["events", "rejected_events", "event_copies", rollups.TABLE]
CLUSTER_VIEWS = ["event_copies_mv", f"{rollups.TABLE}_mv"]


def partition_chunks(rows: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """The event rows split so that each chunk touches at most
    PARTITIONS_PER_INSERT months (the `timestamp` text starts with YYYY-MM)."""
    months: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        months.setdefault(row["timestamp"][:7], []).append(row)
    groups = list(months.values())
    return [
        [row for group in groups[start : start + PARTITIONS_PER_INSERT] for row in group]
        for start in range(0, len(groups), PARTITIONS_PER_INSERT)
    ]


class EventStore:
    def __init__(self, clickhouse: ClickHouse, db: str, cluster: str = ""):
        self.ch = clickhouse
        self.db = db
        self.tables = Layout(db, cluster)
        # On a cluster: one key per shard, found once (a shard added later is covered after a restart).
        self._canaries: list[str] = [] if cluster else ["canary"]
        self._pending: list[Call] = []
        self._writer: asyncio.Task[None] | None = None

    async def create_schema(self) -> None:
        """Creates what is missing and upgrades what an older version made.
        On a cluster the DDL runs ON CLUSTER, waiting for every host, so it
        runs only when the server reached lacks one of the tables: a restart
        does not need every host up."""
        if self.tables.cluster and await self._created():
            return
        for statement in schema(self.tables):
            await self.ch.execute(statement)
        derived = [
            (
                "event_copies",
                copies_schema(self.tables),
                f"INSERT INTO {self.db}.event_copies SELECT {COPY_COLUMNS} FROM {self.db}.events FINAL",
            ),
            (rollups.TABLE, rollups.schema(self.tables), rollups.fill(self.db)),
        ]
        for table, statements, fill in derived:
            [[existed]] = await self.ch.query(f"EXISTS TABLE {self.db}.{table}")
            for statement in statements:
                await self.ch.execute(statement)
            if not int(existed):  # the first start with this table: derive it from what is stored
                await self.ch.execute(fill)

    async def _created(self) -> bool:
        names = [f"{table}{suffix}" for table in CLUSTER_TABLES for suffix in ("", LOCAL)] + CLUSTER_VIEWS
        [[found]] = await self.ch.query(
            "SELECT count() FROM system.tables WHERE database = {db:String} AND name IN {names:Array(String)}",
            {"db": self.db, "names": names},
        )
        return int(found) == len(names)

    async def ingest(self, org: str, events: list[Event], now: datetime) -> list[Outcome]:
        """Stores new events; returns, per event, True when it was new, False
        for a duplicate, or Unstorable when ClickHouse refused it alone.

        Concurrent calls are group-committed: while one write is in flight,
        the next calls queue up and go out together as one deduplication query
        and one insert per table, which is what ClickHouse is fast at.
        """
        future: asyncio.Future[list[Outcome]] = asyncio.get_running_loop().create_future()
        self._pending.append((org, events, now, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                outcomes = await self._isolating(batch)
            except Exception as error:
                for *_, future in batch:
                    if not future.done():
                        future.set_exception(error)
            else:
                for (*_, future), outcome in zip(batch, outcomes, strict=True):
                    if not future.done():
                        future.set_result(outcome)

    async def _isolating(self, batch: list[Call]) -> list[list[Outcome]]:
        """`_write(batch)`; when that fails in the data (the canary is still
        stored), each call alone and a failing call's events in halves, so
        only the events that fail alone are left out, as Unstorable."""
        try:
            return await self._write(batch)
        except Exception as error:
            failure = error
        await self._canary()  # raises when ClickHouse itself is failing: then everyone retries
        if len(batch) > 1:
            return [(await self._isolating([call]))[0] for call in batch]
        org, events, now, future = batch[0]
        if len(events) == 1:
            return [[Unstorable(f"ClickHouse refused the event: {failure}"[:MAX_REASON])]]
        half = len(events) // 2
        [first] = await self._isolating([(org, events[:half], now, future)])
        [second] = await self._isolating([(org, events[half:], now, future)])
        return [first + second]

    async def _canary(self) -> None:
        """Stores the canary rows again, one on every shard (one row on one
        server): proof that ClickHouse takes writes now, wherever the
        refused events were going."""
        rows: list[dict[str, Any]] = [
            {
                "organization_id": CANARY_ORGANIZATION,
                "customer_id": "",
                "code": "",
                "transaction_id": key,
                "timestamp": ch_time(EPOCH),
                "properties": {},
                "subscription_id": "",
                "ingest_time": ch_time(EPOCH),
                "value": None,
            }
            for key in self._canaries or await self._find_canaries()
        ]
        await self.ch.insert(f"{self.db}.events", rows)

    async def _find_canaries(self) -> list[str]:
        """A canary key for each shard of the cluster: of candidate keys, the
        first the events' sharding key sends there (tables.canaries)."""
        weights = await self.ch.query(
            "SELECT shard_num, any(shard_weight) FROM system.clusters WHERE cluster = {cluster:String} "
            "GROUP BY shard_num ORDER BY shard_num",
            {"cluster": self.tables.cluster},
        )
        hashes = await self.ch.query(CANARY_HASHES, {"org": CANARY_ORGANIZATION})
        self._canaries = canaries([int(w) for _, w in weights], [(key, int(h)) for key, h in hashes])
        return self._canaries

    async def _write(self, batch: list[Call]) -> list[list[Outcome]]:
        orgs = sorted({org for org, *_ in batch})
        ids = sorted({e.transaction_id for _, events, *_ in batch for e in events})
        seen: set[tuple[str, str]] = set()
        for chunk in id_chunks(ids):
            rows = await self.ch.query(
                f"SELECT DISTINCT organization_id, transaction_id FROM {self.db}.event_copies "
                "WHERE organization_id IN {orgs:Array(String)} AND transaction_id IN {ids:Array(String)}",
                {"orgs": orgs, "ids": chunk},
                write=True,
            )
            seen.update((org, txn) for org, txn in rows)
        outcomes: list[list[Outcome]] = []
        event_rows, placed, written = [], {}, {}
        for org, events, now, _ in batch:
            stamp = ch_time(now)
            outcome: list[Outcome] = []
            for e in events:
                new = (org, e.transaction_id) not in seen
                seen.add((org, e.transaction_id))  # a repeat within the batch counts once
                outcome.append(new)
                if new:
                    placed[(org, e.transaction_id)] = (len(outcomes), len(outcome) - 1)
                    written[(org, e.transaction_id)] = e
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
            for inserted in partition_chunks(event_rows):
                await self.ch.insert(f"{self.db}.events", inserted)  # their keys and rollups too
            for key in await self._settle_copies(orgs, written):
                batch_at, event_at = placed[key]
                outcomes[batch_at][event_at] = False  # another process stored a first copy
        return outcomes

    async def _settle_copies(self, orgs: list[str], written: dict[tuple[str, str], Event]) -> set[tuple[str, str]]:
        """Keeps one copy per key of those just written (by organization and
        key): the first accepted. Returns the written keys whose copy lost
        to another process's."""
        # Per key stored in more than one place in `events` (customer, code,
        # time), each place and its earliest ingest time; copies in one place
        # are one row to FINAL. ClickHouse leaves out the keys stored in one
        # place: nearly all of them.
        places: dict[tuple[str, str], dict[tuple[str, str, str], str]] = {}
        for txns in id_chunks(sorted({txn for _, txn in written})):
            rows = await self.ch.query(
                "SELECT organization_id, transaction_id, groupArray((customer_id, code, at, ingest)) FROM ("
                "SELECT organization_id, transaction_id, customer_id, code, toString(timestamp) AS at, "
                f"toString(min(ingest_time)) AS ingest FROM {self.db}.event_copies "
                "WHERE organization_id IN {orgs:Array(String)} AND transaction_id IN {ids:Array(String)} "
                "GROUP BY organization_id, transaction_id, customer_id, code, timestamp) "
                "GROUP BY organization_id, transaction_id HAVING count() > 1",
                {"orgs": orgs, "ids": txns},
                write=True,
            )
            for org, txn, found in rows:
                places[(org, txn)] = {(customer, code, at): ingest for customer, code, at, ingest in found}
        lost: set[tuple[str, str]] = set()
        losers: dict[str, list[tuple[str, str, str, str]]] = {}
        for (org, txn), found in places.items():
            first = min(found, key=lambda place: (found[place], place))
            losers.setdefault(org, []).extend((txn, *place) for place in found.keys() - {first})
            mine = written.get((org, txn))  # None: the same key of another organization in the batch
            if mine is not None and first != (mine.customer_id, mine.code, ch_time(mine.timestamp)):
                lost.add((org, txn))
        for org, copies in losers.items():
            await self._delete_copies(org, copies)
        return lost

    async def _delete_copies(self, org: str, copies: list[tuple[str, str, str, str]]) -> None:
        """Deletes copies (transaction_id, customer, code, time text) from the
        events and their index, a few hundred per statement."""
        where = (
            "organization_id = {org:String} AND (transaction_id, customer_id, code, toString(timestamp)) "
            "IN {copies:Array(Tuple(String, String, String, String))}"
        )
        for start in range(0, len(copies), DELETED_PER_STATEMENT):
            params = {"org": org, "copies": copies[start : start + DELETED_PER_STATEMENT]}
            for table in ("events", "event_copies"):
                await self.ch.execute(self.tables.delete(table, where), params)
        days = sorted({(customer, code, timestamp[:10]) for _, customer, code, timestamp in copies})
        for start in range(0, len(days), DELETED_PER_STATEMENT):
            for statement in rollups.redo(self.tables):
                await self.ch.execute(statement, {"org": org, "days": days[start : start + DELETED_PER_STATEMENT]})

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
        """The event with this key: its place from `event_copies`, then the
        row, both read by primary key (not a scan of the organization)."""
        places = await self.ch.query(
            f"SELECT customer_id, code FROM {self.db}.event_copies "
            "WHERE organization_id = {org:String} AND transaction_id = {id:String} ORDER BY ingest_time LIMIT 1",
            {"org": org, "id": transaction_id},
        )
        if not places:
            return None
        [[customer, code]] = places
        found = await self.list(org, customer_id=customer, code=code, transaction_id=transaction_id, limit=1)
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
