"""Small shapes the dialects share."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from google.protobuf.message import Message

Json = dict[str, Any]


def bound(text: str) -> int | str | None:
    """A tier bound: whole numbers as JSON integers, the open end as null."""
    if not text:
        return None
    value = Decimal(text)
    return int(value) if value == value.to_integral_value() else text


def bounded(tier: Message, shown: Json) -> Json:
    return {**shown, "from": bound(shown["from"]), "to": bound(shown["to"])}
