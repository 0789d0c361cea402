"""bxb's ISO 4217 minor units as Stripe's `amount`, per Stripe's currency
rules (https://docs.stripe.com/currencies): every special case, exactly."""

from __future__ import annotations

import pytest

from services.payments.stripe_amounts import THREE_DECIMAL, ZERO_DECIMAL, StripeAmount, stripe_amount


@pytest.mark.parametrize(
    ("currency", "amount_cents", "amount", "uncharged_cents"),
    [
        # Two decimals both ways: unchanged.
        ("USD", 4750, 4750, 0),
        ("EUR", 1, 1, 0),
        # HUF and TWD: Stripe charges two decimals (its zero-decimal rule is for payouts), as ISO has them.
        ("HUF", 123456, 123456, 0),
        ("TWD", 99999, 99999, 0),
        # Zero-decimal both ways, UGX included: unchanged.
        ("JPY", 500, 500, 0),
        ("KRW", 12345, 12345, 0),
        ("UGX", 5000, 5000, 0),
        ("CLP", 1, 1, 0),
        # ISK: whole kronur in ISO, two decimals at Stripe, always a multiple of 100.
        ("ISK", 48, 4800, 0),
        ("ISK", 1, 100, 0),
        # MGA: two decimals in ISO, zero-decimal at Stripe: the fraction of an ariary stays uncharged.
        ("MGA", 12345, 123, 45),
        ("MGA", 12300, 123, 0),
        # Three decimals with the last digit 0: rounded down, never more than owed.
        ("KWD", 47505, 47500, 5),
        ("KWD", 47500, 47500, 0),
        ("BHD", 19, 10, 9),
        ("JOD", 1001, 1000, 1),
        ("OMR", 999, 990, 9),
        ("TND", 5, 0, 5),  # less than Stripe's step: nothing chargeable (Stripe refuses a 0 amount)
        # Three decimals in ISO, not a Stripe three-decimal currency: sent with two.
        ("IQD", 12345, 1234, 5),
        ("LYD", 10, 1, 0),
        # Zero decimals in ISO and not at Stripe's zero-decimal list: two decimals there.
        ("UYI", 7, 700, 0),
        ("USD", 0, 0, 0),
    ],
)
def test_stripe_units(currency, amount_cents, amount, uncharged_cents):
    assert stripe_amount(amount_cents, currency) == StripeAmount(amount, uncharged_cents)


@pytest.mark.parametrize("currency", sorted(ZERO_DECIMAL))
def test_every_stripe_zero_decimal_currency_is_sent_in_whole_units(currency):
    # ISO's exponent is 0 for all of them but MGA (2).
    whole = stripe_amount(300, currency) if currency != "MGA" else stripe_amount(30000, currency)
    assert whole == StripeAmount(300, 0)


@pytest.mark.parametrize("currency", sorted(THREE_DECIMAL))
def test_every_three_decimal_currency_ends_in_zero(currency):
    assert stripe_amount(1239, currency) == StripeAmount(1230, 9)


def test_large_amounts_stay_exact():
    # Beyond a float's 53 bits: integer arithmetic throughout.
    assert stripe_amount(9_007_199_254_740_993, "USD") == StripeAmount(9_007_199_254_740_993, 0)
    assert stripe_amount(9_007_199_254_740_993, "KWD") == StripeAmount(9_007_199_254_740_990, 3)
    assert stripe_amount(9_007_199_254_740_993, "ISK") == StripeAmount(900_719_925_474_099_300, 0)
