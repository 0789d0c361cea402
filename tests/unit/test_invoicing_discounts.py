"""Coupon arithmetic on one invoice, hand-computed: rounding per coupon in
0-, 2- and 3-decimal currencies, what each duration still gives, limits, and
properties that hold for any fees and coupons."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bxb.catalog.v1 import coupons_pb2 as cpb
from bxb.invoicing.v1 import invoices_pb2 as pb
from services.invoicing.discounts import Invoiced, Offer, Standing, discounts

JAN = datetime(2026, 1, 1, tzinfo=UTC)
APR = datetime(2026, 4, 1, tzinfo=UTC)
ONCE, RECURRING, FOREVER = cpb.COUPON_DURATION_ONCE, cpb.COUPON_DURATION_RECURRING, cpb.COUPON_DURATION_FOREVER


def percent(rate: str, duration=FOREVER, **extra) -> cpb.Coupon:
    return cpb.Coupon(
        code=f"P{rate}", coupon_type=cpb.COUPON_TYPE_PERCENTAGE, percentage=rate, duration=duration, **extra
    )


def fixed(cents: int, duration=FOREVER, currency="USD", **extra) -> cpb.Coupon:
    return cpb.Coupon(
        code=f"F{cents}",
        coupon_type=cpb.COUPON_TYPE_FIXED_AMOUNT,
        amount_cents=cents,
        currency=currency,
        duration=duration,
        **extra,
    )


def invoice(*cents: int, currency="USD", plan="pro", start=JAN) -> Invoiced:
    return Invoiced([pb.Fee(type=pb.FEE_TYPE_SUBSCRIPTION, amount_cents=c) for c in cents], currency, plan, start)


def cuts(inv: Invoiced, *offers: Offer) -> list[int]:
    return [c.discount_cents for c in discounts(inv, offers)]


@pytest.mark.parametrize(
    ("currency", "cents", "rate", "expected"),
    [
        ("USD", 12400, "20", -2480),
        ("USD", 5, "10", -1),  # 0.5 cent rounds half up
        ("USD", 4, "10", 0),  # 0.4 cent rounds to nothing: not listed
        ("JPY", 333, "12.5", -42),  # 41.625 yen
        ("KWD", 1001, "12.5", -125),  # 0.125125 KWD -> 125 fils
        ("KWD", 1004, "12.5", -126),  # 0.1255 KWD -> 126 fils (half up)
        ("USD", 999, "100", -999),
    ],
)
def test_a_percentage_is_rounded_once_half_up_in_the_currency(currency, cents, rate, expected):
    result = cuts(invoice(cents, currency=currency), Offer("a", percent(rate)))
    assert result == ([expected] if expected else [])


def test_a_once_percentage_discounts_one_invoice():
    assert cuts(invoice(1000), Offer("a", percent("10", ONCE))) == [-100]
    assert cuts(invoice(1000), Offer("a", percent("10", ONCE), Standing(given_cents=100, first_period=JAN))) == []


def test_a_once_fixed_amount_gives_what_it_has_left():
    coupon = fixed(10000, ONCE)
    assert cuts(invoice(4900), Offer("a", coupon, Standing(9800, JAN, 0))) == [-200]
    assert cuts(invoice(4900), Offer("a", coupon, Standing(10000, JAN, 0))) == []


def test_a_recurring_coupon_stops_after_its_months_from_the_first_discounted_period():
    coupon = percent("10", RECURRING, duration_in_months=3)
    assert cuts(invoice(1000, start=APR), Offer("a", coupon)) == [-100]  # never used: its months have not begun
    assert cuts(invoice(1000, start=datetime(2026, 3, 31, tzinfo=UTC)), Offer("a", coupon, Standing(1, JAN))) == [-100]
    assert cuts(invoice(1000, start=APR), Offer("a", coupon, Standing(1, JAN))) == []


def test_a_per_period_fixed_amount_counts_what_this_period_already_got():
    assert cuts(invoice(4900), Offer("a", fixed(1000), Standing(5000, JAN, 600))) == [-400]


def test_limits_to_plans_metrics_and_currency():
    fees = [
        pb.Fee(type=pb.FEE_TYPE_SUBSCRIPTION, amount_cents=4900),
        pb.Fee(type=pb.FEE_TYPE_CHARGE, amount_cents=1000, billable_metric_code="api"),
        pb.Fee(type=pb.FEE_TYPE_TRUE_UP, amount_cents=500, billable_metric_code="api"),
        pb.Fee(type=pb.FEE_TYPE_CHARGE, amount_cents=3000, billable_metric_code="storage"),
    ]
    inv = Invoiced(fees, "USD", "pro", JAN)
    assert cuts(inv, Offer("a", percent("50", billable_metric_codes=["api"]))) == [-750]
    assert cuts(inv, Offer("a", percent("50", plan_codes=["basic"]))) == []
    assert cuts(inv, Offer("a", fixed(100, currency="EUR"))) == []


def test_later_coupons_get_what_earlier_ones_left_of_the_fees_they_cover():
    fees = [
        pb.Fee(type=pb.FEE_TYPE_CHARGE, amount_cents=1000, billable_metric_code="api"),
        pb.Fee(type=pb.FEE_TYPE_SUBSCRIPTION, amount_cents=4900),
    ]
    inv = Invoiced(fees, "USD", "pro", JAN)
    # $8 off the whole invoice comes off the api fee first, leaving it $2: half of that is $1.
    offers = [Offer("a", fixed(800)), Offer("b", percent("50", billable_metric_codes=["api"]))]
    assert cuts(inv, *offers) == [-800, -100]


OFFERS = st.one_of(
    st.builds(lambda r: percent(str(r)), st.integers(1, 100)),
    st.builds(lambda c, d: fixed(c, d), st.integers(1, 10**9), st.sampled_from([ONCE, FOREVER])),
)


@given(st.lists(st.integers(0, 10**12), min_size=1, max_size=5), st.lists(OFFERS, max_size=5))
def test_discounts_never_exceed_the_subtotal_and_are_each_negative(fees, coupons):
    inv = invoice(*fees)
    result = cuts(inv, *(Offer(str(i), c) for i, c in enumerate(coupons)))
    assert all(c < 0 for c in result)
    assert -sum(result) <= sum(fees)
