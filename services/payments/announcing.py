"""Announcing a public event: stored once (its body rendered once), then one
delivery queued per sink that wants it, all in the caller's transaction.

A domain event redelivered by NATS announces nothing twice: each
announcement carries the key of what it was made from (`source_key`), unique
per organization. Endpoints get the types they subscribed to (all when they
named none), integrations the types their tool syncs; a test event goes only
to its endpoint and a resync's history only to its integration."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.common.ids import new_id
from services.common.timestamps import format_rfc3339
from services.payments.models import DELIVERY_PENDING, Announcement, Delivery, Integration, WebhookEndpoint


@dataclass(frozen=True)
class Draft:
    """A public event about to be announced."""

    organization_id: str
    type: str  # an event type of services/payments/event_catalog.py
    customer_id: str  # "" when it concerns no customer
    source_key: str  # what it is made from: the same fact always gives the same key
    occur_time: datetime
    data: dict[str, Any] = field(default_factory=dict)
    endpoint_id: str = ""  # only this endpoint (a test event)
    integration_id: str = ""  # only this integration (a resync's history)
    resync_id: str = ""


def body(draft: Draft) -> str:
    """The JSON sent: {"type", "timestamp", "data"}."""
    document = {"type": draft.type, "timestamp": format_rfc3339(draft.occur_time), "data": draft.data}
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False)


class Announcer:
    def __init__(self, accepts: Mapping[str, frozenset[str]]):
        self.accepts = accepts  # per analytics provider, the event types its tool syncs

    async def announce(self, session: AsyncSession, draft: Draft, now: datetime) -> list[str]:
        """Stores the announcement and queues its deliveries; the ids of the
        deliveries queued (none when it was announced before)."""
        stored = await session.execute(
            insert(Announcement)
            .values(
                id=new_id("evt"),
                organization_id=draft.organization_id,
                type=draft.type,
                customer_id=draft.customer_id,
                source_key=draft.source_key,
                occur_time=draft.occur_time,
                payload=body(draft),
                resync_id=draft.resync_id,
            )
            .on_conflict_do_nothing(index_elements=["organization_id", "source_key"])
            .returning(Announcement.id, Announcement.sequence)
        )
        row = stored.one_or_none()
        if row is None:
            return []  # announced before
        announcement_id, sequence = row
        sinks = await self._sinks(session, draft)
        deliveries: list[dict[str, Any]] = [
            {
                "id": new_id("dlv"),
                "organization_id": draft.organization_id,
                "announcement_id": announcement_id,
                "endpoint_id": endpoint_id,
                "integration_id": integration_id,
                "sink_id": endpoint_id or integration_id,
                "customer_id": draft.customer_id,
                "sequence": sequence,
                "status": DELIVERY_PENDING,
                "next_attempt_time": now,
                "resync_id": draft.resync_id,
            }
            for endpoint_id, integration_id in sinks
        ]
        if deliveries:
            await session.execute(insert(Delivery), deliveries)
        return [d["id"] for d in deliveries]

    async def _sinks(self, session: AsyncSession, draft: Draft) -> list[tuple[str | None, str | None]]:
        org = draft.organization_id
        if draft.endpoint_id:
            return [(draft.endpoint_id, None)]
        if draft.integration_id:
            return [(None, draft.integration_id)]
        endpoints = await session.scalars(
            select(WebhookEndpoint.id)
            .where(
                WebhookEndpoint.organization_id == org,
                WebhookEndpoint.enabled.is_(True),
                or_(
                    func.cardinality(WebhookEndpoint.event_types) == 0,
                    WebhookEndpoint.event_types.contains([draft.type]),
                ),
            )
            .order_by(WebhookEndpoint.create_time, WebhookEndpoint.id)
        )
        sinks: list[tuple[str | None, str | None]] = [(endpoint, None) for endpoint in endpoints]
        providers = [name for name, types in self.accepts.items() if draft.type in types]
        if providers:
            integrations = await session.scalars(
                select(Integration.id)
                .where(Integration.organization_id == org, Integration.provider.in_(providers))
                .order_by(Integration.provider)
            )
            sinks += [(None, integration) for integration in integrations]
        return sinks
