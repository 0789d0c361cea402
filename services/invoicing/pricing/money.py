"""Rounding rule of bxb: each fee is computed exactly, then rounded once to
the currency's minor unit, half away from zero (ROUND_HALF_UP). Totals are sums
of rounded fees, so an invoice always adds up.

Every amount an invoice holds, each line and each total, is at most
MAX_MINOR minor units either way: far inside the 64-bit integers that
PostgreSQL and protobuf store, whatever an invoice adds up. Prices are
bounded where a plan is defined, but usage is not (a sum of many events): an
amount beyond the bound is AMOUNT_OUT_OF_RANGE (FAILED_PRECONDITION, naming
what), never an overflow.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, localcontext

from services.common.currencies import exponent
from services.common.errors import FailedPrecondition

# 60 significant digits: 10^12 units at a 10-decimal price stays exact.
PRECISION = 60
MAX_MINOR = 10**17


class AmountOutOfRange(FailedPrecondition):
    default_reason = "AMOUNT_OUT_OF_RANGE"


def within(cents: int, what: str) -> int:
    """`cents`, unless beyond MAX_MINOR either way."""
    if abs(cents) > MAX_MINOR:
        raise AmountOutOfRange(f"{what} comes to {cents} minor units, more than the {MAX_MINOR} an invoice may hold")
    return cents


def to_minor(amount: Decimal, currency: str, what: str = "an amount") -> int:
    """Major-unit amount -> integer minor units, rounded half up (within MAX_MINOR)."""
    with localcontext() as ctx:
        ctx.prec = PRECISION
        scaled = amount.scaleb(exponent(currency))
        if scaled.copy_abs() > MAX_MINOR:  # before rounding: a huge one has no integral at this precision
            raise AmountOutOfRange(f"{what} comes to more than the {MAX_MINOR} minor units an invoice may hold")
        return int(scaled.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def from_minor(cents: int, currency: str) -> Decimal:
    return Decimal(cents).scaleb(-exponent(currency))
