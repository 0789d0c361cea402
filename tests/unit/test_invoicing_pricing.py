"""Charge models (exact Decimal math) and rounding to minor units."""

from __future__ import annotations

from decimal import Decimal, localcontext

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bxb.catalog.v1 import plans_pb2 as pb
from services.invoicing.pricing import models
from services.invoicing.pricing.models import Tier, graduated, standard
from services.invoicing.pricing.money import MAX_MINOR, AmountOutOfRange, from_minor, to_minor, within

D = Decimal


def flat_price(amount: str) -> pb.ChargeProperties:
    return pb.ChargeProperties(amount=amount)


def tiers(*ranges: tuple[str, str, str, str]) -> pb.ChargeProperties:
    return pb.ChargeProperties(
        graduated_ranges=[
            pb.GraduatedRange(from_value=f, to_value=t, per_unit_amount=p, flat_amount=fl) for f, t, p, fl in ranges
        ]
    )


# {0..100} at 0.10 + 5 flat, {101..1000} at 0.05, {1001..} at 0.01 + 2 flat.
THREE_TIERS = tiers(("0", "100", "0.10", "5"), ("101", "1000", "0.05", "0"), ("1001", "", "0.01", "2"))


# --- standard -------------------------------------------------------------


@pytest.mark.parametrize(
    ("units", "amount", "expected"),
    [
        ("0", "0.25", "0"),
        ("1", "0.25", "0.25"),
        ("3", "0.0005", "0.0015"),
        ("2.5", "1.10", "2.75"),
        ("1000000000000", "0.0000000001", "100"),
        ("1000000000000", "0.1234567891", "123456789100"),
        ("999999999999", "0.0000000007", "699.9999999993"),
    ],
)
def test_standard_is_units_times_the_unit_amount(units, amount, expected):
    priced = standard(D(units), flat_price(amount))
    assert priced.amount == D(expected)
    assert priced.tiers == []


def test_standard_keeps_digits_beyond_the_default_context():
    # 123456789012 x 1234567890123456789 = 152415787531961603431672002468 (30 digits),
    # scaled by 10^-19; the default 28-digit context would round it.
    priced = standard(D("123456789012"), flat_price("0.1234567890123456789"))
    assert priced.amount == D("15241578753.1961603431672002468")


# --- graduated ------------------------------------------------------------


@pytest.mark.parametrize(
    ("units", "expected"),
    [
        ("0", "0"),  # no quantity in any tier: no flat fee either
        ("1", "5.10"),
        ("99", "14.90"),
        ("100", "15.00"),  # 100 x 0.10 + 5
        ("100.5", "15.025"),  # fractional unit above the first bound
        ("101", "15.05"),
        ("999", "59.95"),  # 15 + 899 x 0.05
        ("1000", "60.00"),  # 15 + 900 x 0.05
        ("1001", "62.01"),  # 60 + 1 x 0.01 + 2
        ("1000000000000", "10000000052.00"),  # 62 + (10^12 - 1000) x 0.01
    ],
)
def test_graduated_hand_computed_around_each_bound(units, expected):
    assert graduated(D(units), THREE_TIERS).amount == D(expected)


def test_graduated_breakdown_of_a_quantity_spanning_every_tier():
    priced = graduated(D(1500), THREE_TIERS)
    assert priced.tiers == [
        Tier(D(0), D(100), D(100), D("0.10"), D(5), D("15.00")),
        Tier(D(101), D(1000), D(900), D("0.05"), D(0), D("45.00")),
        Tier(D(1001), None, D(500), D("0.01"), D(2), D("7.00")),
    ]
    assert priced.amount == sum(t.amount for t in priced.tiers) == D("67.00")


def test_graduated_breakdown_stops_at_the_tier_holding_the_last_unit():
    priced = graduated(D(100), THREE_TIERS)
    assert [t.units for t in priced.tiers] == [D(100)]
    assert graduated(D(0), THREE_TIERS).tiers == [Tier(D(0), D(100), D(0), D("0.10"), D(5), D(0))]


def test_graduated_without_ranges_prices_nothing():
    assert graduated(D(10), pb.ChargeProperties()) == models.Priced(amount=D(0), tiers=[])


def test_graduated_prices_only_inside_the_ranges_given():
    # Validation requires an open last range; the model itself never invents one.
    priced = graduated(D(50), tiers(("0", "10", "1", "0"), ("11", "20", "2", "0")))
    assert priced.amount == D(30)
    assert [t.units for t in priced.tiers] == [D(10), D(10)]


def test_models_registry_maps_charge_model_names():
    assert models.MODELS["CHARGE_MODEL_STANDARD"] is standard
    assert models.MODELS["CHARGE_MODEL_GRADUATED"] is graduated


PRICES = st.decimals(min_value=0, max_value=1000, places=10, allow_nan=False, allow_infinity=False)
UNITS = st.decimals(min_value=0, max_value=10**12, places=4, allow_nan=False, allow_infinity=False)


@st.composite
def graduated_plans(draw) -> pb.ChargeProperties:
    widths = draw(st.lists(st.integers(min_value=1, max_value=10**6), max_size=5))
    ranges, start = [], 0
    for width in widths:
        ranges.append((str(start), str(start + width - 1), str(draw(PRICES)), str(draw(PRICES))))
        start += width
    ranges.append((str(start), "", str(draw(PRICES)), str(draw(PRICES))))
    return tiers(*ranges)


@settings(deadline=None)  # exact, not timed: keep loaded CI machines from flaking
@given(props=graduated_plans(), a=UNITS, b=UNITS)
def test_graduated_total_is_monotonic_in_units(props, a, b):
    low, high = sorted((a, b))
    assert graduated(low, props).amount <= graduated(high, props).amount


@settings(deadline=None)  # exact, not timed: keep loaded CI machines from flaking
@given(props=graduated_plans(), units=UNITS)
def test_graduated_total_is_the_sum_of_its_tiers(props, units):
    priced = graduated(units, props)
    with localcontext() as exact:
        exact.prec = 60
        assert sum(t.units for t in priced.tiers) == units
        assert sum(t.amount for t in priced.tiers) == priced.amount


@settings(deadline=None)  # exact, not timed: keep loaded CI machines from flaking
@given(price=PRICES, units=UNITS)
def test_graduated_with_one_tier_equals_standard_at_that_price(price, units):
    one_tier = tiers(("0", "", str(price), "0"))
    assert graduated(units, one_tier).amount == standard(units, flat_price(str(price))).amount


@settings(deadline=None)  # exact, not timed: keep loaded CI machines from flaking
@given(price=PRICES, a=UNITS, b=UNITS, k=st.integers(min_value=0, max_value=10**6))
def test_standard_is_linear(price, a, b, k):
    props = flat_price(str(price))
    with localcontext() as exact:
        exact.prec = 60  # the test's own sums and products must not round either
        assert standard(a + b, props).amount == standard(a, props).amount + standard(b, props).amount
        assert standard(a * k, props).amount == standard(a, props).amount * k


# --- money ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "currency", "minor"),
    [
        ("1.005", "USD", 101),
        ("1.004", "USD", 100),
        ("1.0049999", "USD", 100),
        ("0.005", "USD", 1),
        ("2.675", "USD", 268),  # 2.67499999... as a float; exact here
        ("-1.005", "USD", -101),
        ("-1.004", "USD", -100),
        ("-0.005", "USD", -1),
        ("0", "USD", 0),
        ("12.34", "USD", 1234),
        ("0.5", "JPY", 1),
        ("1.5", "JPY", 2),
        ("2.5", "JPY", 3),
        ("2.4999", "JPY", 2),
        ("-2.5", "JPY", -3),
        ("-0.4", "JPY", 0),
        ("1500", "JPY", 1500),
        ("1.0005", "KWD", 1001),
        ("1.0004", "KWD", 1000),
        ("-1.0005", "KWD", -1001),
        ("0.0005", "KWD", 1),
        ("10000000052.00", "USD", 1000000005200),
        ("123456789012345.905", "USD", 12345678901234591),
    ],
)
def test_to_minor_rounds_half_away_from_zero(amount, currency, minor):
    assert to_minor(D(amount), currency) == minor


@pytest.mark.parametrize(
    ("minor", "currency", "amount"),
    [(101, "USD", "1.01"), (-5, "USD", "-0.05"), (5, "JPY", "5"), (1001, "KWD", "1.001")],
)
def test_from_minor_is_the_major_unit_amount(minor, currency, amount):
    assert from_minor(minor, currency) == D(amount)


@settings(deadline=None)  # exact, not timed: keep loaded CI machines from flaking
@given(minor=st.integers(min_value=-MAX_MINOR, max_value=MAX_MINOR), currency=st.sampled_from(["USD", "JPY", "KWD"]))
def test_minor_units_round_trip(minor, currency):
    assert to_minor(from_minor(minor, currency), currency) == minor


@pytest.mark.parametrize("amount", [D(MAX_MINOR) / 100 + D("0.01"), D("-1e40"), D("1e90")])
def test_an_amount_beyond_what_an_invoice_holds_is_out_of_range(amount):
    with pytest.raises(AmountOutOfRange) as raised:
        to_minor(amount, "USD", "the charge of 'tokens'")
    assert raised.value.reason == "AMOUNT_OUT_OF_RANGE" and raised.value.message.startswith("the charge of 'tokens'")
    assert to_minor(D(MAX_MINOR) / 100, "USD") == MAX_MINOR


def test_a_sum_beyond_what_an_invoice_holds_is_out_of_range():
    assert within(-MAX_MINOR, "the total") == -MAX_MINOR
    with pytest.raises(AmountOutOfRange) as raised:
        within(MAX_MINOR + 1, "the total")
    assert (
        raised.value.message
        == f"the total comes to {MAX_MINOR + 1} minor units, more than the {MAX_MINOR} an invoice may hold"
    )
