"""Signing per the Standard Webhooks specification, with the `standardwebhooks`
package: each endpoint has its own secret ("whsec_" + base64 of 24 random
bytes). While a rotation's overlap lasts, the old secret signs beside the new
one and `webhook-signature` carries both signatures, space separated (the
specification's format), so a receiver verifies with either."""

from __future__ import annotations

import base64
import secrets
from collections.abc import Sequence
from datetime import datetime

from standardwebhooks.webhooks import Webhook

PREFIX = "whsec_"
SECRET_BYTES = 24


def new_secret() -> str:
    return PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def signature(secrets_: Sequence[str], msg_id: str, timestamp: datetime, payload: bytes) -> str:
    """The `webhook-signature` header: one "v1,..." signature per secret, space separated."""
    return " ".join(Webhook(secret).sign(msg_id, timestamp, payload) for secret in secrets_)
