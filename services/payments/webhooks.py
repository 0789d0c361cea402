"""Stripe's webhooks in (StripeWebhookService.ReceiveStripeEvent, served by
the gateway at POST /v1/webhooks/stripe/{organization_id} outside API-key
auth).

The Stripe-Signature header is checked against the organization's signing
secret by the stripe SDK (its scheme and its 300 s tolerance): a bad or
stale signature, or an organization without a secret, is INVALID_ARGUMENT
and changes nothing. An event already received answers `duplicate`. Then
the handler registered for its type applies it; each handler finds its
object within the organization only (another's, or an unknown one, changes
nothing), is idempotent and tolerates any delivery order, so the event is
recorded (provider_events) only once applied: a failure leaves it for
Stripe to deliver again. Types no handler knows are recorded and ignored.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, cast

import stripe
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bxb.payments.v1 import stripe_webhooks_pb2 as pb
from bxb.payments.v1 import stripe_webhooks_pb2_grpc
from services.common import tenancy
from services.common.errors import FailedPrecondition, InvalidArgument
from services.common.grpc_server import Context
from services.payments.accounts import StripeAccounts
from services.payments.models import ProviderEvent

# A handler of one event type: the organization, the event's data.object, its creation time (Unix seconds).
Handler = Callable[[str, dict[str, Any], int], Awaitable[None]]


def _refused(message: str, field: str = "signature") -> InvalidArgument:
    return InvalidArgument(message, field=field, reason="INVALID_SIGNATURE")


class StripeWebhookServicer(stripe_webhooks_pb2_grpc.StripeWebhookServiceServicer):
    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], accounts: StripeAccounts, handlers: Mapping[str, Handler]
    ):
        self.sessions = sessions
        self.accounts = accounts
        self.handlers = handlers

    async def ReceiveStripeEvent(
        self, request: pb.ReceiveStripeEventRequest, context: Context
    ) -> pb.ReceiveStripeEventResponse:
        org = tenancy.organization_id()
        if request.organization_id != org:
            raise InvalidArgument("organization_id must be the caller's organization", field="organization_id")
        event = await self._verified(org, request)
        event_id, kind = str(event.get("id", "")), str(event.get("type", ""))
        obj = event.get("data", {}).get("object")
        if not event_id or not kind or not isinstance(obj, dict):
            raise InvalidArgument("the payload is not a Stripe event", field="payload")
        async with self.sessions() as session:
            if await session.get(ProviderEvent, (org, event_id)) is not None:
                return pb.ReceiveStripeEventResponse(event_id=event_id, type=kind, duplicate=True)
        created = int(event.get("created") or 0)
        handler = self.handlers.get(kind)
        if handler is not None:
            await handler(org, obj, created)
        async with self.sessions() as session, session.begin():
            await session.execute(
                insert(ProviderEvent)
                .values(
                    organization_id=org,
                    event_id=event_id,
                    provider="stripe",
                    type=kind[:100],
                    object_id=str(obj.get("id", ""))[:200],
                    created=created,
                )
                .on_conflict_do_nothing()
            )
        return pb.ReceiveStripeEventResponse(event_id=event_id, type=kind, duplicate=False)

    async def _verified(self, org: str, request: pb.ReceiveStripeEventRequest) -> dict[str, Any]:
        """The event, once its signature holds for the organization's secret."""
        try:
            secret = await self.accounts.webhook_secret(org)
        except FailedPrecondition:
            raise _refused("the organization has no Stripe webhook signing secret") from None
        try:
            payload = request.payload.decode("utf-8")
            event = stripe.Webhook.construct_event(payload, request.signature, secret)  # its 300 s tolerance
        except UnicodeDecodeError:
            raise _refused("the payload is not UTF-8 text", field="payload") from None
        except stripe.SignatureVerificationError as error:
            raise _refused(f"the Stripe-Signature does not hold: {error.user_message or error}") from None
        except ValueError:
            raise InvalidArgument("the payload is not JSON", field="payload") from None
        return cast(dict[str, Any], event.to_dict())
