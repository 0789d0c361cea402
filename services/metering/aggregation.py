"""Usage aggregation: any number of usage queries in one ClickHouse query.

Queries that read the same events (same customer, window and subscription
scope, and whether the level before the window counts, as for weighted_sum)
share one scan of the events table: one UNION ALL branch, which routes each
event to the queries of its code, splits it by bucket and group values, and
reduces every (query, bucket, group) together. Each event is read once however
many queries want it: ClickHouse's fixed cost per SELECT dominates at a
customer's size, so one scan beats a query each or a UNION ALL of one SELECT
per query (`python -m bench pricing` measures it). For the same reason, subscriptions' queries that read all or none of the
unassigned events of one time range share one scan across customers (a
billing run prices a page of subscriptions in one call), each event routed by
its (customer, subscription, code).

Every client value (ids, codes, property keys and values, times) is a query
parameter; the SQL text holds only parameter names and our own query numbers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal, localcontext
from typing import Any

# A property and the values that match it; filters of a bucket all match.
Filter = tuple[str, tuple[str, ...]]
Bucket = tuple[Filter, ...]
# A half-open time range [start, end).
Window = tuple[datetime, datetime]

TIME = "DateTime64(3, 'UTC')"
LAST = "toInt128(toUnixTimestamp64Milli(timestamp)) * 1000000000000000 + toUnixTimestamp64Milli(ingest_time)"
# A weighted sum keeps 12 decimal places, as the values it weighs do; the
# division by the window's length is rounded half-even to that scale.
WEIGHTED_SCALE = Decimal("1e-12")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# A value as summed: 64 integer digits hold any total of values below 10^26.
SUM = "toDecimal256(num, 12)"
MS = timedelta(milliseconds=1)


@dataclass(frozen=True)
class UsageQuery:
    """One customer's usage of one metric over [start, end).

    `field` names a property; empty, it means the events' top-level value.
    With `subscription_id`, only the events naming it count, plus those naming
    no subscription inside one of `windows`. Each event goes to the first of
    `buckets` it matches (numbered from 1; 0 for none) and to the group of its
    `group_by` property values ("" when missing)."""

    customer_id: str
    code: str
    aggregation: str  # count, sum, max, unique_count, latest, weighted_sum
    field: str
    start: datetime
    end: datetime
    include_values: bool = False
    subscription_id: str = ""
    windows: tuple[Window, ...] = ()
    buckets: tuple[Bucket, ...] = ()
    group_by: tuple[str, ...] = ()


@dataclass(frozen=True)
class Usage:
    """The usage of one bucket and group (the whole usage when ungrouped)."""

    value: Decimal
    count: int
    # Each event's value in time order, when asked for.
    values: tuple[Decimal, ...] = ()
    bucket: int = 0
    group_values: tuple[str, ...] = ()


def ch_time(value: datetime) -> str:
    """ClickHouse DateTime64(3) text in UTC. The year has four digits: strftime's
    %Y writes year 1 as "1", which ClickHouse reads as 2001."""
    return value.replace(tzinfo=None).isoformat(" ", "milliseconds")


def epoch_ms(value: datetime) -> int:
    return (value - EPOCH) // MS


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


def whole(q: UsageQuery) -> bool | None:
    """Whether a subscription's query (not a weighted sum) reads all the
    unassigned events of its time range, or none of them; None when it reads
    some (its windows cut the range), or it is not such a query."""
    if not q.subscription_id or q.aggregation == "weighted_sum":
        return None
    windows = [(max(start, q.start), min(end, q.end)) for start, end in q.windows]
    windows = [(start, end) for start, end in windows if start < end]
    if not windows:
        return False
    return True if (q.start, q.end) in windows else None


def scans(queries: list[UsageQuery]) -> list[list[int]]:
    """Query numbers grouped by the events they read, one scan per group.
    Subscriptions' queries reading all or none of the unassigned events of
    the same time range share one scan whatever their customers (a billing
    run's page); the others share one per customer and scope."""
    grouped: dict[tuple[object, ...], list[int]] = {}
    for n, q in enumerate(queries):
        if whole(q) is not None:
            key: tuple[object, ...] = ("subscriptions", q.start, q.end)
        else:
            key = (q.customer_id, q.start, q.end, q.aggregation == "weighted_sum", q.subscription_id, q.windows)
        grouped.setdefault(key, []).append(n)
    return list(grouped.values())


def route_key(customer_id: str, subscription_id: str, code: str) -> str:
    """The text ROUTE_KEY gives an event of these ids: lengths first, so no
    two id triples give the same text."""
    return f"{len(customer_id.encode())}:{customer_id}{len(subscription_id.encode())}:{subscription_id}{code}"


ROUTE_KEY = (
    "concat(toString(length(customer_id)), ':', customer_id, toString(length(subscription_id)), ':', "
    "subscription_id, code)"
)


class Statement:
    """One UNION ALL query and its parameters, built branch by branch."""

    def __init__(self, db: str, org: str, queries: list[UsageQuery]):
        self.db = db
        self.queries = queries
        self.params: dict[str, Any] = {"org": org}
        self._bound: dict[tuple[str, Any], str] = {}
        self.sql = "\nUNION ALL\n".join(self._branch(scan) for scan in scans(queries))

    def _bind(self, kind: str, value: Any) -> str:
        """A query parameter holding `value`, one per distinct value, so that
        queries reading the same property share one expression."""
        key = (kind, tuple(value) if isinstance(value, list) else value)
        if key not in self._bound:
            name = f"p{len(self._bound)}"
            self.params[name] = value
            self._bound[key] = f"{{{name}:{kind}}}"
        return self._bound[key]

    def _branch(self, scan: list[int]) -> str:
        """One scan: each event routed to its queries (q), split by bucket and
        group, and reduced per (q, bucket, group)."""
        first = self.queries[scan[0]]
        weighted_sum = first.aggregation == "weighted_sum"
        start = self._bind(TIME, ch_time(first.start))
        where = ["organization_id = {org:String}", f"timestamp < {self._bind(TIME, ch_time(first.end))}"]
        if not weighted_sum:  # weighted_sum also reads the level before the window
            where.append(f"timestamp >= {start}")
        routes: dict[str, list[int]] = {}
        asked = [self.queries[n] for n in scan]
        # One customer's scan, also when a subscriptions' scan holds a single
        # subscription (pricing one): routing by code is cheaper than by the
        # ids' route key.
        if len({(q.customer_id, q.subscription_id, q.windows) for q in asked}) == 1:
            for n in scan:
                routes.setdefault(self.queries[n].code, []).append(n)
            codes = self._bind("Array(String)", list(routes))
            where += [f"customer_id = {self._bind('String', first.customer_id)}", f"code IN {codes}"]
            if first.subscription_id:
                where.append(self._scope(first, None if weighted_sum else first.start))
            route = self._route(routes, "code", codes)
        else:  # subscriptions' scans, any customers: an event goes to the queries of its ids
            for n in scan:
                q = self.queries[n]
                routes.setdefault(route_key(q.customer_id, q.subscription_id, q.code), []).append(n)
                if whole(q):
                    routes.setdefault(route_key(q.customer_id, "", q.code), []).append(n)
            keys = self._bind("Array(String)", list(routes))
            where += [
                f"customer_id IN {self._bind('Array(String)', sorted({q.customer_id for q in asked}))}",
                f"code IN {self._bind('Array(String)', sorted({q.code for q in asked}))}",
                f"subscription_id IN {self._bind('Array(String)', sorted({q.subscription_id for q in asked} | {''}))}",
                f"{ROUTE_KEY} IN {keys}",
            ]
            route = self._route(routes, ROUTE_KEY, keys)
        # A count reads no value, so its events can read whatever the others do.
        reading = [n for n in scan if self.queries[n].aggregation != "count"]
        src = self._per_query(reading, lambda n: self._source(n)[0], default="''")
        present = self._per_query(reading, lambda n: self._source(n)[1], default="false")
        inner = [
            f"{route} AS q",
            f"{src} AS src",
            f"{present} AS present",
            # Values read as Decimal128(12), exact (numbers.py refuses values
            # that do not fit); a missing or non-numeric one is NULL, so max and
            # latest skip it, and 0 for sums and listed values. Sums add up as
            # Decimal256 (SUM): no total of such values can wrap.
            "toDecimal128OrNull(src, 12) AS num_or_null",
            "ifNull(num_or_null, toDecimal128(0, 12)) AS num",
            f"{self._per_query(scan, self._bucket)} AS bucket",
            f"{self._per_query(scan, self._groups)} AS grp",
            f"timestamp >= {start} AS inside" if weighted_sum else "true AS inside",
        ]
        return (
            f"(WITH {', '.join(inner)} SELECT {', '.join(self._columns(scan, weighted_sum))} "
            f"FROM {self.db}.events FINAL WHERE {' AND '.join(where)} GROUP BY q, bucket, grp)"
        )

    @staticmethod
    def _route(routes: dict[str, list[int]], key: str, keys: str) -> str:
        """The query numbers of an event whose `key` expression is one of
        `keys` (a bound array of the keys of `routes`, in order)."""
        if all(len(queries) == 1 for queries in routes.values()):
            return f"transform({key}, {keys}, [{_ids([n for [n] in routes.values()])}], 0)"
        # a key several queries read: each of its events goes to each
        lists = ", ".join(f"[{_ids(queries)}]" for queries in routes.values())
        return f"arrayJoin([{lists}][indexOf({keys}, {key})])"

    def _columns(self, scan: list[int], weighted_sum: bool) -> list[str]:
        """The same named columns in every branch, so UNION ALL lines them up;
        an aggregation that no query of the branch asks for is NULL."""

        def of(aggregation: str, sql: str) -> str:
            queries = [n for n in scan if self.queries[n].aggregation == aggregation]
            return sql.replace("QUERIES", f"q IN ({_ids(queries)})") if queries else "NULL"

        listed = [n for n in scan if self.queries[n].include_values or weighted_sum]
        return [
            "q",
            "bucket",
            "grp",
            "countIf(inside) AS events",
            f"toString(sumIf({SUM}, inside)) AS total",
            f"{of('max', 'toString(maxIf(num_or_null, QUERIES))')} AS largest",
            f"{of('unique_count', 'toString(uniqExactIf(src, present AND QUERIES))')} AS uniques",
            # The value of the last event with a numeric value (argMax skips
            # NULLs), last by timestamp then ingest time: one Int128 key orders
            # like the pair (ingest times are after 1970 and below 10^15 ms),
            # and compares much faster than a tuple.
            f"{of('latest', f'toString(argMaxIf(num_or_null, {LAST}, QUERIES))')} AS latest",
            f"{f'toString(sumIf({SUM}, NOT inside))' if weighted_sum else 'NULL'} AS carried",
            # Each event's time and value, ordered by (timestamp, ingest_time,
            # transaction_id): after FINAL no two events share a transaction_id.
            (
                "arrayMap(e -> (toUnixTimestamp64Milli(e.1), e.4), arraySort(groupArrayIf("
                f"(timestamp, ingest_time, transaction_id, toString(num)), inside AND q IN ({_ids(listed)}))))"
                if listed
                else "[]"
            )
            + " AS changes",
        ]

    def _scope(self, q: UsageQuery, since: datetime | None) -> str:
        """The subscription's events, and the unassigned ones in its windows
        (cut to the events read: from `since`, if set, to q.end)."""
        own = self._bind("String", q.subscription_id)
        windows = [(start if since is None else max(start, since), min(end, q.end)) for start, end in q.windows]
        windows = [(start, end) for start, end in windows if start < end]
        if not windows:
            return f"subscription_id = {own}"
        if since is not None and (since, q.end) in windows:  # all the unassigned events read: no time test
            return f"subscription_id IN {self._bind('Array(String)', ['', q.subscription_id])}"
        inside = " OR ".join(
            f"timestamp >= {self._bind(TIME, ch_time(start))} AND timestamp < {self._bind(TIME, ch_time(end))}"
            for start, end in windows
        )
        return f"(subscription_id = {own} OR subscription_id = '' AND ({inside}))"

    def _source(self, n: int) -> tuple[str, str]:
        """The text an aggregation reads and whether the event has it."""
        q = self.queries[n]
        if not q.field:
            return "ifNull(value, '')", "isNotNull(value)"
        key = self._bind("String", q.field)
        return f"properties[{key}]", f"mapContains(properties, {key})"

    def _bucket(self, n: int) -> str:
        """The number of the first bucket the event matches, 0 for none. An
        event without a filter's property does not match it."""
        q = self.queries[n]
        if not q.buckets:
            return "0"
        branches = []
        for number, bucket in enumerate(q.buckets, start=1):
            tests = []
            for key, values in bucket:
                k = self._bind("String", key)
                tests.append(
                    f"mapContains(properties, {k}) AND properties[{k}] IN {self._bind('Array(String)', list(values))}"
                )
            branches.append(f"{' AND '.join(tests)}, {number}")
        return f"multiIf({', '.join(branches)}, 0)"

    def _groups(self, n: int) -> str:
        keys = self.queries[n].group_by
        if not keys:
            return "emptyArrayString()"
        read = [f"properties[{self._bind('String', key)}]" for key in keys]
        return f"[{', '.join(read)}]"

    @staticmethod
    def _per_query(scan: list[int], sql_of: Callable[[int], str], default: str = "") -> str:
        """An expression that is `sql_of(n)` for the events of query n (and
        `default` when `scan` is empty). The same text for every query needs
        no branching, which is the common case."""
        texts = {n: sql_of(n) for n in scan}
        distinct = list(dict.fromkeys(texts.values())) or [default]
        branches = [f"q IN ({_ids([n for n in scan if texts[n] == text])}), {text}" for text in distinct[:-1]]
        return f"multiIf({', '.join(branches)}, {distinct[-1]})" if branches else distinct[-1]


def _ids(queries: list[int]) -> str:
    return ", ".join(map(str, queries))


def _decimal(text: str | None) -> Decimal:
    """An aggregate read back; NULL (max or latest of no numeric value) is 0."""
    return Decimal(0) if text is None else Decimal(text)


def usage_of(q: UsageQuery, row: list[Any]) -> Usage | None:
    """The usage of one result row, or None for a weighted group that neither
    changes in the window nor carries a level into it."""
    _, bucket, groups, count, total, largest, unique, latest, carried, changes = row
    listed = tuple(Decimal(v) for _, v in changes)
    count = int(count)
    if q.aggregation == "weighted_sum":
        level = Decimal(carried)
        if count == 0 and level == 0:
            return None
        steps = [(int(at), v) for (at, _), v in zip(changes, listed, strict=True)]
        value = weighted(level, steps, epoch_ms(q.start), epoch_ms(q.end))
    else:
        value = {
            "count": Decimal(count),
            "sum": _decimal(total),
            "max": _decimal(largest),
            "unique_count": _decimal(unique),
            "latest": _decimal(latest),
        }[q.aggregation]
    return Usage(value, count, listed if q.include_values else (), int(bucket), tuple(groups))


def assemble(queries: list[UsageQuery], rows: list[list[Any]]) -> list[list[Usage]]:
    """Each query's groups, ordered by bucket then group values. An ungrouped
    query always has exactly one: zero when no event counts."""
    results: list[list[Usage]] = [[] for _ in queries]
    for row in rows:
        n = int(row[0])
        usage = usage_of(queries[n], row)
        if usage is not None:
            results[n].append(usage)
    for q, groups in zip(queries, results, strict=True):
        groups.sort(key=lambda u: (u.bucket, u.group_values))
        if not (q.buckets or q.group_by or groups):
            groups.append(Usage(Decimal(0), 0))
    return results
