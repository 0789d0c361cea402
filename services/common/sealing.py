"""Secrets kept at rest, sealed: an organization's Stripe key, webhook signing
secret or analytics credentials are stored only as AES-256-GCM ciphertext.

The key comes from BXB_SECRET_KEY through HKDF-SHA256 (one derived key per
purpose), and each ciphertext is bound to its organization and purpose as
associated data: a sealed value copied to another organization's row, or
into another column, does not open. A sealed value reads `v1.<nonce><ct>`
(URL-safe base64), so a later key or scheme can be told apart.
"""

from __future__ import annotations

import base64
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from services.common import config
from services.common.errors import FailedPrecondition

VERSION = "v1"
NONCE_BYTES = 12


class Unsealable(Exception):
    """A sealed value that does not open: tampered, another organization's or
    purpose's, or sealed under another BXB_SECRET_KEY."""


def require_secret_key() -> None:
    """Refuses (FAILED_PRECONDITION) to take an organization's secret for
    sealing while BXB_SECRET_KEY is unset: the development key is public."""
    if not config.env_str("BXB_SECRET_KEY", ""):
        raise FailedPrecondition(
            "BXB_SECRET_KEY is not set: secrets are not stored under the public development key",
            reason="SECRET_KEY_NOT_CONFIGURED",
        )


def _key(purpose: str, secret: bytes) -> AESGCM:
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=f"bxb sealing {purpose}".encode())
    return AESGCM(derived.derive(secret))


def _context(organization_id: str, purpose: str) -> bytes:
    return f"{organization_id}\x00{purpose}".encode()


def seal(plaintext: str, organization_id: str, purpose: str, secret: bytes | None = None) -> str:
    """`plaintext` sealed for one organization and purpose."""
    nonce = os.urandom(NONCE_BYTES)
    sealed = _key(purpose, secret or config.secret_key()).encrypt(
        nonce, plaintext.encode(), _context(organization_id, purpose)
    )
    return f"{VERSION}.{base64.urlsafe_b64encode(nonce + sealed).decode()}"


def unseal(sealed: str, organization_id: str, purpose: str, secret: bytes | None = None) -> str:
    """The plaintext of a value `seal` made for this organization and purpose."""
    version, _, body = sealed.partition(".")
    if version != VERSION:
        raise Unsealable(f"unknown sealing version {version!r}")
    try:
        raw = base64.urlsafe_b64decode(body.encode())
        nonce, ciphertext = raw[:NONCE_BYTES], raw[NONCE_BYTES:]
        opened = _key(purpose, secret or config.secret_key()).decrypt(
            nonce, ciphertext, _context(organization_id, purpose)
        )
    except (InvalidTag, ValueError) as error:
        raise Unsealable("the sealed value does not open here") from error
    return opened.decode()
