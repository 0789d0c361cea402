"""The highest usage threshold a count of crossings reached: what
usage_threshold_reached tells, counted as `crossings` counts them."""

from __future__ import annotations

import pytest

from bxb.catalog.v1 import plans_pb2
from services.invoicing.thresholds import crossings, highest

FIXED_THEN_RECURRING = [
    plans_pb2.UsageThreshold(amount_cents=10000),
    plans_pb2.UsageThreshold(amount_cents=2000),
    plans_pb2.UsageThreshold(amount_cents=5000, recurring=True),
]


@pytest.mark.parametrize(
    ("usage", "reached"), [(2000, 2000), (9999, 2000), (10000, 10000), (15000, 15000), (29999, 25000)]
)
def test_the_highest_threshold_reached_is_fixed_then_recurring(usage, reached):
    assert highest(FIXED_THEN_RECURRING, crossings(FIXED_THEN_RECURRING, usage)) == reached


def test_a_recurring_threshold_alone_counts_from_zero():
    alone = [plans_pb2.UsageThreshold(amount_cents=300, recurring=True)]
    assert [highest(alone, crossings(alone, usage)) for usage in (300, 899, 900)] == [300, 600, 900]
