"""How API-key secrets are stored: HMAC-SHA256 under a key derived from
BXB_SECRET_KEY, so a copy of the table is of no use without the server
secret. Keys made before this hold plain SHA-256 ("sha256"); they still
authenticate, and the catalog re-hashes each with HMAC on its first use.

Changing BXB_SECRET_KEY invalidates every HMAC-stored key."""

from __future__ import annotations

import functools
import hashlib
import hmac

from services.common import config

HMAC = "hmac-sha256"
LEGACY = "sha256"


@functools.lru_cache(maxsize=4)
def _subkey(secret_key: bytes) -> bytes:
    """A key for API keys only, distinct from what else BXB_SECRET_KEY signs."""
    return hmac.new(secret_key, b"bxb api keys", hashlib.sha256).digest()


def keyed(secret: str) -> str:
    """The stored hash of a secret (hex)."""
    return hmac.new(_subkey(config.secret_key()), secret.encode(), hashlib.sha256).hexdigest()


def legacy(secret: str) -> str:
    """The plain SHA-256 rows made before keyed hashes hold."""
    return hashlib.sha256(secret.encode()).hexdigest()


def candidates(secret: str) -> dict[str, str]:
    """Each scheme's hash of `secret`: what a stored row may hold."""
    return {HMAC: keyed(secret), LEGACY: legacy(secret)}
