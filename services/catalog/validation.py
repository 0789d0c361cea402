"""Input rules shared by the catalog's resources."""

from __future__ import annotations

import re
from collections.abc import Sequence

from services.common.errors import InvalidArgument

_CODE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,99}$")
_EXTERNAL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@\-]{0,199}$")


def code(value: str, field: str) -> str:
    """Codes are 1-100 characters: letters, digits and _ . : - (no spaces)."""
    if not value:
        raise InvalidArgument(f"{field} is required", field=field)
    if not _CODE.fullmatch(value):
        raise InvalidArgument(
            f"{field} must be 1-100 letters, digits, '_', '.', ':' or '-', starting with a letter or digit", field=field
        )
    return value


def external_id(value: str, field: str) -> str:
    """Client-chosen ids (customers, subscriptions): up to 200 such characters, '@' allowed."""
    if not value:
        raise InvalidArgument(f"{field} is required", field=field)
    if not _EXTERNAL_ID.fullmatch(value):
        raise InvalidArgument(
            f"{field} must be 1-200 letters, digits, '_', '.', ':', '@' or '-', starting with a letter or digit",
            field=field,
        )
    return value


def text(value: str, field: str, max_length: int = 200) -> str:
    if len(value) > max_length:
        raise InvalidArgument(f"{field} must be at most {max_length} characters", field=field)
    return value


def strings(values: Sequence[str], field: str, max_items: int, max_length: int) -> list[str]:
    """A list of distinct non-empty strings of at most `max_length` characters,
    at most `max_items` of them; an item's error names it (`field[1]`)."""
    if len(values) > max_items:
        raise InvalidArgument(f"{field} has more than {max_items} items", field=field)
    seen: set[str] = set()
    for index, value in enumerate(values):
        here = f"{field}[{index}]"
        if not value:
            raise InvalidArgument(f"{here} must not be empty", field=here)
        text(value, here, max_length)
        if value in seen:
            raise InvalidArgument(f"{here}: {value!r} is given twice", field=here)
        seen.add(value)
    return list(values)
