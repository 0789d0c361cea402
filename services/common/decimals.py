"""Exact decimal parsing for amounts and quantities. Never floats."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from services.common.errors import InvalidArgument

# Magnitudes beyond 10^±100 are refused: no price or quantity needs them, and the
# plain notation of "1e999999999" would be a billion digits.
MAX_EXPONENT = 100


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
