"""Keeps invoicing's copy of subscriptions current.

Catalog events are the source: applying one twice leaves the same row
(insert, or no-op on conflict), so JetStream redeliveries are harmless.
`catch_up` reads one customer's subscriptions from the catalog and applies
those this copy lacks, so reading a customer's invoices right after creating
a subscription sees it even while its event is still in flight.
"""

from __future__ import annotations

import logging

import grpc
from google.protobuf import json_format
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import async_sessionmaker

from bxb.catalog.v1 import events_pb2, plans_pb2, plans_pb2_grpc, subscriptions_pb2, subscriptions_pb2_grpc
from services.common import tenancy
from services.common.timestamps import from_proto
from services.invoicing.models import Subscription

log = logging.getLogger("bxb.projection")

SUBSCRIPTION_CREATED = "bxb.catalog.v1.subscription_created"


class SubscriptionProjection:
    def __init__(
        self,
        sessions: async_sessionmaker,
        catalog: grpc.aio.Channel | None = None,
        page_size: int = 500,
        timeout: float = 10.0,
    ):
        self.sessions = sessions
        self.catalog = catalog
        self.page_size = page_size
        self.timeout = timeout

    async def apply(self, org: str, sub: subscriptions_pb2.Subscription, plan: plans_pb2.Plan) -> None:
        values = {
            "id": sub.id,
            "organization_id": org,
            "customer_id": sub.customer_id,
            "plan": json_format.MessageToDict(plan, preserving_proto_field_name=True),
            "billing_time": subscriptions_pb2.BillingTime.Name(sub.billing_time),
            "start_time": from_proto(sub.start_time),
            "create_time": from_proto(sub.create_time),
        }
        async with self.sessions() as session, session.begin():
            await session.execute(insert(Subscription).values(**values).on_conflict_do_nothing())

    async def handle(self, subject: str, payload: bytes) -> None:
        if subject != SUBSCRIPTION_CREATED:
            return  # a newer catalog may announce facts this version ignores
        event = events_pb2.SubscriptionCreated.FromString(payload)
        await self.apply(event.organization_id, event.subscription, event.plan)

    async def catch_up(self, org: str, customer_id: str) -> None:
        """Best effort: when the catalog cannot be reached, events still arrive later."""
        if self.catalog is None:
            return
        try:
            await self._catch_up(org, customer_id)
        except grpc.aio.AioRpcError as error:
            log.warning("catalog unreachable while catching up %s: %s", customer_id, error.code())

    async def _catch_up(self, org: str, customer_id: str) -> None:
        async with self.sessions() as session:
            known = set(
                (
                    await session.execute(
                        select(Subscription.id).where(
                            Subscription.organization_id == org, Subscription.customer_id == customer_id
                        )
                    )
                ).scalars()
            )
        subscriptions = subscriptions_pb2_grpc.SubscriptionServiceStub(self.catalog)
        plans = plans_pb2_grpc.PlanServiceStub(self.catalog)
        meta = tenancy.metadata(org)
        token = ""
        while True:
            page = await subscriptions.ListSubscriptions(
                subscriptions_pb2.ListSubscriptionsRequest(
                    customer_id=customer_id, page_size=self.page_size, page_token=token
                ),
                metadata=meta,
                timeout=self.timeout,
                wait_for_ready=True,  # ride out a reconnect instead of failing fast
            )
            for sub in page.subscriptions:
                if sub.id not in known:
                    plan = await plans.GetPlan(
                        plans_pb2.GetPlanRequest(code=sub.plan_code, version=sub.plan_version),
                        metadata=meta,
                        timeout=self.timeout,
                        wait_for_ready=True,
                    )
                    await self.apply(org, sub, plan)
            token = page.next_page_token
            if not token:
                return
