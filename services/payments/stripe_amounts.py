"""bxb's amounts in Stripe's units.

bxb stores ISO 4217 minor units (services/common/currencies.py). Stripe's
`amount` is in its own minor unit for the currency, which is not always
ISO's (https://docs.stripe.com/currencies):

- zero-decimal at Stripe: BIF CLP DJF GNF JPY KMF KRW MGA PYG RWF UGX VND VUV
  XAF XOF XPF (MGA has two decimals in ISO 4217: its fractions are dropped);
- three-decimal: BHD JOD KWD OMR TND, with the last digit 0 (a multiple of 10);
- ISK: zero-decimal in ISO 4217, but Stripe keeps two decimals for backwards
  compatibility and wants whole kronur (a multiple of 100);
- HUF and TWD: two decimals for charges (Stripe's zero-decimal rule for them
  is about payouts); UGX: zero-decimal, as in ISO 4217;
- any other currency: two decimals. (IQD and LYD, three decimals in ISO, are
  then sent with two; Stripe refuses currencies it does not support.)

An amount Stripe cannot express exactly is rounded down, never up: a charge
never takes more than is owed. What is left uncharged, in bxb's minor
units, is recorded with the attempt. Integer arithmetic only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from services.common import currencies

ZERO_DECIMAL = frozenset(
    {"BIF", "CLP", "DJF", "GNF", "JPY", "KMF", "KRW", "MGA", "PYG", "RWF", "UGX", "VND", "VUV", "XAF", "XOF", "XPF"}
)
THREE_DECIMAL = frozenset({"BHD", "JOD", "KWD", "OMR", "TND"})
# Stripe's decimals for a currency, and the multiple its amount must be of.
SPECIAL = {
    **{code: (0, 1) for code in ZERO_DECIMAL},
    **{code: (3, 10) for code in THREE_DECIMAL},
    "ISK": (2, 100),
}
DEFAULT = (2, 1)


@dataclass(frozen=True)
class StripeAmount:
    amount: int  # in Stripe's units for the currency
    uncharged_cents: int  # bxb minor units left out by rounding down


def stripe_amount(amount_cents: int, currency: str) -> StripeAmount:
    """`amount_cents` (bxb's minor units of `currency`, not negative) as Stripe's `amount`."""
    ours = currencies.exponent(currency)
    theirs, multiple = SPECIAL.get(currency, DEFAULT)
    fine = max(ours, theirs)  # count in the finer of the two units
    per_ours, per_theirs = 10 ** (fine - ours), 10 ** (fine - theirs)
    # A Stripe multiple that is also a whole bxb minor unit, so both sides stay exact.
    step = math.lcm(multiple * per_theirs, per_ours)
    charged = amount_cents * per_ours // step * step
    return StripeAmount(charged // per_theirs, (amount_cents * per_ours - charged) // per_ours)


def minor_units(amount: int, currency: str) -> int:
    """Stripe's `amount` of `currency` in bxb's minor units (the inverse of
    stripe_amount for what it answers; finer Stripe units are rounded down)."""
    ours = currencies.exponent(currency)
    theirs, _ = SPECIAL.get(currency, DEFAULT)
    scale: int = 10 ** abs(ours - theirs)
    return amount * scale if ours >= theirs else amount // scale
