"""What each API key role may do through the gateway.

- admin: everything, including managing API keys (/v1/api_keys);
- write: everything but managing API keys;
- ingest: only event ingestion (admission.INGEST_PATHS), nothing else;
- read: only reads: GETs and the read-only POSTs (admission.READ_POSTS).

Keys made before roles existed (and the BXB_API_KEY bootstrap key) are admin.
"""

from __future__ import annotations

from gateway.admission import kind_of
from gateway.errors import ApiError

KEYS_PATH = "/v1/api_keys"


def manages_keys(path: str) -> bool:
    return path == KEYS_PATH or path.startswith(KEYS_PATH + "/")


def allowed(role: str, method: str, path: str) -> bool:
    """Whether a key of `role` may make this request."""
    if role == "admin":
        return True
    if manages_keys(path):
        return False
    kind = kind_of("GET" if method == "HEAD" else method, path)
    return role == "write" or kind == {"ingest": "ingest", "read": "read"}.get(role)


def check(role: str, method: str, path: str) -> None:
    """403 PERMISSION_DENIED naming the role when it may not make this request."""
    if not allowed(role, method, path):
        raise ApiError(
            403, "PERMISSION_DENIED", "ROLE_NOT_ALLOWED", f"an API key of role {role!r} may not {method} {path}"
        )
