"""Protobuf values as the public JSON API spells them."""

from __future__ import annotations

from decimal import Decimal

from services.common.timestamps import format_rfc3339, from_proto


def time(message, field: str) -> str | None:
    return format_rfc3339(from_proto(getattr(message, field))) if message.HasField(field) else None


def enum(enum_type, value: int, prefix: str) -> str:
    """AGGREGATION_TYPE_UNIQUE_COUNT -> "unique_count"."""
    return enum_type.Name(value).removeprefix(prefix).lower()


def enum_value(enum_type, name: str, prefix: str) -> int:
    return enum_type.Value(prefix + name.upper())


def bound(text: str) -> int | str | None:
    """A tier bound: whole numbers as JSON integers, the open end as null."""
    if not text:
        return None
    value = Decimal(text)
    return int(value) if value == value.to_integral_value() else text
