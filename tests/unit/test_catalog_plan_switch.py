"""When a plan change takes effect: hand-computed instants for upgrades,
downgrades (the end of the current billing period) and pending subscriptions."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.catalog.models import Plan, Subscription
from services.catalog.subscriptions import switch_time


def at(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


def subscription(start: datetime, billing_time: str = "BILLING_TIME_ANNIVERSARY") -> Subscription:
    return Subscription(id="sub_1", start_time=start, billing_time=billing_time)


def plan(amount_cents: int, interval: str = "PLAN_INTERVAL_MONTHLY") -> Plan:
    return Plan(id=f"plan_{amount_cents}", amount_cents=amount_cents, interval=interval)


@pytest.mark.parametrize(
    ("start", "billing_time", "interval", "now", "expected"),
    [
        # Monthly anniversary from Jan 15: the period holding Mar 3 is Feb 15 - Mar 15.
        (at(2026, 1, 15), "BILLING_TIME_ANNIVERSARY", "PLAN_INTERVAL_MONTHLY", at(2026, 3, 3), at(2026, 3, 15)),
        # The time of day of the start is kept.
        (
            at(2026, 1, 15, 9, 30),
            "BILLING_TIME_ANNIVERSARY",
            "PLAN_INTERVAL_MONTHLY",
            at(2026, 3, 15, 9, 29),
            at(2026, 3, 15, 9, 30),
        ),
        # At the very instant a period ends, the next one is current.
        (at(2026, 1, 15), "BILLING_TIME_ANNIVERSARY", "PLAN_INTERVAL_MONTHLY", at(2026, 3, 15), at(2026, 4, 15)),
        # Jan 31 anniversaries fall on the last day of shorter months.
        (at(2026, 1, 31), "BILLING_TIME_ANNIVERSARY", "PLAN_INTERVAL_MONTHLY", at(2026, 2, 10), at(2026, 2, 28)),
        # Calendar billing ends periods on the first of the month.
        (at(2026, 1, 15), "BILLING_TIME_CALENDAR", "PLAN_INTERVAL_MONTHLY", at(2026, 3, 3), at(2026, 4, 1)),
        # Calendar quarters: Q1 ends Apr 1.
        (at(2025, 11, 20), "BILLING_TIME_CALENDAR", "PLAN_INTERVAL_QUARTERLY", at(2026, 2, 1), at(2026, 4, 1)),
        # Weekly anniversary from Thursday Jan 1: the week holding Jan 20 ends Thursday Jan 22.
        (at(2026, 1, 1), "BILLING_TIME_ANNIVERSARY", "PLAN_INTERVAL_WEEKLY", at(2026, 1, 20), at(2026, 1, 22)),
        # Calendar weeks end on Monday: Tuesday Jan 20 -> Monday Jan 26.
        (at(2026, 1, 1), "BILLING_TIME_CALENDAR", "PLAN_INTERVAL_WEEKLY", at(2026, 1, 20), at(2026, 1, 26)),
        # Yearly anniversary from 2024-06-01: the year holding 2026-03-03 ends 2026-06-01.
        (at(2024, 6, 1), "BILLING_TIME_ANNIVERSARY", "PLAN_INTERVAL_YEARLY", at(2026, 3, 3), at(2026, 6, 1)),
    ],
)
def test_a_downgrade_takes_effect_when_the_current_period_ends(start, billing_time, interval, now, expected):
    old, new = plan(5000, interval), plan(1000, "PLAN_INTERVAL_WEEKLY")
    assert switch_time(subscription(start, billing_time), old, new, now) == expected


@pytest.mark.parametrize("new_amount", [5000, 5001, 90000])
def test_an_upgrade_or_an_equal_base_fee_takes_effect_now(new_amount: int):
    now = at(2026, 3, 3, 12, 0, 1)
    assert switch_time(subscription(at(2026, 1, 15)), plan(5000), plan(new_amount), now) == now


@pytest.mark.parametrize("new_amount", [0, 5000, 9000])
def test_a_subscription_not_started_yet_changes_at_its_start(new_amount: int):
    start = at(2026, 4, 1)
    assert switch_time(subscription(start), plan(5000), plan(new_amount), at(2026, 3, 3)) == start
