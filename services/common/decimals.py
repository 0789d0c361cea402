"""Exact decimal parsing for amounts and quantities. Never floats."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from services.common.errors import InvalidArgument


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
    return value


def canonical(value: Decimal) -> str:
    """Plain notation without exponent or trailing zeros: 2340, 0.001, 12.5."""
    if value == 0:
        return "0"
    text = format(value.normalize(), "f")
    return text
