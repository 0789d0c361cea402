"""Billing periods: anniversary (clamped to month ends from the original
anchor) and calendar (aligned, first period partial), half-open [start, end)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import islice, pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.common.errors import InvalidArgument
from services.common.periods import Period, add_months, current, ended, periods, started

ANNIVERSARY = "BILLING_TIME_ANNIVERSARY"
CALENDAR = "BILLING_TIME_CALENDAR"
WEEKLY, MONTHLY, QUARTERLY, YEARLY = (
    "PLAN_INTERVAL_WEEKLY",
    "PLAN_INTERVAL_MONTHLY",
    "PLAN_INTERVAL_QUARTERLY",
    "PLAN_INTERVAL_YEARLY",
)
US = timedelta(microseconds=1)


def at(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


def first(start: datetime, interval: str, billing_time: str, count: int) -> list[tuple[datetime, datetime]]:
    return [(p.start, p.end) for p in islice(periods(start, interval, billing_time), count)]


def test_month_end_anchor_clamps_and_recovers_from_the_original_anchor():
    start = at(2026, 1, 31, 10, 30)
    assert first(start, MONTHLY, ANNIVERSARY, 4) == [
        (at(2026, 1, 31, 10, 30), at(2026, 2, 28, 10, 30)),
        (at(2026, 2, 28, 10, 30), at(2026, 3, 31, 10, 30)),
        (at(2026, 3, 31, 10, 30), at(2026, 4, 30, 10, 30)),
        (at(2026, 4, 30, 10, 30), at(2026, 5, 31, 10, 30)),
    ]


def test_month_end_anchor_in_a_leap_year_clamps_to_february_29():
    assert first(at(2024, 1, 31), MONTHLY, ANNIVERSARY, 2) == [
        (at(2024, 1, 31), at(2024, 2, 29)),
        (at(2024, 2, 29), at(2024, 3, 31)),
    ]


def test_anniversary_periods_are_full_intervals():
    for period in islice(periods(at(2026, 1, 31), MONTHLY, ANNIVERSARY), 6):
        assert period.full_start == period.start


def test_yearly_anniversary_from_february_29_returns_in_leap_years():
    ends = [p.end for p in islice(periods(at(2024, 2, 29), YEARLY, ANNIVERSARY), 4)]
    assert ends == [at(2025, 2, 28), at(2026, 2, 28), at(2027, 2, 28), at(2028, 2, 29)]


def test_quarterly_anniversary_crosses_the_year_and_clamps():
    assert first(at(2025, 11, 30), QUARTERLY, ANNIVERSARY, 3) == [
        (at(2025, 11, 30), at(2026, 2, 28)),
        (at(2026, 2, 28), at(2026, 5, 30)),
        (at(2026, 5, 30), at(2026, 8, 30)),
    ]


def test_weekly_anniversary_repeats_the_start_instant():
    assert first(at(2026, 1, 7, 15), WEEKLY, ANNIVERSARY, 2) == [
        (at(2026, 1, 7, 15), at(2026, 1, 14, 15)),
        (at(2026, 1, 14, 15), at(2026, 1, 21, 15)),
    ]


def test_add_months_clamps_and_crosses_years():
    assert add_months(at(2026, 1, 31, 8), 1) == at(2026, 2, 28, 8)
    assert add_months(at(2026, 3, 31), -1) == at(2026, 2, 28)
    assert add_months(at(2026, 12, 15), 1) == at(2027, 1, 15)
    assert add_months(at(2026, 1, 15), -1) == at(2025, 12, 15)
    assert add_months(at(2026, 5, 31), 24) == at(2028, 5, 31)


def test_calendar_weekly_starts_on_monday_and_the_first_period_is_partial():
    # 2026-01-07 is a Wednesday; its week started on Monday 2026-01-05.
    periods_ = list(islice(periods(at(2026, 1, 7, 15, 30), WEEKLY, CALENDAR), 2))
    assert periods_ == [
        Period(start=at(2026, 1, 7, 15, 30), end=at(2026, 1, 12), full_start=at(2026, 1, 5)),
        Period(start=at(2026, 1, 12), end=at(2026, 1, 19), full_start=at(2026, 1, 12)),
    ]


def test_calendar_weekly_starting_on_sunday_gets_a_one_day_first_period():
    period = next(periods(at(2026, 1, 11, 23), WEEKLY, CALENDAR))
    assert period == Period(start=at(2026, 1, 11, 23), end=at(2026, 1, 12), full_start=at(2026, 1, 5))


def test_calendar_weekly_starting_monday_midnight_is_a_full_week():
    period = next(periods(at(2026, 1, 12), WEEKLY, CALENDAR))
    assert period == Period(start=at(2026, 1, 12), end=at(2026, 1, 19), full_start=at(2026, 1, 12))


def test_calendar_monthly_aligns_to_the_first_of_the_month():
    periods_ = list(islice(periods(at(2026, 1, 15, 12), MONTHLY, CALENDAR), 3))
    assert periods_ == [
        Period(start=at(2026, 1, 15, 12), end=at(2026, 2, 1), full_start=at(2026, 1, 1)),
        Period(start=at(2026, 2, 1), end=at(2026, 3, 1), full_start=at(2026, 2, 1)),
        Period(start=at(2026, 3, 1), end=at(2026, 4, 1), full_start=at(2026, 3, 1)),
    ]


def test_calendar_monthly_crosses_the_year():
    assert first(at(2025, 12, 20), MONTHLY, CALENDAR, 2) == [
        (at(2025, 12, 20), at(2026, 1, 1)),
        (at(2026, 1, 1), at(2026, 2, 1)),
    ]


def test_calendar_quarterly_aligns_to_quarter_starts():
    periods_ = list(islice(periods(at(2026, 5, 10), QUARTERLY, CALENDAR), 3))
    assert periods_ == [
        Period(start=at(2026, 5, 10), end=at(2026, 7, 1), full_start=at(2026, 4, 1)),
        Period(start=at(2026, 7, 1), end=at(2026, 10, 1), full_start=at(2026, 7, 1)),
        Period(start=at(2026, 10, 1), end=at(2027, 1, 1), full_start=at(2026, 10, 1)),
    ]


@pytest.mark.parametrize(
    ("month", "quarter_start"), [(1, 1), (3, 1), (4, 4), (6, 4), (7, 7), (9, 7), (10, 10), (12, 10)]
)
def test_calendar_quarter_of_each_month(month, quarter_start):
    period = next(periods(at(2026, month, 2), QUARTERLY, CALENDAR))
    assert period.full_start == at(2026, quarter_start, 1)
    assert period.end == add_months(at(2026, quarter_start, 1), 3)


def test_calendar_yearly_aligns_to_january_first():
    periods_ = list(islice(periods(at(2026, 3, 15, 9), YEARLY, CALENDAR), 2))
    assert periods_ == [
        Period(start=at(2026, 3, 15, 9), end=at(2027, 1, 1), full_start=at(2026, 1, 1)),
        Period(start=at(2027, 1, 1), end=at(2028, 1, 1), full_start=at(2027, 1, 1)),
    ]


def test_calendar_starting_exactly_on_a_boundary_has_no_partial_period():
    period = next(periods(at(2026, 1, 1), YEARLY, CALENDAR))
    assert period == Period(start=at(2026, 1, 1), end=at(2027, 1, 1), full_start=at(2026, 1, 1))


def test_ended_includes_a_period_ending_exactly_at_before():
    start = at(2026, 1, 31)
    assert ended(start, MONTHLY, ANNIVERSARY, at(2026, 2, 28) - US) == []
    assert [p.end for p in ended(start, MONTHLY, ANNIVERSARY, at(2026, 2, 28))] == [at(2026, 2, 28)]
    assert [p.end for p in ended(start, MONTHLY, ANNIVERSARY, at(2026, 3, 31) - US)] == [at(2026, 2, 28)]


def test_ended_before_the_start_is_empty():
    assert ended(at(2026, 1, 15), MONTHLY, CALENDAR, at(2025, 6, 1)) == []
    assert ended(at(2026, 1, 15), MONTHLY, CALENDAR, at(2026, 1, 15)) == []


def test_ended_lists_every_finished_period_in_order():
    result = ended(at(2026, 1, 31), MONTHLY, ANNIVERSARY, at(2026, 6, 1))
    assert [p.end for p in result] == [at(2026, 2, 28), at(2026, 3, 31), at(2026, 4, 30), at(2026, 5, 31)]


def test_current_before_the_start_is_none():
    assert current(at(2026, 1, 15), MONTHLY, CALENDAR, at(2026, 1, 15) - US) is None


def test_current_at_the_start_is_the_first_period():
    period = current(at(2026, 1, 15), MONTHLY, CALENDAR, at(2026, 1, 15))
    assert period == Period(start=at(2026, 1, 15), end=at(2026, 2, 1), full_start=at(2026, 1, 1))


def test_current_at_a_boundary_is_the_next_period():
    start = at(2026, 1, 15)
    assert current(start, MONTHLY, CALENDAR, at(2026, 2, 1) - US).end == at(2026, 2, 1)
    assert current(start, MONTHLY, CALENDAR, at(2026, 2, 1)) == Period(at(2026, 2, 1), at(2026, 3, 1), at(2026, 2, 1))


def test_current_years_later():
    period = current(at(2024, 1, 31), MONTHLY, ANNIVERSARY, at(2026, 2, 28, 12))
    assert (period.start, period.end) == (at(2026, 2, 28), at(2026, 3, 31))


def test_a_period_defaults_its_full_end_to_its_end():
    period = Period(start=at(2026, 1, 10), end=at(2026, 2, 1), full_start=at(2026, 1, 1))
    assert period.full_end == at(2026, 2, 1)


def test_an_end_inside_a_period_cuts_it_and_stops_the_sequence():
    produced = list(periods(at(2026, 1, 31), MONTHLY, ANNIVERSARY, until=at(2026, 3, 10, 12)))
    assert produced == [
        Period(start=at(2026, 1, 31), end=at(2026, 2, 28), full_start=at(2026, 1, 31)),
        Period(start=at(2026, 2, 28), end=at(2026, 3, 10, 12), full_start=at(2026, 2, 28), full_end=at(2026, 3, 31)),
    ]


def test_an_end_on_a_boundary_leaves_whole_periods():
    produced = list(periods(at(2026, 1, 15), MONTHLY, CALENDAR, until=at(2026, 3, 1)))
    assert [(p.start, p.end, p.full_end) for p in produced] == [
        (at(2026, 1, 15), at(2026, 2, 1), at(2026, 2, 1)),
        (at(2026, 2, 1), at(2026, 3, 1), at(2026, 3, 1)),
    ]


def test_an_end_inside_a_partial_first_period_keeps_its_calendar_bounds():
    [period] = periods(at(2026, 1, 15), MONTHLY, CALENDAR, until=at(2026, 1, 20))
    assert period == Period(at(2026, 1, 15), at(2026, 1, 20), full_start=at(2026, 1, 1), full_end=at(2026, 2, 1))


def test_an_end_at_or_before_the_start_leaves_no_period():
    start = at(2026, 5, 1)
    assert list(periods(start, MONTHLY, ANNIVERSARY, until=start)) == []
    assert list(periods(start, MONTHLY, ANNIVERSARY, until=start - US)) == []
    assert current(start, MONTHLY, ANNIVERSARY, start, until=start) is None


def test_ended_and_current_stop_at_the_end():
    start, end = at(2026, 1, 1), at(2026, 2, 15)
    assert [p.end for p in ended(start, MONTHLY, ANNIVERSARY, at(2030, 1, 1), until=end)] == [at(2026, 2, 1), end]
    assert [p.end for p in ended(start, MONTHLY, ANNIVERSARY, end - US, until=end)] == [at(2026, 2, 1)]
    assert current(start, MONTHLY, ANNIVERSARY, end - US, until=end).end == end
    assert current(start, MONTHLY, ANNIVERSARY, end, until=end) is None


def test_started_includes_a_period_starting_exactly_at_before():
    start = at(2026, 1, 31)
    assert [p.start for p in started(start, MONTHLY, ANNIVERSARY, start - US)] == []
    assert [p.start for p in started(start, MONTHLY, ANNIVERSARY, start)] == [start]
    assert [p.start for p in started(start, MONTHLY, ANNIVERSARY, at(2026, 2, 28))] == [start, at(2026, 2, 28)]
    assert [p.start for p in started(start, MONTHLY, ANNIVERSARY, at(2027, 1, 1), until=at(2026, 3, 1))] == [
        start,
        at(2026, 2, 28),
    ]


INTERVALS = st.sampled_from([WEEKLY, MONTHLY, QUARTERLY, YEARLY])
BILLING = st.sampled_from([ANNIVERSARY, CALENDAR])
INSTANTS = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2030, 12, 31), timezones=st.just(UTC))


@settings(deadline=None)  # exact, not timed: keep loaded CI machines from flaking
@given(start=INSTANTS, interval=INTERVALS, billing_time=BILLING)
def test_periods_are_contiguous_and_inside_their_full_interval(start, interval, billing_time):
    produced = list(islice(periods(start, interval, billing_time), 5))
    assert produced[0].start == start
    for before, after in pairwise(produced):
        assert before.end == after.start == after.full_start
    for period in produced:
        assert period.full_start <= period.start < period.end


@settings(deadline=None)  # exact, not timed: keep loaded CI machines from flaking
@given(
    start=INSTANTS,
    interval=INTERVALS,
    billing_time=BILLING,
    offset=st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=800)),
)
def test_current_contains_the_instant_and_follows_the_ended_ones(start, interval, billing_time, offset):
    moment = start + offset
    period = current(start, interval, billing_time, moment)
    assert period.start <= moment < period.end
    done = ended(start, interval, billing_time, moment)
    assert (done[-1].end if done else start) == period.start


@settings(deadline=None)  # exact, not timed: keep loaded CI machines from flaking
@given(
    start=INSTANTS,
    interval=INTERVALS,
    billing_time=BILLING,
    length=st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=800)),
)
def test_an_ended_subscription_has_periods_up_to_its_end_and_none_after(start, interval, billing_time, length):
    end = start + length
    cut = list(periods(start, interval, billing_time, until=end))
    whole = list(islice(periods(start, interval, billing_time), len(cut)))
    assert (cut[-1].end if cut else start) == end
    assert all(p.start < end for p in cut)
    assert cut[:-1] == whole[:-1]  # only the last one is cut
    if cut:
        last, full = cut[-1], whole[-1]
        assert (last.start, last.full_start, last.full_end) == (full.start, full.full_start, full.end)


@pytest.mark.parametrize("interval", ["PLAN_INTERVAL_WEEKLY", "PLAN_INTERVAL_YEARLY"])
def test_a_period_that_would_end_after_the_year_9999_is_the_caller_s_error(interval):
    every = periods(datetime(9998, 12, 25, tzinfo=UTC), interval, "BILLING_TIME_ANNIVERSARY")
    with pytest.raises(InvalidArgument) as raised:
        list(islice(every, 60))
    assert raised.value.reason == "OUT_OF_RANGE"
