"""Rounding rule of bxb: each fee is computed exactly, then rounded once to
the currency's minor unit, half away from zero (ROUND_HALF_UP). Totals are sums
of rounded fees, so an invoice always adds up."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, localcontext

from services.common.currencies import exponent

# 60 significant digits: 10^12 units at a 10-decimal price stays exact.
PRECISION = 60


def to_minor(amount: Decimal, currency: str) -> int:
    """Major-unit amount -> integer minor units, rounded half up."""
    with localcontext() as ctx:
        ctx.prec = PRECISION
        scaled = amount.scaleb(exponent(currency))
        return int(scaled.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def from_minor(cents: int, currency: str) -> Decimal:
    return Decimal(cents).scaleb(-exponent(currency))
