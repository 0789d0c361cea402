"""Daily usage rollups: the pre-computed aggregates behind usage summaries.

`usage_daily_v2` holds, per (organization, customer, metric code, UTC day),
mergeable aggregate states of that day's events: their count, and the sum,
maximum and distinct values of the top-level value and of every property.
A materialized view fills it from each insert into `events`, so the queue's
consumer and the backfill path (which writes straight to `events`) update
the same rollups in the same INSERT: a backfilled event is in the summary as
soon as its write returns. A copy deleted from `events` (store.py: two
processes stored one key) has its day rolled up again.

A summary merges the whole days inside the window from the rollups and reads
the ragged edges (before the first midnight, after the last) from the events.
It is eventual: it reads without FINAL and without waiting for the queue.
`latest` and `weighted_sum` depend on the order of events across days, so
they are not rolled up; the usage service answers them exactly instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta
from decimal import Decimal
from typing import Any

from services.metering.aggregation import TIME, ch_time
from services.metering.clickhouse import DURABLE
from services.metering.tables import BY_CUSTOMER, Layout

TABLE = "usage_daily_v2"  # v2: sums as Decimal256 (usage_daily's Decimal128 sums could wrap)
DECIMAL = "Decimal128(12)"
SUMMED = "Decimal256(12)"
VALUE = "toDecimal128OrNull(value, 12)"


def numeric_properties(kind: str) -> str:
    """Properties with a numeric value, as decimals of `kind`: a non-numeric
    one counts as missing, as in the exact aggregation (0 for sums, skipped
    by max). Read as Decimal128 either way, as the exact aggregation does."""
    return (
        f"mapApply((k, v) -> (k, to{kind}(toDecimal128OrZero(v, 12), 12)), "
        "mapFilter((k, v) -> isNotNull(toDecimal128OrNull(v, 12)), properties))"
    )


# column: (state of the day's events, its type, how a summary merges it; F is the field parameter)
COLUMNS = {
    "events": ("countState()", "AggregateFunction(count)", "countMerge(events)"),
    "value_sum": (
        f"sumState(toDecimal256({VALUE}, 12))",
        f"AggregateFunction(sum, Nullable({SUMMED}))",
        "sumMerge(value_sum)",
    ),
    "value_max": (f"maxState({VALUE})", f"AggregateFunction(max, Nullable({DECIMAL}))", "maxMerge(value_max)"),
    "value_uniq": (
        "uniqExactState(value)",
        "AggregateFunction(uniqExact, Nullable(String))",
        "uniqExactMerge(value_uniq)",
    ),
    "props_sum": (
        f"sumMapState({numeric_properties('Decimal256')})",
        f"AggregateFunction(sumMap, Map(String, {SUMMED}))",
        "sumMapMerge(props_sum)[F]",
    ),
    "props_max": (
        f"maxMapState({numeric_properties('Decimal128')})",
        f"AggregateFunction(maxMap, Map(String, {DECIMAL}))",
        "maxMapMerge(props_max)[F]",
    ),
    "props_uniq": (
        "uniqExactMapState(properties)",
        "AggregateFunction(uniqExactMap, Map(String, String))",
        "uniqExactMapMerge(props_uniq)[F]",
    ),
}
ROLLED_UP = {"count", "sum", "max", "unique_count"}
_SUFFIX = {"sum": "sum", "max": "max", "unique_count": "uniq"}


def _days(source: str, where: str = "") -> str:
    """The day rows (the states of each customer, metric and day) of the
    events read from `source`, those matching `where` if given."""
    states = ", ".join(f"{state} AS {name}" for name, (state, _, _) in COLUMNS.items())
    return (
        f"SELECT organization_id, customer_id, code, toDate(timestamp) AS day, {states} FROM {source} "
        f"{f'WHERE {where} ' if where else ''}GROUP BY organization_id, customer_id, code, day"
    )


def schema(layout: Layout) -> list[str]:
    """The rollups and their view. On a cluster, each host rolls up its own
    events, so a day's states are spread over the shards; every summary
    merges them (all mergeable: count, sums, max, uniqExact)."""
    db = layout.db
    columns = ", ".join(f"{name} {kind}" for name, (_, kind, _) in COLUMNS.items())
    # Replaced by TABLE, whose sums cannot wrap (derived anew from the events); never on a cluster.
    upgrades = [f"DROP VIEW IF EXISTS {db}.usage_daily_mv", f"DROP TABLE IF EXISTS {db}.usage_daily"]
    table = layout.table(
        TABLE,
        f"""
            organization_id LowCardinality(String),
            customer_id String,
            code LowCardinality(String),
            day Date,
            {columns}
        """,
        "AggregatingMergeTree",
        f"""PARTITION BY toYYYYMM(day)
        ORDER BY (organization_id, customer_id, code, day)
        SETTINGS {DURABLE}""",
        BY_CUSTOMER,
    )
    return [
        *([] if layout.cluster else upgrades),
        *table,
        layout.view(f"{TABLE}_mv", TABLE, _days(layout.local("events"))),
    ]


def fill(db: str) -> str:
    """Rolls up the events stored before the view existed (run once, when the
    table is created). On a cluster, from and to the Distributed tables."""
    return f"INSERT INTO {db}.{TABLE} {_days(f'{db}.events FINAL')}"


def redo(layout: Layout) -> list[str]:
    """Rolls some days up again from the events, after copies were deleted
    from them (the view only ever adds): the days' rows are deleted (on a
    cluster, from every shard), then derived anew from all the day's events.
    Parameters: `org`, and `days` as (customer, code, date)."""
    db = layout.db
    days = "{days:Array(Tuple(String, String, Date))}"
    of_days = f"organization_id = {{org:String}} AND (customer_id, code, toDate(timestamp)) IN {days}"
    return [
        layout.delete(TABLE, f"organization_id = {{org:String}} AND (customer_id, code, day) IN {days}"),
        f"INSERT INTO {db}.{TABLE} {_days(f'{db}.events FINAL', of_days)}",
    ]


@dataclass(frozen=True)
class Summary:
    customer_id: str
    code: str
    aggregation: str  # one of ROLLED_UP
    field: str
    start: datetime
    end: datetime


def _midnight_after(moment: datetime) -> datetime:
    day = datetime.combine(moment.date(), time(), moment.tzinfo)
    return day if day == moment else day + timedelta(days=1)


def statement(db: str, org: str, s: Summary) -> tuple[str, dict[str, Any]]:
    """One query merging the whole days from the rollups and the edges from
    the events; it answers (event count, value or NULL)."""
    column = "events" if s.aggregation == "count" else f"{'props' if s.field else 'value'}_{_SUFFIX[s.aggregation]}"
    first = _midnight_after(s.start)
    last = max(first, datetime.combine(s.end.date(), time(), s.end.tzinfo))
    params = {
        "org": org,
        "customer": s.customer_id,
        "code": s.code,
        "field": s.field,
        "start": ch_time(s.start),
        "end": ch_time(s.end),
        "first": ch_time(first),
        "last": ch_time(last),
    }
    keys = "organization_id = {org:String} AND customer_id = {customer:String} AND code = {code:String}"
    state = COLUMNS[column][0]
    merged = COLUMNS[column][2].replace("[F]", "[{field:String}]")
    sql = (
        f"SELECT countMerge(events), toString({merged}) FROM ("
        f"SELECT events, {column} FROM {db}.{TABLE} WHERE {keys} "
        f"AND day >= toDate({{first:{TIME}}}) AND day < toDate({{last:{TIME}}}) "
        "UNION ALL "
        f"SELECT countState() AS events, {state} AS {column} FROM {db}.events WHERE {keys} "
        f"AND timestamp >= {{start:{TIME}}} AND timestamp < {{end:{TIME}}} "
        f"AND NOT (timestamp >= {{first:{TIME}}} AND timestamp < {{last:{TIME}}}))"
    )
    return sql, params


def result(s: Summary, row: list[Any]) -> tuple[Decimal, int]:
    """The summary's value and event count from the statement's one row."""
    count, value = row
    return (Decimal(int(count)) if s.aggregation == "count" else Decimal(value or 0)), int(count)
