"""AIP-158 pagination: page_size with a default and a cap, opaque page tokens
a client cannot forge, and replies bounded in bytes.

A token holds the offset of the next page into a stable ordering, and an
HMAC of it bound to the listing and the organization it came from (keyed by
BXB_SECRET_KEY): a token another listing or organization issued, or one a
client made up or edited, is refused, so no client can make a listing skip
to an offset no page of its own led to. A page answers at most page_size
items and at most REPLY_BYTES of them (at least one): a listing of large
items (plans, invoices, events) never exceeds what a gRPC message holds, and
the next token starts where it stopped.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from services.common import config, tenancy
from services.common.errors import InvalidArgument

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
# The most one page's items may weigh, serialized: well inside the 16 MiB every
# bxb channel and server takes (grpc_server.MESSAGE_BYTES), whatever its items.
REPLY_BYTES = 4 * 1024 * 1024
TAG_BYTES = 12  # of the HMAC-SHA256 kept in a token


class Sized(Protocol):
    def ByteSize(self) -> int: ...


class PageRequest(Protocol):
    """A list request: AIP-158's page_size and page_token."""

    page_size: int
    page_token: str


@dataclass(frozen=True)
class Page:
    """Where one listing call starts, and how many items it may answer."""

    listing: str
    offset: int
    size: int


def page_size(requested: int) -> int:
    if requested < 0:
        raise InvalidArgument("page_size must not be negative", field="page_size")
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def _tag(listing: str, offset: int) -> bytes:
    message = f"{tenancy.organization_id()}\x00{listing}\x00{offset}".encode()
    return hmac.new(config.secret_key(), message, hashlib.sha256).digest()[:TAG_BYTES]


def encode_token(listing: str, offset: int) -> str:
    """The token of the page of `listing` starting at `offset`, for the calling organization."""
    raw = offset.to_bytes(8, "big") + _tag(listing, offset)
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(listing: str, token: str) -> int:
    """The offset a token of `listing` for the calling organization holds; 0 for none."""
    if not token:
        return 0
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except ValueError:
        raw = b""
    offset = int.from_bytes(raw[:8], "big")
    if len(raw) != 8 + TAG_BYTES or not hmac.compare_digest(raw[8:], _tag(listing, offset)):
        raise InvalidArgument("page_token is not a token this listing issued", field="page_token")
    return offset


def page(request: PageRequest, listing: str) -> Page:
    """The page a list request asks for (its page_size and page_token)."""
    return Page(listing, decode_token(listing, request.page_token), page_size(request.page_size))


def answer[Item: Sized](asked: Page, items: Sequence[Item]) -> tuple[list[Item], str]:
    """The page's items, from those fetched (size + 1: one more is a sign
    of a next page), cut at REPLY_BYTES, and the next page's token."""
    kept: list[Item] = []
    weight = 0
    for item in items[: asked.size]:
        weight += item.ByteSize()
        if kept and weight > REPLY_BYTES:
            break
        kept.append(item)
    more = len(kept) < len(items)
    return kept, encode_token(asked.listing, asked.offset + len(kept)) if more else ""
