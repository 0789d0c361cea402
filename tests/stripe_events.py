"""Stripe webhook events made by a test: signed as Stripe signs them, for
what localstripe never sends (disputes, refunds, Checkout) or sends in an
old shape.

Stripe signs each delivery with the endpoint's secret (`whsec_...`): the
`Stripe-Signature` header is `t=<unix seconds>,v1=<hex HMAC-SHA256 of
"<t>.<raw body>" keyed with the secret>`, and receivers (the SDK's
`stripe.Webhook.construct_event`) refuse a signature that does not match or
a timestamp older than their tolerance (300 s by default). `sign` makes
that header; `deliver` POSTs an event's JSON with it, to a URL or through an
httpx client (an ASGI app's, for instance).

The builders make the objects localstripe cannot: a dispute (localstripe
has no disputes), a charge as `charge.refunded` carries it with its refunds
(localstripe makes refunds but sends no event for them), a refund. Their
fields are those of Stripe's API reference; ids are random with Stripe's
prefixes."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import string
import time
from typing import Any

import httpx
import stripe

Json = dict[str, Any]

# The API version the installed SDK pins: events are rendered in it, as for
# an endpoint created with that SDK.
API_VERSION: str = stripe.api_version
DISPUTE_STATUSES = (
    "warning_needs_response",
    "warning_under_review",
    "warning_closed",
    "needs_response",
    "under_review",
    "won",
    "lost",
)


def random_id(prefix: str, length: int = 24) -> str:
    """A Stripe-like id: its prefix, then letters and digits."""
    alphabet = string.ascii_letters + string.digits
    return prefix + "".join(secrets.choice(alphabet) for _ in range(length))


def sign(payload: bytes, secret: str, timestamp: int | None = None) -> str:
    """The `Stripe-Signature` header Stripe sends with `payload` to an
    endpoint whose signing secret is `secret`, signed at `timestamp` (now)."""
    at = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), b"%d." % at + payload, hashlib.sha256).hexdigest()
    return f"t={at},v1={digest}"


def event(
    type: str,
    obj: Json,
    *,
    account: str | None = None,
    created: int | None = None,
    event_id: str | None = None,
) -> Json:
    """A Stripe Event carrying `obj` (a snapshot, as webhooks send it).
    `account` (acct_...) is set only when given: Stripe adds it to events
    of connected accounts, not to an account's own."""
    body: Json = {
        "id": event_id or random_id("evt_"),
        "object": "event",
        "api_version": API_VERSION,
        "created": int(time.time()) if created is None else created,
        "data": {"object": obj},
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": type,
    }
    if account is not None:
        body["account"] = account
    return body


def dispute(
    charge_id: str,
    payment_intent_id: str,
    amount: int,
    currency: str,
    status: str = "needs_response",
    reason: str = "fraudulent",
) -> Json:
    """A Dispute object (for `charge.dispute.created`, `.updated`, `.closed`):
    `status` is one of Stripe's (needs_response, under_review, won, lost, ...)."""
    if status not in DISPUTE_STATUSES:
        raise ValueError(f"not a dispute status: {status}")
    now = int(time.time())
    return {
        "id": random_id("dp_"),
        "object": "dispute",
        "amount": amount,
        "balance_transactions": [],
        "charge": charge_id,
        "created": now,
        "currency": currency.lower(),
        "evidence": {},
        "evidence_details": {
            "due_by": now + 7 * 86400,
            "has_evidence": False,
            "past_due": False,
            "submission_count": 0,
        },
        "is_charge_refundable": False,
        "livemode": False,
        "metadata": {},
        "payment_intent": payment_intent_id,
        "reason": reason,
        "status": status,
    }


def refund(
    charge_id: str,
    payment_intent_id: str | None,
    amount: int,
    currency: str,
    status: str = "succeeded",
    metadata: dict[str, str] | None = None,
) -> Json:
    """A Refund object (for `refund.created`/`.updated`, or a charge's `refunds`)."""
    return {
        "id": random_id("re_"),
        "object": "refund",
        "amount": amount,
        "balance_transaction": None,
        "charge": charge_id,
        "created": int(time.time()),
        "currency": currency.lower(),
        "metadata": metadata or {},
        "payment_intent": payment_intent_id,
        "reason": None,
        "status": status,
    }


def charge_refunded(charge: Json, refunds: list[Json]) -> Json:
    """`charge` (a Charge object, as localstripe answers it) as the
    `charge.refunded` event carries it: `amount_refunded` the sum of its
    refunds that did not fail, `refunded` when that is the whole amount, and
    the refunds listed."""
    amount_refunded = sum(r["amount"] for r in refunds if r.get("status") not in ("failed", "canceled"))
    return {
        **charge,
        "amount_refunded": amount_refunded,
        "refunded": amount_refunded >= charge["amount"],
        "refunds": {
            "object": "list",
            "data": refunds,
            "has_more": False,
            "total_count": len(refunds),
            "url": f"/v1/charges/{charge['id']}/refunds",
        },
    }


def encode(body: Json) -> bytes:
    """An event's JSON as Stripe sends it (indented)."""
    return json.dumps(body, indent=2).encode()


async def deliver(
    client_or_url: httpx.AsyncClient | str,
    path_or_url: str,
    event: Json,
    secret: str,
    *,
    timestamp: int | None = None,
) -> httpx.Response:
    """POSTs `event` signed with `secret` as Stripe delivers a webhook:
    through `client_or_url` (an httpx client, `path_or_url` then a path or
    URL it resolves) or to the URL `client_or_url` + `path_or_url` (either
    may be the whole URL, the other "")."""
    payload = encode(event)
    headers = {
        "Content-Type": "application/json; charset=utf-8",
        "Stripe-Signature": sign(payload, secret, timestamp),
        "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
    }
    if isinstance(client_or_url, httpx.AsyncClient):
        return await client_or_url.post(path_or_url, content=payload, headers=headers)
    async with httpx.AsyncClient(timeout=10) as client:
        return await client.post(client_or_url + path_or_url, content=payload, headers=headers)
