"""The calling organization, carried in gRPC metadata.

The gateway authenticates the API key and sends the organization id in the
`x-bxb-organization` metadata entry; services read it once per call into a
context variable, and every query filters by it. They honour it only from an
authenticated caller (trust.py) and for an organization that exists
(known_organizations.py), checked in grpc_server.py.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterable

from services.common import trust
from services.common.errors import Unauthenticated

METADATA_KEY = "x-bxb-organization"

_organization: contextvars.ContextVar[str] = contextvars.ContextVar("organization", default="")


def organization_id() -> str:
    """The calling organization; UNAUTHENTICATED when the call carries none."""
    org = _organization.get()
    if not org:
        raise Unauthenticated("the call carries no organization", reason="MISSING_ORGANIZATION")
    return org


def bind(org: str) -> contextvars.Token[str]:
    return _organization.set(org)


def reset(token: contextvars.Token[str]) -> None:
    _organization.reset(token)


def metadata(org: str) -> tuple[tuple[str, str], ...]:
    """Call metadata that makes a service act for `org`, with the service
    token that authenticates the caller when TLS does not."""
    return ((METADATA_KEY, org), *trust.service_metadata())


def from_metadata(pairs: Iterable[tuple[str, str | bytes]] | None) -> str:
    for key, value in pairs or ():
        if key == METADATA_KEY and isinstance(value, str):  # only a key ending in -bin carries bytes
            return value
    return ""
