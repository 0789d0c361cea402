"""WebhookEndpointService: an organization's webhook endpoints (their URLs
checked against SSRF, their event types against the catalog, their signing
secrets sealed and shown only when made), what was delivered to each, every
attempt, replays and test events. Everything is the calling organization's:
another's endpoint or delivery is NOT_FOUND."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from google.protobuf import empty_pb2
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bxb.payments.v1 import webhook_endpoints_pb2 as pb
from bxb.payments.v1 import webhook_endpoints_pb2_grpc
from services.common import pagination, sealing, tenancy
from services.common.errors import FailedPrecondition, InvalidArgument, NotFound
from services.common.grpc_server import Context
from services.common.ids import new_id
from services.common.timestamps import to_proto, utcnow
from services.payments import event_catalog
from services.payments.announcing import Announcer, Draft
from services.payments.models import (
    DELIVERY_CANCELED,
    DELIVERY_PENDING,
    Announcement,
    Delivery,
    DeliveryAttempt,
    WebhookEndpoint,
)
from services.payments.webhook_signing import new_secret
from services.payments.webhook_urls import checked_url

SECRET_PURPOSE = "webhook_endpoint_secret"
DEFAULT_OVERLAP_SECONDS = 86400
UPDATABLE = ("url", "event_types", "enabled", "description")


def endpoint_proto(endpoint: WebhookEndpoint, secret: str = "") -> pb.WebhookEndpoint:
    """The endpoint as the API shows it; `secret` only in creation's and rotation's answers."""
    return pb.WebhookEndpoint(
        id=endpoint.id,
        url=endpoint.url,
        event_types=endpoint.event_types,
        enabled=endpoint.enabled,
        description=endpoint.description,
        secret=secret,
        disabled_reason=endpoint.disabled_reason,
        failing_since_time=to_proto(endpoint.failing_since),
        previous_secret_expire_time=to_proto(endpoint.previous_secret_expire_time),
        create_time=to_proto(endpoint.create_time),
        update_time=to_proto(endpoint.update_time),
    )


def delivery_proto(
    delivery: Delivery, announcement: Announcement, attempts: list[DeliveryAttempt] | None = None
) -> pb.Delivery:
    """A delivery; with its attempts and payload when `attempts` is given (a single delivery's read)."""
    return pb.Delivery(
        id=delivery.id,
        event_id=announcement.id,
        event_type=announcement.type,
        status=pb.DeliveryStatus.Value(delivery.status),
        attempt_count=delivery.attempt_count,
        next_attempt_time=to_proto(delivery.next_attempt_time if delivery.status == DELIVERY_PENDING else None),
        last_status_code=delivery.last_status_code,
        attempts=[
            pb.DeliveryAttempt(
                attempt_time=to_proto(attempt.attempt_time),
                status_code=attempt.status_code,
                latency_ms=attempt.latency_ms,
                response_snippet=attempt.response_snippet,
                error=attempt.error,
                succeeded=attempt.succeeded,
            )
            for attempt in attempts or ()
        ],
        replay_of=delivery.replay_of,
        create_time=to_proto(delivery.create_time),
        payload=announcement.payload if attempts is not None else "",
    )


def _event_types(types: list[str]) -> list[str]:
    unknown = event_catalog.unknown(types)
    if unknown:
        raise InvalidArgument(
            f"unknown event types {', '.join(map(repr, unknown))}: see GET /v1/webhook_event_types",
            field="webhook_endpoint.event_types",
        )
    return types


async def cancel_pending(session: AsyncSession, endpoint_id: str, now: datetime) -> None:
    """What waits for an endpoint being disabled (by its organization, or by
    the sender after days of failures) is not sent."""
    await session.execute(
        update(Delivery)
        .where(Delivery.endpoint_id == endpoint_id, Delivery.status == DELIVERY_PENDING)
        .values(status=DELIVERY_CANCELED, finish_time=now, next_attempt_time=None, lease_until=None)
        .execution_options(synchronize_session=False)
    )


def _enabled(endpoint: WebhookEndpoint) -> WebhookEndpoint:
    if not endpoint.enabled:
        raise FailedPrecondition(
            f"webhook endpoint {endpoint.id!r} is disabled: enable it first", reason="ENDPOINT_DISABLED", field="id"
        )
    return endpoint


class WebhookEndpointServicer(webhook_endpoints_pb2_grpc.WebhookEndpointServiceServicer):
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        announcer: Announcer,
        queued: Callable[[], None],
        allow_private: bool,
    ):
        self.sessions = sessions
        self.announcer = announcer  # queues test events
        self.queued = queued  # told when a delivery was queued (the sender's wake)
        self.allow_private = allow_private  # whether URLs may name internal addresses

    async def CreateWebhookEndpoint(
        self, request: pb.CreateWebhookEndpointRequest, context: Context
    ) -> pb.WebhookEndpoint:
        org, spec = tenancy.organization_id(), request.webhook_endpoint
        url = await checked_url(spec.url, self.allow_private)
        event_types = _event_types(list(spec.event_types))
        secret, now = new_secret(), utcnow()
        endpoint = WebhookEndpoint(
            id=new_id("we"),
            organization_id=org,
            url=url,
            description=spec.description,
            event_types=event_types,
            enabled=spec.enabled if spec.HasField("enabled") else True,
            secret_sealed=sealing.seal(secret, org, SECRET_PURPOSE),
            previous_secret_sealed="",
            disabled_reason="",
            create_time=now,
            update_time=now,
        )
        async with self.sessions() as session, session.begin():
            session.add(endpoint)
        return endpoint_proto(endpoint, secret)

    async def GetWebhookEndpoint(self, request: pb.GetWebhookEndpointRequest, context: Context) -> pb.WebhookEndpoint:
        async with self.sessions() as session:
            return endpoint_proto(await self._find(session, request.id))

    async def ListWebhookEndpoints(
        self, request: pb.ListWebhookEndpointsRequest, context: Context
    ) -> pb.ListWebhookEndpointsResponse:
        org = tenancy.organization_id()
        page = pagination.page(request, "ListWebhookEndpoints")
        query = (
            select(WebhookEndpoint)
            .where(WebhookEndpoint.organization_id == org)
            .order_by(WebhookEndpoint.create_time, WebhookEndpoint.id)
            .offset(page.offset)
            .limit(page.size + 1)
        )
        async with self.sessions() as session:
            rows = (await session.execute(query)).scalars().all()
        endpoints, token = pagination.answer(page, [endpoint_proto(e) for e in rows])
        return pb.ListWebhookEndpointsResponse(webhook_endpoints=endpoints, next_page_token=token)

    async def UpdateWebhookEndpoint(
        self, request: pb.UpdateWebhookEndpointRequest, context: Context
    ) -> pb.WebhookEndpoint:
        spec, paths = request.webhook_endpoint, list(dict.fromkeys(request.update_mask.paths))
        if not paths or any(path not in UPDATABLE for path in paths):
            raise InvalidArgument(f"update_mask must name fields among: {', '.join(UPDATABLE)}", field="update_mask")
        changes: dict[str, object] = {}
        if "url" in paths:
            changes["url"] = await checked_url(spec.url, self.allow_private)
        if "event_types" in paths:
            changes["event_types"] = _event_types(list(spec.event_types))
        if "description" in paths:
            changes["description"] = spec.description
        async with self.sessions() as session, session.begin():
            endpoint = await self._find(session, spec.id, field="webhook_endpoint.id", lock=True)
            if "enabled" in paths and spec.enabled != endpoint.enabled:
                changes["enabled"] = spec.enabled
                if spec.enabled:  # enabled again: a fresh start
                    changes.update(disabled_reason="", failing_since=None)
                else:
                    await cancel_pending(session, endpoint.id, utcnow())
            for name, value in changes.items():
                setattr(endpoint, name, value)
            endpoint.update_time = utcnow()
        return endpoint_proto(endpoint)

    async def DeleteWebhookEndpoint(
        self, request: pb.DeleteWebhookEndpointRequest, context: Context
    ) -> empty_pb2.Empty:
        async with self.sessions() as session, session.begin():
            # Its deliveries and their attempts go with it (ON DELETE CASCADE).
            await session.delete(await self._find(session, request.id, lock=True))
        return empty_pb2.Empty()

    async def RotateWebhookEndpointSecret(
        self, request: pb.RotateWebhookEndpointSecretRequest, context: Context
    ) -> pb.WebhookEndpoint:
        overlap = request.overlap_seconds if request.HasField("overlap_seconds") else DEFAULT_OVERLAP_SECONDS
        secret, now = new_secret(), utcnow()
        async with self.sessions() as session, session.begin():
            endpoint = await self._find(session, request.id, lock=True)
            if overlap:
                endpoint.previous_secret_sealed = endpoint.secret_sealed
                endpoint.previous_secret_expire_time = now + timedelta(seconds=overlap)
            else:
                endpoint.previous_secret_sealed, endpoint.previous_secret_expire_time = "", None
            endpoint.secret_sealed = sealing.seal(secret, endpoint.organization_id, SECRET_PURPOSE)
            endpoint.update_time = now
        return endpoint_proto(endpoint, secret)

    async def SendTestWebhookEvent(self, request: pb.SendTestWebhookEventRequest, context: Context) -> pb.Delivery:
        now = utcnow()
        async with self.sessions() as session, session.begin():
            endpoint = _enabled(await self._find(session, request.id))
            draft = Draft(
                organization_id=endpoint.organization_id,
                type="webhook.test",
                customer_id="",
                source_key=f"webhook.test:{new_id('tst')}",
                occur_time=now,
                data={"webhook_endpoint_id": endpoint.id},
                endpoint_id=endpoint.id,
            )
            [delivery_id] = await self.announcer.announce(session, draft, now)
            delivery, announcement = await self._delivery(session, endpoint.id, delivery_id)
            result = delivery_proto(delivery, announcement)
        self.queued()
        return result

    async def ListWebhookDeliveries(
        self, request: pb.ListWebhookDeliveriesRequest, context: Context
    ) -> pb.ListWebhookDeliveriesResponse:
        page = pagination.page(request, "ListWebhookDeliveries")
        query = (
            select(Delivery, Announcement)
            .join(Announcement, Announcement.id == Delivery.announcement_id)
            .where(Delivery.endpoint_id == request.endpoint_id)
            .order_by(Delivery.create_time.desc(), Delivery.sequence.desc(), Delivery.id.desc())
            .offset(page.offset)
            .limit(page.size + 1)
        )
        if request.status:
            query = query.where(Delivery.status == pb.DeliveryStatus.Name(request.status))
        if request.event_type:
            query = query.where(Announcement.type == request.event_type)
        async with self.sessions() as session:
            await self._find(session, request.endpoint_id, field="endpoint_id")
            rows = (await session.execute(query)).all()
        deliveries, token = pagination.answer(page, [delivery_proto(d, a) for d, a in rows])
        return pb.ListWebhookDeliveriesResponse(deliveries=deliveries, next_page_token=token)

    async def GetWebhookDelivery(self, request: pb.GetWebhookDeliveryRequest, context: Context) -> pb.Delivery:
        async with self.sessions() as session:
            await self._find(session, request.endpoint_id, field="endpoint_id")
            delivery, announcement = await self._delivery(session, request.endpoint_id, request.id)
            attempts = await session.scalars(
                select(DeliveryAttempt).where(DeliveryAttempt.delivery_id == delivery.id).order_by(DeliveryAttempt.id)
            )
            return delivery_proto(delivery, announcement, list(attempts))

    async def ReplayWebhookDelivery(self, request: pb.ReplayWebhookDeliveryRequest, context: Context) -> pb.Delivery:
        async with self.sessions() as session, session.begin():
            endpoint = _enabled(await self._find(session, request.endpoint_id, field="endpoint_id"))
            original, announcement = await self._delivery(session, endpoint.id, request.id)
            replay = Delivery(
                id=new_id("dlv"),
                organization_id=original.organization_id,
                announcement_id=original.announcement_id,
                endpoint_id=endpoint.id,
                integration_id=None,
                sink_id=endpoint.id,
                customer_id=original.customer_id,
                sequence=original.sequence,
                status=DELIVERY_PENDING,
                attempt_count=0,
                next_attempt_time=utcnow(),
                last_status_code=0,
                last_error="",
                replay_of=original.id,
                resync_id="",
            )
            session.add(replay)
            await session.flush()
            await session.refresh(replay)  # its create_time, the database's
            result = delivery_proto(replay, announcement)
        self.queued()
        return result

    async def ListWebhookEventTypes(
        self, request: pb.ListWebhookEventTypesRequest, context: Context
    ) -> pb.ListWebhookEventTypesResponse:
        return pb.ListWebhookEventTypesResponse(
            event_types=[
                pb.WebhookEventType(name=name, description=text) for name, text in event_catalog.CATALOG.items()
            ]
        )

    @staticmethod
    async def _find(session: AsyncSession, endpoint_id: str, field: str = "id", lock: bool = False) -> WebhookEndpoint:
        query = select(WebhookEndpoint).where(
            WebhookEndpoint.organization_id == tenancy.organization_id(), WebhookEndpoint.id == endpoint_id
        )
        endpoint = (await session.execute(query.with_for_update() if lock else query)).scalar_one_or_none()
        if endpoint is None:
            raise NotFound(f"webhook endpoint {endpoint_id!r} not found", field=field)
        return endpoint

    @staticmethod
    async def _delivery(session: AsyncSession, endpoint_id: str, delivery_id: str) -> tuple[Delivery, Announcement]:
        """A delivery of an endpoint already found to be the caller's."""
        found = await session.execute(
            select(Delivery, Announcement)
            .join(Announcement, Announcement.id == Delivery.announcement_id)
            .where(Delivery.id == delivery_id, Delivery.endpoint_id == endpoint_id)
        )
        row = found.one_or_none()
        if row is None:
            raise NotFound(f"delivery {delivery_id!r} not found", field="id")
        return row
