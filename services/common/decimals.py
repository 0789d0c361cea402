"""Exact decimal parsing for amounts and quantities. Never floats."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from services.common.errors import InvalidArgument

# Magnitudes beyond 10^±100 are refused: no price or quantity needs them, and the
# plain notation of "1e999999999" would be a billion digits.
MAX_EXPONENT = 100
# The largest money amount a plan, coupon or add-on may name: in major units (a
# price, a flat amount), and in minor units (a base fee, a minimum, a
# threshold). Far inside what an invoice holds (pricing/money.py), so what one
# states is always billable; usage times price is checked when it is priced.
MAX_AMOUNT = Decimal(10) ** 13
MAX_AMOUNT_CENTS = 10**15


def parse_decimal(text: str, field: str, *, allow_negative: bool = False) -> Decimal:
    """Parses a finite decimal string ("0.001", "2340"), naming `field` on error."""
    try:
        value = Decimal(text)
    except (InvalidOperation, TypeError):
        raise InvalidArgument(f"{field} must be a decimal number, got {text!r}", field=field) from None
    if not value.is_finite():
        raise InvalidArgument(f"{field} must be a finite number, got {text!r}", field=field)
    if value < 0 and not allow_negative:
        raise InvalidArgument(f"{field} must not be negative, got {text!r}", field=field)
    if value and abs(value.adjusted()) > MAX_EXPONENT:
        raise InvalidArgument(f"{field} is out of range, got {text!r}", field=field)
    return value


def canonical(value: Decimal) -> str:
    """Plain notation without exponent or trailing zeros, every digit kept: 2340, 0.001, 12.5."""
    if value == 0:
        return "0"
    text = format(value, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def parse_amount(text: str, field: str, *, allow_negative: bool = False) -> Decimal:
    """A money amount in major units (see parse_decimal), at most MAX_AMOUNT either way."""
    value = parse_decimal(text, field, allow_negative=allow_negative)
    if value.copy_abs() > MAX_AMOUNT:
        raise InvalidArgument(
            f"{field} must be at most {canonical(MAX_AMOUNT)}, got {text[:100]!r}",
            field=field,
            reason="AMOUNT_TOO_LARGE",
        )
    return value


def check_cents(value: int, field: str, *, positive: bool = False) -> int:
    """A money amount in minor units: not negative (more than 0 when
    `positive`), at most MAX_AMOUNT_CENTS."""
    if value < 0 or (positive and value == 0):
        least = "be more than 0" if positive else "not be negative"
        raise InvalidArgument(f"{field} must {least}", field=field)
    if value > MAX_AMOUNT_CENTS:
        raise InvalidArgument(
            f"{field} must be at most {MAX_AMOUNT_CENTS}, got {value}", field=field, reason="AMOUNT_TOO_LARGE"
        )
    return value
