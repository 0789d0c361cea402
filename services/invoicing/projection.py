"""Keeps invoicing's copy of subscriptions current from catalog events.

Applying an event twice leaves the same row (insert, or no-op on conflict),
so JetStream redeliveries are harmless.
"""

from __future__ import annotations

from google.protobuf import json_format
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import async_sessionmaker

from bxb.catalog.v1 import events_pb2, subscriptions_pb2
from services.common.timestamps import from_proto
from services.invoicing.models import Subscription

SUBSCRIPTION_CREATED = "bxb.catalog.v1.subscription_created"


class SubscriptionProjection:
    def __init__(self, sessions: async_sessionmaker, on_change=None):
        self.sessions = sessions
        self.on_change = on_change

    async def handle(self, subject: str, payload: bytes) -> None:
        if subject != SUBSCRIPTION_CREATED:
            return  # a newer catalog may announce facts this version ignores
        event = events_pb2.SubscriptionCreated.FromString(payload)
        sub = event.subscription
        values = {
            "id": sub.id,
            "organization_id": event.organization_id,
            "customer_id": sub.customer_id,
            "plan": json_format.MessageToDict(event.plan, preserving_proto_field_name=True),
            "billing_time": subscriptions_pb2.BillingTime.Name(sub.billing_time),
            "start_time": from_proto(sub.start_time),
            "create_time": from_proto(sub.create_time),
        }
        async with self.sessions() as session, session.begin():
            await session.execute(insert(Subscription).values(**values).on_conflict_do_nothing())
        if self.on_change is not None:
            self.on_change()
