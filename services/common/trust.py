"""Which callers are bxb's own processes, and which is the gateway.

Without mutual TLS (tls.py), an internal caller proves it is one of the
deployment's processes with a service token: an HMAC of BXB_SECRET_KEY (which
every process of a deployment shares) in the `x-bxb-service` metadata entry.
Services honour organization metadata, and serve the organization and key
administration, only to such callers (grpc_server.py). With mutual TLS the
transport has already checked the caller's certificate.

Some of what a call may carry is the gateway's alone to say: the events it
refused at the edge, recorded beside metering's own refusals. The gateway
signs its calls with a token of its own, so another service cannot write
what only the gateway may.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
from collections.abc import Iterable

from services.common import config

METADATA_KEY = "x-bxb-gateway"
SERVICE_METADATA_KEY = "x-bxb-service"


def gateway_token() -> str:
    return _token(config.secret_key(), b"bxb gateway calls")


def service_token() -> str:
    return _token(config.secret_key(), b"bxb service calls")


@functools.lru_cache(maxsize=8)
def _token(key: bytes, purpose: bytes) -> str:
    """Derived once per key, not on every call."""
    return hmac.new(key, purpose, hashlib.sha256).hexdigest()


def metadata() -> tuple[tuple[str, str], ...]:
    """Call metadata that says the gateway is calling."""
    return ((METADATA_KEY, gateway_token()),)


def service_metadata() -> tuple[tuple[str, str], ...]:
    """Call metadata that says one of the deployment's processes is calling."""
    return ((SERVICE_METADATA_KEY, service_token()),)


def _carries(pairs: Iterable[tuple[str, str | bytes]] | None, key: str, token: str) -> bool:
    given = next((value for name, value in pairs or () if name == key and isinstance(value, str)), "")
    return hmac.compare_digest(given.encode(), token.encode())


def from_gateway(pairs: Iterable[tuple[str, str | bytes]] | None) -> bool:
    """Whether call metadata carries the gateway's token."""
    return _carries(pairs, METADATA_KEY, gateway_token())


def from_service(pairs: Iterable[tuple[str, str | bytes]] | None) -> bool:
    """Whether call metadata carries the service token."""
    return _carries(pairs, SERVICE_METADATA_KEY, service_token())
