"""The volume, package, percentage, graduated percentage and flat charge
models: hand-computed amounts around every bound, and their properties."""

from __future__ import annotations

from decimal import Decimal, localcontext

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bxb.catalog.v1 import plans_pb2 as pb
from services.invoicing.pricing import models
from services.invoicing.pricing.models import (
    Priced,
    Tier,
    flat,
    graduated,
    graduated_percentage,
    package,
    percentage,
    standard,
    volume,
)

D = Decimal
BIG = D(10**12)


def ranges(*rows: tuple[str, str, str, str]) -> list[pb.GraduatedRange]:
    return [pb.GraduatedRange(from_value=f, to_value=t, per_unit_amount=p, flat_amount=fl) for f, t, p, fl in rows]


def volume_props(*rows: tuple[str, str, str, str]) -> pb.ChargeProperties:
    return pb.ChargeProperties(volume_ranges=ranges(*rows))


def percentage_ranges(*rows: tuple[str, str, str, str]) -> pb.ChargeProperties:
    return pb.ChargeProperties(
        graduated_percentage_ranges=[
            pb.GraduatedPercentageRange(from_value=f, to_value=t, rate=r, flat_amount=fl) for f, t, r, fl in rows
        ]
    )


def decimals(*texts: str) -> list[Decimal]:
    return [D(text) for text in texts]


# --- registry ---------------------------------------------------------------


def test_every_charge_model_of_the_proto_has_a_pricing_model():
    names = {value.name for value in pb.ChargeModel.DESCRIPTOR.values if value.number}
    assert set(models.MODELS) == names
    assert models.MODELS["CHARGE_MODEL_VOLUME"] is volume
    assert models.MODELS["CHARGE_MODEL_PACKAGE"] is package
    assert models.MODELS["CHARGE_MODEL_PERCENTAGE"] is percentage
    assert models.MODELS["CHARGE_MODEL_GRADUATED_PERCENTAGE"] is graduated_percentage
    assert models.MODELS["CHARGE_MODEL_FLAT"] is flat


def test_every_model_takes_units_properties_and_values():
    props = pb.ChargeProperties(
        amount="2",
        graduated_ranges=ranges(("0", "", "2", "0")),
        volume_ranges=ranges(("0", "", "2", "0")),
        package_size=1,
        rate="10",
        graduated_percentage_ranges=[pb.GraduatedPercentageRange(from_value="0", rate="10", flat_amount="0")],
    )
    amounts = {name: model(D(3), props, decimals("1", "2")).amount for name, model in models.MODELS.items()}
    assert amounts == {
        "CHARGE_MODEL_STANDARD": D(6),
        "CHARGE_MODEL_GRADUATED": D(6),
        "CHARGE_MODEL_VOLUME": D(6),
        "CHARGE_MODEL_PACKAGE": D(6),
        "CHARGE_MODEL_PERCENTAGE": D("0.3"),  # 10% of each event: 0.1 + 0.2
        "CHARGE_MODEL_GRADUATED_PERCENTAGE": D("0.3"),  # 10% of the sum 3
        "CHARGE_MODEL_FLAT": D(2),
    }


# --- volume -----------------------------------------------------------------

# {0..100} at 0.10 + 5 flat, {101..1000} at 0.05, {1001..} at 0.01 + 2 flat.
VOLUME = volume_props(("0", "100", "0.10", "5"), ("101", "1000", "0.05", "0"), ("1001", "", "0.01", "2"))


@pytest.mark.parametrize(
    ("units", "expected"),
    [
        ("0", "0"),  # no usage: not even the first tier's flat fee
        ("0.5", "5.05"),
        ("1", "5.10"),
        ("99", "14.90"),
        ("100", "15.00"),  # 100 x 0.10 + 5, the first tier's last unit
        ("100.5", "5.025"),  # above 100: every unit at the second tier's price
        ("101", "5.05"),
        ("999", "49.95"),
        ("1000", "50.00"),
        ("1000.5", "12.005"),  # 1000.5 x 0.01 + 2
        ("1001", "12.01"),
        ("1000000000000", "10000000002"),  # 10^12 x 0.01 + 2
    ],
)
def test_volume_prices_every_unit_at_the_tier_the_total_lands_in(units, expected):
    assert volume(D(units), VOLUME).amount == D(expected)


def test_volume_breakdown_is_the_one_tier_holding_every_unit():
    assert volume(D(500), VOLUME) == Priced(D(25), [Tier(D(101), D(1000), D(500), D("0.05"), D(0), D(25))])
    assert volume(D(5000), VOLUME).tiers == [Tier(D(1001), None, D(5000), D("0.01"), D(2), D(52))]
    assert volume(D(0), VOLUME).tiers == [Tier(D(0), D(100), D(0), D("0.10"), D(5), D(0))]


def test_volume_keeps_every_digit_of_a_huge_decimal_total():
    priced = volume(D("999999999999.9999"), volume_props(("0", "", "0.0000000003", "0.1")))
    assert priced.amount == D("300.09999999999997")  # 299.99999999999997 + 0.1: 17 digits, none rounded


def test_volume_without_ranges_prices_nothing():
    assert volume(D(10), pb.ChargeProperties()) == Priced(amount=D(0), tiers=[])


def test_volume_total_beyond_the_ranges_given_prices_nothing():
    # Validation requires an open last range; the model itself never invents one.
    assert volume(D(11), volume_props(("0", "10", "1", "3"))) == Priced(amount=D(0), tiers=[])


# --- package ----------------------------------------------------------------


def package_props(amount: str, size: int, free_units: int = 0) -> pb.ChargeProperties:
    return pb.ChargeProperties(amount=amount, package_size=size, free_units=free_units)


@pytest.mark.parametrize(
    ("units", "expected"),
    [
        ("0", "0"),
        ("0.001", "2.50"),  # a started package is a whole package
        ("1", "2.50"),
        ("99", "2.50"),
        ("100", "2.50"),
        ("100.5", "5.00"),
        ("101", "5.00"),
        ("200", "5.00"),
        ("201", "7.50"),
        ("1000000000000", "25000000000"),  # 10^10 packages
        ("1000000000001", "25000000002.50"),
    ],
)
def test_package_charges_each_started_package(units, expected):
    assert package(D(units), package_props("2.50", 100)) == Priced(amount=D(expected))


@pytest.mark.parametrize(
    ("units", "expected"),
    [
        ("0", "0"),
        ("5", "0"),
        ("9.999", "0"),
        ("10", "0"),  # exactly the free units
        ("10.5", "2.50"),
        ("11", "2.50"),
        ("110", "2.50"),
        ("110.0001", "5.00"),
        ("111", "5.00"),
    ],
)
def test_package_starts_after_the_free_units(units, expected):
    assert package(D(units), package_props("2.50", 100, free_units=10)).amount == D(expected)


def test_package_of_one_unit_rounds_decimal_usage_up():
    assert package(D("2.3"), package_props("0.7", 1)).amount == D("2.1")  # 3 packages


def test_package_count_of_a_huge_usage_is_exact():
    # 10^12 / 7 = 142857142857.14...: 142857142858 packages.
    assert package(BIG, package_props("0.01", 7)).amount == D("1428571428.58")
    # A millionth of a unit above 10^12 full packages of 10^18 starts one more.
    assert package(D("1000000000000000000000000000000.000001"), package_props("1", 10**18)).amount == D(10**12 + 1)
    assert package(D(10**30), package_props("1", 10**18)).amount == D(10**12)


# --- percentage -------------------------------------------------------------


def percentage_props(rate: str = "2", **fields) -> pb.ChargeProperties:
    return pb.ChargeProperties(rate=rate, **fields)


EVENTS = decimals("100", "50", "25.5")  # in time order; 2% of each is 2, 1 and 0.51


def priced_percentage(values: list[Decimal], **fields) -> Decimal:
    return percentage(sum(values, D(0)), percentage_props(**fields), values).amount


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({}, "3.51"),
        ({"fixed_amount": "0.30"}, "4.41"),  # 3.51 + 3 x 0.30
        ({"free_units_per_events": 1}, "1.51"),
        ({"free_units_per_events": 2}, "0.51"),
        ({"free_units_per_events": 2, "fixed_amount": "0.30"}, "0.81"),  # free events pay no fixed fee
        ({"free_units_per_events": 3}, "0"),
        ({"free_units_per_events": 4}, "0"),
    ],
)
def test_percentage_rates_each_event_after_the_free_events(fields, expected):
    assert priced_percentage(EVENTS, **fields) == D(expected)


@pytest.mark.parametrize(
    ("free_amount", "expected"),
    [
        ("0", "3.51"),  # a free amount of 0 frees nothing
        ("40", "2.71"),  # crosses inside the first event: 60 x 2% + 1 + 0.51
        ("99.99", "1.5102"),  # 0.01 of the first event is rated
        ("100", "1.51"),  # the first event is exactly the free amount
        ("120", "1.11"),  # crosses inside the second event: 30 x 2% + 0.51
        ("149.99", "0.5102"),
        ("150", "0.51"),
        ("175.49", "0.0002"),
        ("175.5", "0"),  # the whole period is free
        ("1000", "0"),
    ],
)
def test_percentage_rates_only_the_amount_above_the_free_amount(free_amount, expected):
    assert priced_percentage(EVENTS, free_units_per_total_aggregation=free_amount) == D(expected)


def test_percentage_event_crossing_the_free_amount_pays_the_fixed_fee():
    # Free: the first event; the second is rated on 30 and both later events pay 0.30.
    fields = {"free_units_per_total_aggregation": "120", "fixed_amount": "0.30"}
    assert priced_percentage(EVENTS, **fields) == D("1.71")


def test_percentage_free_amount_of_zero_still_frees_events_of_zero():
    # The running total stays at 0 through the first event: it is free, fixed fee included.
    fields = {"free_units_per_total_aggregation": "0", "fixed_amount": "0.30"}
    assert priced_percentage(decimals("0", "100"), **fields) == D("2.30")


@pytest.mark.parametrize(
    ("free_events", "free_amount", "expected"),
    [
        # One free event: the count ends the free period before the running total
        # would cross the free amount, so the second event is rated in full.
        (1, "120", "1.51"),
        (1, "1000", "1.51"),
        # The free amount is crossed inside the second event: it is rated on the 30
        # above 120, and the third in full although the count would still free it.
        (3, "120", "1.11"),
        (3, "100", "1.51"),  # the first event fills the free amount exactly
        # Two free events: the free amount (149) is crossed inside the second event,
        # before the count runs out, so 1 of it is rated.
        (2, "149", "0.53"),
        (2, "150", "0.51"),  # both limits are reached exactly by the second event
        # The count ran out after the second event, before the running total crossed
        # 151 inside the third: the third is rated in full, not only on its 24.5 above.
        (2, "151", "0.51"),
    ],
)
def test_percentage_with_both_free_limits_the_first_one_reached_wins(free_events, free_amount, expected):
    fields = {"free_units_per_events": free_events, "free_units_per_total_aggregation": free_amount}
    assert priced_percentage(EVENTS, **fields) == D(expected)


def test_percentage_free_period_never_resumes():
    # After the refund (-20) the running total is back within the free amount, but the
    # free period has ended: every later event is rated, the refund negatively.
    fields = {"free_units_per_total_aggregation": "100"}
    assert priced_percentage(decimals("60", "50", "-20", "5"), **fields) == D("-0.10")  # 0.2 - 0.4 + 0.1


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        # 2% of 10, 25, 50, 75, 100: 0.2, 0.5, 1, 1.5, 2.
        ({"per_transaction_min_amount": "0.5"}, "5.5"),  # 0.5 + 0.5 + 1 + 1.5 + 2
        ({"per_transaction_max_amount": "1.5"}, "4.7"),  # 0.2 + 0.5 + 1 + 1.5 + 1.5
        ({"per_transaction_min_amount": "0.5", "per_transaction_max_amount": "1.5"}, "5.0"),
        ({"per_transaction_min_amount": "1", "per_transaction_max_amount": "1"}, "5"),
        # Min and max bound the rated part only; the fixed fee comes on top.
        ({"per_transaction_min_amount": "0.5", "per_transaction_max_amount": "1.5", "fixed_amount": "0.1"}, "5.5"),
    ],
)
def test_percentage_bounds_each_transaction_rated_fee(fields, expected):
    assert priced_percentage(decimals("10", "25", "50", "75", "100"), **fields) == D(expected)


def test_percentage_minimum_applies_to_the_rated_part_of_the_crossing_event():
    fields = {"free_units_per_total_aggregation": "99", "per_transaction_min_amount": "0.5"}
    assert priced_percentage(decimals("100"), **fields) == D("0.5")  # 1 x 2% = 0.02, raised to 0.5


def test_percentage_charged_events_of_zero_pay_the_minimum_and_fixed_fee():
    fields = {"per_transaction_min_amount": "0.25", "fixed_amount": "0.05"}
    assert priced_percentage(decimals("0", "0"), **fields) == D("0.60")


def test_percentage_without_events_is_zero_even_with_a_fixed_fee_and_minimum():
    assert priced_percentage([], fixed_amount="0.30", per_transaction_min_amount="1") == D(0)


def test_percentage_reads_the_events_not_the_summed_units():
    assert percentage(D(1000), percentage_props("10"), decimals("5")).amount == D("0.5")


@pytest.mark.parametrize(
    ("rate", "values", "expected"),
    [
        ("1.25", ["19.99"], "0.249875"),
        ("0.0001", ["1000000000000"], "1000000"),
        ("1.5", ["999999999999.99", "1000000000000"], "29999999999.99985"),
        ("150", ["10"], "15"),  # a surcharge above 100% is legal
        ("0", ["10"], "0"),
        ("0.0000000001", ["0.0000000001"], "0.0000000000000000000001"),
    ],
)
def test_percentage_is_exact(rate, values, expected):
    assert priced_percentage(decimals(*values), rate=rate) == D(expected)


# --- graduated percentage -----------------------------------------------------

# {0..1000} at 2% + 1 flat, {1001..10000} at 1%, {10001..} at 0.5% + 10 flat.
GRADUATED_PERCENTAGE = percentage_ranges(
    ("0", "1000", "2", "1"), ("1001", "10000", "1", "0"), ("10001", "", "0.5", "10")
)


@pytest.mark.parametrize(
    ("units", "expected"),
    [
        ("0", "0"),  # no amount in any tier: no flat fee either
        ("0.01", "1.0002"),
        ("500", "11"),
        ("999", "20.98"),
        ("1000", "21"),  # 1000 x 2% + 1
        ("1000.5", "21.005"),
        ("1001", "21.01"),
        ("9999", "110.99"),
        ("10000", "111"),  # 21 + 9000 x 1%
        ("10001", "121.005"),  # 111 + 1 x 0.5% + 10
        ("1000000000000", "5000000071"),  # 121 + (10^12 - 10000) x 0.5%
    ],
)
def test_graduated_percentage_rates_the_amount_inside_each_tier(units, expected):
    assert graduated_percentage(D(units), GRADUATED_PERCENTAGE).amount == D(expected)


def test_graduated_percentage_breakdown_gives_the_fee_per_unit_of_amount():
    priced = graduated_percentage(D(20000), GRADUATED_PERCENTAGE)
    assert priced.tiers == [
        Tier(D(0), D(1000), D(1000), D("0.02"), D(1), D(21)),
        Tier(D(1001), D(10000), D(9000), D("0.01"), D(0), D(90)),
        Tier(D(10001), None, D(10000), D("0.005"), D(10), D(60)),
    ]
    assert priced.amount == D(171)
    assert [t.units for t in graduated_percentage(D(1000), GRADUATED_PERCENTAGE).tiers] == [D(1000)]


def test_graduated_percentage_without_ranges_prices_nothing():
    assert graduated_percentage(D(10), pb.ChargeProperties()) == Priced(amount=D(0), tiers=[])


# --- flat -------------------------------------------------------------------


@pytest.mark.parametrize("units", ["0", "1", "0.5", "1000000000000"])
def test_flat_charges_its_amount_whatever_the_usage(units):
    assert flat(D(units), pb.ChargeProperties(amount="49.99"), decimals(units)) == Priced(amount=D("49.99"))


def test_flat_charges_even_a_period_without_events():
    assert flat(D(0), pb.ChargeProperties(amount="0.0001"), []) == Priced(amount=D("0.0001"))


# --- properties ---------------------------------------------------------------

PRICES = st.decimals(min_value=0, max_value=1000, places=10, allow_nan=False, allow_infinity=False)
RATES = st.decimals(min_value=0, max_value=200, places=6, allow_nan=False, allow_infinity=False)
UNITS = st.decimals(min_value=0, max_value=10**12, places=4, allow_nan=False, allow_infinity=False)
VALUES = st.lists(UNITS, max_size=20)
SIZES = st.integers(min_value=1, max_value=10**9)
FREE = st.integers(min_value=0, max_value=10**9)


def exact_sum(values: list[Decimal]) -> Decimal:
    with localcontext() as exact:
        exact.prec = 60
        return sum(values, D(0))


@settings(deadline=None)  # exact, not timed: keep loaded CI machines from flaking
@given(price=PRICES, flat_fee=PRICES, units=UNITS)
def test_volume_and_graduated_agree_on_a_single_tier(price, flat_fee, units):
    row = ("0", "", str(price), str(flat_fee))
    assert volume(units, volume_props(row)) == graduated(units, pb.ChargeProperties(graduated_ranges=ranges(row)))


@settings(deadline=None)  # exact, not timed: keep loaded CI machines from flaking
@given(amount=PRICES, size=SIZES, free=FREE, a=UNITS, b=UNITS)
def test_package_amount_is_monotonic_in_units(amount, size, free, a, b):
    props = package_props(str(amount), size, free)
    low, high = sorted((a, b))
    assert package(low, props).amount <= package(high, props).amount


@settings(deadline=None)  # exact, not timed: keep loaded CI machines from flaking
@given(
    amount=PRICES,
    size=SIZES,
    free=FREE,
    k=st.integers(min_value=1, max_value=1000),
    share=st.decimals(min_value=D("0.0001"), max_value=1, places=4),
)
def test_package_amount_is_a_step_of_one_package_per_package_size(amount, size, free, k, share):
    # Anywhere in the k-th package, (k-1) to k packages above the free units, the amount is k packages.
    props = package_props(str(amount), size, free)
    with localcontext() as exact:
        exact.prec = 60
        inside_kth = free + (k - 1 + share) * size
        assert package(inside_kth, props).amount == k * amount
        assert package(D(free), props).amount == 0


@settings(deadline=None)  # exact, not timed: keep loaded CI machines from flaking
@given(rate=RATES, values=VALUES)
def test_percentage_without_free_units_bounds_or_fixed_fee_is_the_rate_of_the_sum(rate, values):
    total = exact_sum(values)
    with localcontext() as exact:
        exact.prec = 60
        assert percentage(total, percentage_props(str(rate)), values).amount == total * rate / 100


@settings(deadline=None)  # exact, not timed: keep loaded CI machines from flaking
@given(rate=RATES, values=VALUES)
def test_graduated_percentage_with_one_tier_equals_percentage_at_that_rate(rate, values):
    total = exact_sum(values)
    one_tier = percentage_ranges(("0", "", str(rate), "0"))
    assert graduated_percentage(total, one_tier).amount == percentage(total, percentage_props(str(rate)), values).amount


@settings(deadline=None)  # exact, not timed: keep loaded CI machines from flaking
@given(amount=PRICES, units=UNITS, values=VALUES)
def test_flat_ignores_usage(amount, units, values):
    props = pb.ChargeProperties(amount=str(amount))
    assert flat(units, props, values) == flat(D(0), props) == Priced(amount=amount)


@settings(deadline=None)  # exact, not timed: keep loaded CI machines from flaking
@given(amount=PRICES, units=UNITS)
def test_standard_and_graduated_accept_the_values_and_ignore_them(amount, units):
    props = pb.ChargeProperties(amount=str(amount), graduated_ranges=ranges(("0", "", str(amount), "0")))
    assert standard(units, props, [units]) == standard(units, props)
    assert graduated(units, props, [units]) == graduated(units, props)
