"""AIP-158 pagination: page_size with a default and a cap, opaque page tokens.

Tokens encode the offset into a stable ordering; clients treat them as opaque.
"""

from __future__ import annotations

import base64

from services.common.errors import InvalidArgument

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500


def page_size(requested: int) -> int:
    if requested < 0:
        raise InvalidArgument("page_size must not be negative", field="page_size")
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def decode_token(token: str) -> int:
    if not token:
        return 0
    try:
        offset = int(base64.urlsafe_b64decode(token.encode()).decode().removeprefix("o:"))
    except (ValueError, UnicodeDecodeError):
        raise InvalidArgument("page_token is not a token this API issued", field="page_token") from None
    if not 0 <= offset < 2**63:
        raise InvalidArgument("page_token is not a token this API issued", field="page_token")
    return offset


def encode_token(offset: int) -> str:
    return base64.urlsafe_b64encode(f"o:{offset}".encode()).decode()


def next_token(offset: int, size: int, fetched: int) -> str:
    """Fetch size+1 rows; a full extra row means there is another page."""
    return encode_token(offset + size) if fetched > size else ""
