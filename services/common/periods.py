"""Billing periods: half-open [start, end) intervals in UTC.

Anniversary billing repeats the start instant every interval; a day that a
shorter month lacks clamps to its last day (Jan 31 -> Feb 28 -> Mar 31), and
each period is computed from the original anchor so clamping never drifts.
Calendar billing aligns periods to calendar boundaries (weeks start on
Monday); the first period runs from the start to the next boundary.

A subscription that ends (`until`, its terminate time) has no period starting
at or after that instant, and the period containing it is cut there. A
partial period keeps the bounds of the full interval it belongs to
(`full_start`, `full_end`): a base fee is prorated by its share of them.
"""

from __future__ import annotations

import calendar
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from services.common.errors import InvalidArgument
from services.common.timestamps import LATEST, format_rfc3339

MONTHS = {"PLAN_INTERVAL_MONTHLY": 1, "PLAN_INTERVAL_QUARTERLY": 3, "PLAN_INTERVAL_YEARLY": 12}
WEEKLY = "PLAN_INTERVAL_WEEKLY"


@dataclass(frozen=True)
class Period:
    start: datetime
    end: datetime
    full_start: datetime  # start of the full interval this period belongs to (proration base)
    full_end: datetime = None  # type: ignore[assignment]  # end of that full interval; `end` when not given

    def __post_init__(self) -> None:
        if self.full_end is None:
            object.__setattr__(self, "full_end", self.end)


def add_months(anchor: datetime, months: int) -> datetime:
    total = anchor.month - 1 + months
    year, month = anchor.year + total // 12, total % 12 + 1
    day = min(anchor.day, calendar.monthrange(year, month)[1])
    return anchor.replace(year=year, month=month, day=day)


def _step(anchor: datetime, interval: str, n: int) -> datetime:
    try:
        if interval == WEEKLY:
            return anchor + timedelta(weeks=n)
        return add_months(anchor, MONTHS[interval] * n)
    except (OverflowError, ValueError):  # past the year 9999: only a caller's time so far off gets there
        raise InvalidArgument(
            f"a billing period would end after the year 9999: give times before {format_rfc3339(LATEST)}",
            reason="OUT_OF_RANGE",
        ) from None


def _calendar_anchor(start: datetime, interval: str) -> datetime:
    """The calendar boundary at or before `start`."""
    midnight = start.replace(hour=0, minute=0, second=0, microsecond=0)
    if interval == WEEKLY:
        return midnight - timedelta(days=midnight.weekday())
    months = MONTHS[interval]
    month = (start.month - 1) // months * months + 1
    return midnight.replace(month=month, day=1)


def periods(start: datetime, interval: str, billing_time: str, until: datetime | None = None) -> Iterator[Period]:
    """Every period of a subscription starting at `start`, in order: forever,
    or up to `until` when it ends (the last one cut there)."""
    anchor = _calendar_anchor(start, interval) if billing_time == "BILLING_TIME_CALENDAR" else start
    n = 0
    while True:
        full_start, full_end = _step(anchor, interval, n), _step(anchor, interval, n + 1)
        n += 1
        begin = max(full_start, start)
        if until is not None and begin >= until:
            return
        end = full_end if until is None else min(full_end, until)
        yield Period(start=begin, end=end, full_start=full_start, full_end=full_end)


def ended(
    start: datetime, interval: str, billing_time: str, before: datetime, until: datetime | None = None
) -> list[Period]:
    """Periods whose end is at or before `before`."""
    return list(itertools.takewhile(lambda p: p.end <= before, periods(start, interval, billing_time, until)))


def started(
    start: datetime, interval: str, billing_time: str, before: datetime, until: datetime | None = None
) -> list[Period]:
    """Periods whose start is at or before `before`."""
    return list(itertools.takewhile(lambda p: p.start <= before, periods(start, interval, billing_time, until)))


def current(
    start: datetime, interval: str, billing_time: str, at: datetime, until: datetime | None = None
) -> Period | None:
    """The period containing `at`, or None before the subscription starts or once it has ended."""
    if at < start:
        return None
    for period in periods(start, interval, billing_time, until):
        if period.end > at:
            return period
    return None
