"""An organization's revenue-analytics tools (IntegrationService).

Connecting checks the key at the tool first (vendor.connect, outside any
transaction), then stores it sealed (services/common/sealing.py) with where
its data lives there; no answer and no log line holds the key, only its
hint. Each integration's status is read from its deliveries: how many were
sent, wait or failed, when the last reached the tool, its latest resync's
progress. Disconnecting deletes the row; its deliveries
and resyncs go with it (foreign keys cascade)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal

from google.protobuf import empty_pb2
from sqlalchemy import delete, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bxb.payments.v1 import integrations_pb2 as pb
from bxb.payments.v1 import integrations_pb2_grpc
from bxb.payments.v1 import webhook_endpoints_pb2 as wpb
from services.common import pagination, sealing, tenancy
from services.common.errors import NotFound
from services.common.grpc_server import Context
from services.common.ids import new_id
from services.common.timestamps import to_proto
from services.payments.models import (
    DELIVERY_FAILED,
    DELIVERY_PENDING,
    DELIVERY_SUCCEEDED,
    RESYNC_DONE,
    RESYNC_GATHERING,
    Announcement,
    Delivery,
    Integration,
    Resync,
)
from services.payments.providers import hint
from services.payments.sinks import Vendor
from services.payments.webhook_endpoints import delivery_proto

log = logging.getLogger("bxb.payments.integrations")

API_KEY_PURPOSE = "integration_api_key"


@dataclass(frozen=True)
class ResyncProgress:
    total: int
    done: int
    failed: int

    @property
    def percent(self) -> str:
        """Done and failed of the total, in percent with one decimal."""
        if self.total == 0:
            return "0.0"
        share = Decimal(100 * (self.done + self.failed)) / Decimal(self.total)
        return str(share.quantize(Decimal("0.1"), rounding=ROUND_HALF_UP))


async def progress(session: AsyncSession, resync: Resync) -> ResyncProgress:
    """The resync's deliveries sent and failed for good, of its total (what
    was queued so far while still gathering)."""
    counted = await session.execute(
        select(Delivery.status, func.count())
        .where(Delivery.integration_id == resync.integration_id, Delivery.resync_id == resync.id)
        .group_by(Delivery.status)
    )
    counts: dict[str, int] = {status: count for status, count in counted.all()}
    total = resync.total_count if resync.state != RESYNC_GATHERING else sum(counts.values())
    return ResyncProgress(total, counts.get(DELIVERY_SUCCEEDED, 0), counts.get(DELIVERY_FAILED, 0))


async def resync_proto(session: AsyncSession, resync: Resync) -> pb.Resync:
    done = await progress(session, resync)
    return pb.Resync(
        id=resync.id,
        state=pb.ResyncState.Value(resync.state),
        total_count=done.total,
        done_count=done.done,
        failed_count=done.failed,
        progress_percent="100.0" if resync.state == RESYNC_DONE else done.percent,
        create_time=to_proto(resync.create_time),
        finish_time=to_proto(resync.finish_time),
    )


async def integration_proto(session: AsyncSession, integration: Integration) -> pb.Integration:
    """The integration with its status, read from its deliveries."""
    counted = await session.execute(
        select(Delivery.status, func.count(), func.max(Delivery.finish_time))
        .where(Delivery.integration_id == integration.id)
        .group_by(Delivery.status)
    )
    counts: dict[str, int] = {}
    last_sync: datetime | None = integration.last_sync_time
    for status, count, finished in counted.all():
        counts[status] = count
        if status == DELIVERY_SUCCEEDED:
            last_sync = max(filter(None, (last_sync, finished)), default=None)
    latest = await session.scalar(
        select(Resync)
        .where(Resync.integration_id == integration.id)
        .order_by(Resync.create_time.desc(), Resync.id.desc())
        .limit(1)
    )
    return pb.Integration(
        provider=integration.provider,
        api_key_hint=integration.api_key_hint,
        data_source_id=integration.data_source_id,
        create_time=to_proto(integration.create_time),
        last_sync_time=to_proto(last_sync),
        synced_count=counts.get(DELIVERY_SUCCEEDED, 0),
        pending_count=counts.get(DELIVERY_PENDING, 0),
        failed_count=counts.get(DELIVERY_FAILED, 0),
        last_error=integration.last_error,
        last_error_time=to_proto(integration.last_error_time),
        resync=await resync_proto(session, latest) if latest is not None else None,
    )


class IntegrationServicer(integrations_pb2_grpc.IntegrationServiceServicer):
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        vendors: Mapping[str, Vendor],
        resync_asked: Callable[[], None] = lambda: None,
    ):
        self.sessions = sessions
        self.vendors = vendors  # by provider name: services/payments/vendors.py
        self.resync_asked = resync_asked  # wakes the resync worker (history.py)

    async def _row(self, session: AsyncSession, provider: str) -> Integration:
        org = tenancy.organization_id()
        found = await session.scalar(
            select(Integration).where(Integration.organization_id == org, Integration.provider == provider)
        )
        if found is None:
            raise NotFound(f"no {provider} integration is connected", field="provider")
        return found

    async def ConnectIntegration(self, request: pb.ConnectIntegrationRequest, context: Context) -> pb.Integration:
        org = tenancy.organization_id()
        vendor = self.vendors[request.provider]  # the proto names only the providers vendors() makes
        sealing.require_secret_key()
        # At the tool first, no transaction open: a refused key stores nothing.
        data_source_id = await vendor.connect(request.api_key, request.data_source_id)
        shown = hint(request.api_key)
        values = {
            "api_key_sealed": sealing.seal(request.api_key, org, API_KEY_PURPOSE),
            "api_key_hint": shown,
            "data_source_id": data_source_id,
            "last_error": "",
            "last_error_time": None,
            "update_time": func.clock_timestamp(),
        }
        async with self.sessions() as session, session.begin():
            upsert = insert(Integration).values(
                id=new_id("int"), organization_id=org, provider=request.provider, **values
            )
            await session.execute(
                upsert.on_conflict_do_update(index_elements=["organization_id", "provider"], set_=values)
            )
            integration = await self._row(session, request.provider)
            answer = await integration_proto(session, integration)
        log.info(
            "organization %s connected %s (data source %s) with key %s", org, request.provider, data_source_id, shown
        )
        return answer

    async def GetIntegration(self, request: pb.GetIntegrationRequest, context: Context) -> pb.Integration:
        async with self.sessions() as session:
            return await integration_proto(session, await self._row(session, request.provider))

    async def ListIntegrations(
        self, request: pb.ListIntegrationsRequest, context: Context
    ) -> pb.ListIntegrationsResponse:
        org = tenancy.organization_id()
        async with self.sessions() as session:
            rows = await session.scalars(
                select(Integration).where(Integration.organization_id == org).order_by(Integration.provider)
            )
            return pb.ListIntegrationsResponse(integrations=[await integration_proto(session, row) for row in rows])

    async def DisconnectIntegration(
        self, request: pb.DisconnectIntegrationRequest, context: Context
    ) -> empty_pb2.Empty:
        org = tenancy.organization_id()
        async with self.sessions() as session, session.begin():
            removed = await session.execute(
                delete(Integration)
                .where(Integration.organization_id == org, Integration.provider == request.provider)
                .returning(Integration.id)
            )
            if removed.first() is None:
                raise NotFound(f"no {request.provider} integration is connected", field="provider")
        log.info("organization %s disconnected %s", org, request.provider)
        return empty_pb2.Empty()

    async def ResyncIntegration(self, request: pb.ResyncIntegrationRequest, context: Context) -> pb.Integration:
        """Asks for a resync; while one is still under way, that one is answered."""
        async with self.sessions() as session, session.begin():
            integration = await self._row(session, request.provider)
            # One resync at a time per integration: the row lock orders two asking at once.
            await session.execute(select(Integration.id).where(Integration.id == integration.id).with_for_update())
            running = await session.scalar(
                select(Resync.id).where(Resync.integration_id == integration.id, Resync.state != RESYNC_DONE)
            )
            if running is None:
                session.add(
                    Resync(
                        id=new_id("rsy"),
                        organization_id=integration.organization_id,
                        integration_id=integration.id,
                        state=RESYNC_GATHERING,
                    )
                )
                await session.flush()
            answer = await integration_proto(session, integration)
        self.resync_asked()
        return answer

    async def ListIntegrationDeliveries(
        self, request: pb.ListIntegrationDeliveriesRequest, context: Context
    ) -> pb.ListIntegrationDeliveriesResponse:
        asked = pagination.page(request, f"integration_deliveries:{request.provider}:{request.status}")
        async with self.sessions() as session:
            integration = await self._row(session, request.provider)
            query = (
                select(Delivery, Announcement)
                .join(Announcement, Announcement.id == Delivery.announcement_id)
                .where(Delivery.integration_id == integration.id)
                .order_by(Delivery.create_time.desc(), Delivery.sequence.desc())
                .offset(asked.offset)
                .limit(asked.size + 1)
            )
            if request.status:
                query = query.where(Delivery.status == wpb.DeliveryStatus.Name(request.status))
            rows = (await session.execute(query)).all()
        items, token = pagination.answer(asked, [delivery_proto(d, a) for d, a in rows])
        return pb.ListIntegrationDeliveriesResponse(deliveries=items, next_page_token=token)
