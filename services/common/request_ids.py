"""Request ids: one per gateway request, carried to every service it reaches.

The gateway takes an incoming X-Request-Id when it is valid (bounded,
printable) or makes one, answers it in the response header, and sets
REQUEST_ID for the request. Channels (`channels.CallDefaults`) pass it to services in the
gRPC metadata x-request-id; a service's interceptor sets REQUEST_ID from
it, so every log record of the request names it (logs.py).
"""

from __future__ import annotations

import contextvars
import re
import secrets

METADATA_KEY = "x-request-id"
HEADER = "x-request-id"
# What an incoming request id may be: bounded, printable, no spaces (it goes into logs and headers).
VALID = re.compile(r"[A-Za-z0-9._:/+=@-]{1,128}")

REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("bxb_request_id", default="")


def accepted(raw: str | None) -> str:
    """The caller's request id when it is one bxb accepts, else a fresh one."""
    if raw and VALID.fullmatch(raw):
        return raw
    return secrets.token_hex(16)


def from_metadata(metadata: object) -> str:
    """The request id in a call's invocation metadata (a fresh one when none is valid)."""
    for key, value in metadata or ():  # type: ignore[attr-defined]
        if key == METADATA_KEY:
            return accepted(value if isinstance(value, str) else None)
    return accepted(None)
