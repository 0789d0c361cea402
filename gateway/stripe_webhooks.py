"""Stripe's webhooks in: POST /v1/webhooks/stripe/{organization_id}.

Served outside API-key auth (Stripe has no bxb key): the body, byte for
byte, and its Stripe-Signature header go to the payments service, which
checks the signature against that organization's signing secret before
anything changes (services/payments/webhooks.py). A missing header is a 400
naming it; the body is bounded like any other (BXB_MAX_BODY_BYTES). Stripe
retries whatever is not answered 2xx.
"""

from __future__ import annotations

import re

from starlette.responses import Response

from bxb.payments.v1 import stripe_webhooks_pb2 as pb
from gateway.call import json, read_body
from gateway.errors import invalid
from gateway.transcoder import Exchange, Handler, Spelling

SIGNATURE = "stripe-signature"
# What an organization id looks like (services/common/ids.new_id, and org_default).
ORGANIZATION = re.compile(r"[A-Za-z0-9_-]{1,64}")


def receive(spelling: Spelling) -> Handler:
    async def handle(exchange: Exchange) -> Response:
        request = exchange.http
        if not ORGANIZATION.fullmatch(exchange.org):
            raise invalid("organization_id is not an organization's id", "organization_id", "INVALID_VALUE")
        signature = request.headers.get(SIGNATURE)
        if not signature:
            raise invalid("the Stripe-Signature header is required", "Stripe-Signature", "MISSING_FIELD")
        payload = await read_body(request, request.app.state.settings.max_body_bytes)
        message = pb.ReceiveStripeEventRequest(
            organization_id=exchange.org, payload=payload, signature=signature[:2000]
        )
        reply = await exchange.call(message)
        return json({"received": True, "event_id": reply.event_id, "type": reply.type, "duplicate": reply.duplicate})

    return handle
