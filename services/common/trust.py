"""Which calls come from the gateway.

Some of what a call may carry is the gateway's to say: the events it refused
at the edge, recorded beside metering's own refusals. The gateway signs its
calls with a token derived from BXB_SECRET_KEY (which every process of a
deployment shares), so another caller cannot write what only the gateway
may. Mutual TLS between services replaces this when it comes.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
from collections.abc import Iterable

from services.common import config

METADATA_KEY = "x-bxb-gateway"


def gateway_token() -> str:
    return _token(config.secret_key())


@functools.lru_cache(maxsize=4)
def _token(key: bytes) -> str:
    """Derived once per key, not on every call the gateway makes."""
    return hmac.new(key, b"bxb gateway calls", hashlib.sha256).hexdigest()


def metadata() -> tuple[tuple[str, str], ...]:
    """Call metadata that says the gateway is calling."""
    return ((METADATA_KEY, gateway_token()),)


def from_gateway(pairs: Iterable[tuple[str, str | bytes]] | None) -> bool:
    """Whether call metadata carries the gateway's token."""
    given = next((value for key, value in pairs or () if key == METADATA_KEY and isinstance(value, str)), "")
    return hmac.compare_digest(given.encode(), gateway_token().encode())
