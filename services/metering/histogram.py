"""Usage over time: one exact query splitting a window into minute, hour or
day buckets (aligned in UTC), optionally split again by a property's values.

Each bucket is reduced like a whole window is (aggregation.py): sums count a
missing or non-numeric value as 0, max and latest skip it, unique_count counts
the distinct values present. weighted_sum is a level held over time, not a
quantity per bucket, so it has no histogram.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from services.metering.aggregation import EPOCH, LAST, TIME, ch_time

WIDTHS = {"minute": timedelta(minutes=1), "hour": timedelta(hours=1), "day": timedelta(days=1)}
HISTOGRAMMED = {"count", "sum", "max", "unique_count", "latest"}


@dataclass(frozen=True)
class Histogram:
    customer_id: str
    code: str
    aggregation: str  # one of HISTOGRAMMED
    field: str
    start: datetime
    end: datetime
    interval: str  # a key of WIDTHS
    group_by: str = ""


@dataclass(frozen=True)
class Bar:
    start: datetime
    end: datetime
    group_value: str
    value: Decimal
    count: int


def buckets(h: Histogram) -> int:
    """How many buckets the window spans."""
    width = WIDTHS[h.interval]
    first = (h.start - EPOCH) // width
    last = (h.end - EPOCH - timedelta(milliseconds=1)) // width
    return max(0, last - first + 1)


def statement(db: str, org: str, h: Histogram) -> tuple[str, dict[str, Any]]:
    src, present = ("properties[{field:String}]", "mapContains(properties, {field:String})")
    if not h.field:
        src, present = "ifNull(value, '')", "isNotNull(value)"
    number = f"toDecimal128OrNull({src}, 12)"
    reduced = {
        "count": "toString(count())",
        "sum": f"toString(sum(toDecimal256(ifNull({number}, toDecimal128(0, 12)), 12)))",
        "max": f"toString(max({number}))",
        "unique_count": f"toString(uniqExactIf({src}, {present}))",
        "latest": f"toString(argMax({number}, {LAST}))",
    }[h.aggregation]
    group = "properties[{group:String}]" if h.group_by else "''"
    sql = (
        "SELECT intDiv(toUnixTimestamp64Milli(timestamp), {width:UInt64}) AS bucket, "
        f"{group} AS grp, count(), {reduced} FROM {db}.events FINAL "
        "WHERE organization_id = {org:String} AND customer_id = {customer:String} AND code = {code:String} "
        f"AND timestamp >= {{start:{TIME}}} AND timestamp < {{end:{TIME}}} "
        "GROUP BY bucket, grp ORDER BY bucket, grp"
    )
    params = {
        "org": org,
        "customer": h.customer_id,
        "code": h.code,
        "field": h.field,
        "group": h.group_by,
        "start": ch_time(h.start),
        "end": ch_time(h.end),
        "width": WIDTHS[h.interval] // timedelta(milliseconds=1),
    }
    return sql, params


def bars(h: Histogram, rows: list[list[Any]]) -> list[Bar]:
    width = WIDTHS[h.interval]
    return [
        Bar(EPOCH + int(bucket) * width, EPOCH + (int(bucket) + 1) * width, group, Decimal(value or 0), int(count))
        for bucket, group, count, value in rows
    ]
