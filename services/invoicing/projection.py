"""Keeps invoicing's copy of subscriptions and applied coupons current.

Catalog events are the source: applying one twice leaves the same row (a
known subscription keeps its row; only an earlier end can change it), so
JetStream redeliveries are harmless.
A subscription's end (`terminate_time`, from SubscriptionUpdated) only ever
moves earlier: a termination can cut a scheduled end short, never extend it,
so the earliest end wins whatever order the events arrive in. An update for a
subscription this copy lacks reads its plan from the catalog and projects it.
`catch_up` reads one customer's subscriptions from the catalog, applies those
this copy lacks and the ends of those it has, so an invoice on request right
after a change sees it even while its event is still in flight; it reads the
customer's applied coupons too (see coupons.py for how they are kept), and
issues the one-off invoices of applied add-ons (one_offs.py). Reads never
write: they wait for an event still on its way (`arrived`) instead;
`catch_up_clock` does the same for the subscriptions of a test clock's
customers, before a clock's billing run. Test clocks' times are kept too
(clocks.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Iterable
from datetime import datetime

import grpc
from google.protobuf import json_format
from sqlalchemy import ColumnElement, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bxb.catalog.v1 import add_ons_pb2, coupons_pb2, events_pb2, plans_pb2, subscriptions_pb2
from services.common import peers
from services.common.errors import Unavailable
from services.common.timestamps import from_proto, from_proto_or_none
from services.invoicing import clocks, coupons
from services.invoicing.models import Subscription
from services.invoicing.one_offs import OneOffInvoices

log = logging.getLogger("bxb.projection")

ARRIVAL_POLL = 0.02  # seconds between two looks for a subscription on its way here
ARRIVALS_AWAITED = 50  # the most subscriptions of a customer a read waits for

SUBSCRIPTION_CREATED = "bxb.catalog.v1.subscription_created"
SUBSCRIPTION_UPDATED = "bxb.catalog.v1.subscription_updated"
APPLIED_COUPON_UPDATED = "bxb.catalog.v1.applied_coupon_updated"
ADD_ON_APPLIED = "bxb.catalog.v1.add_on_applied"
TEST_CLOCK_ADVANCED = "bxb.catalog.v1.test_clock_advanced"


class SubscriptionProjection:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        catalog: peers.Catalog | None = None,
        one_offs: OneOffInvoices | None = None,
        page_size: int = 500,
        arrival: float = 2.0,
    ):
        self.sessions = sessions
        self.catalog = catalog  # read for what this copy lacks; without it, events are all there is
        # Issues the one-off invoice of an applied add-on; add-ons are ignored without it.
        self.one_offs = one_offs
        self.page_size = page_size
        self.arrival = arrival  # seconds a read waits for a subscription the catalog has and this copy not yet

    async def apply(self, org: str, sub: subscriptions_pb2.Subscription, plan: plans_pb2.Plan) -> None:
        values = {
            "id": sub.id,
            "organization_id": org,
            "customer_id": sub.customer_id,
            "plan": json_format.MessageToDict(plan, preserving_proto_field_name=True),
            "billing_time": subscriptions_pb2.BillingTime.Name(sub.billing_time),
            "start_time": from_proto(sub.start_time),
            "create_time": from_proto(sub.create_time),
            "terminate_time": from_proto_or_none(sub, "terminate_time"),
            "trial_end_time": from_proto_or_none(sub, "trial_end_time"),
            "test_clock_id": sub.test_clock_id or None,
            "invoice_grace_period_days": sub.invoice_grace_period_days,
        }
        statement = insert(Subscription).values(**values)
        # LEAST ignores NULL: a known end stays unless this one is earlier.
        statement = statement.on_conflict_do_update(
            index_elements=[Subscription.id],
            set_={"terminate_time": func.least(Subscription.terminate_time, statement.excluded.terminate_time)},
        )
        async with self.sessions() as session, session.begin():
            await session.execute(statement)

    async def terminate(self, subscription_id: str, at: datetime) -> bool:
        """Sets a known subscription's end (the earliest wins); False when this copy lacks it."""
        async with self.sessions() as session, session.begin():
            found = await session.execute(
                update(Subscription)
                .where(Subscription.id == subscription_id)
                .values(terminate_time=func.least(Subscription.terminate_time, at))
                .returning(Subscription.id)
            )
            return found.scalar_one_or_none() is not None

    async def handle(self, subject: str, payload: bytes) -> None:
        if subject == SUBSCRIPTION_CREATED:
            event = events_pb2.SubscriptionCreated.FromString(payload)
            await self.apply(event.organization_id, event.subscription, event.plan)
        elif subject == SUBSCRIPTION_UPDATED:
            updated = events_pb2.SubscriptionUpdated.FromString(payload)
            await self.updated(updated.organization_id, updated.subscription)
        elif subject == APPLIED_COUPON_UPDATED:
            coupon_event = events_pb2.AppliedCouponUpdated.FromString(payload)
            await self.applied_coupon(coupon_event.organization_id, coupon_event.applied_coupon)
        elif subject == TEST_CLOCK_ADVANCED:
            advanced = events_pb2.TestClockAdvanced.FromString(payload)
            clock = advanced.test_clock
            async with self.sessions() as session, session.begin():
                await clocks.advance(session, advanced.organization_id, clock.id, from_proto(clock.frozen_time))
        elif subject == ADD_ON_APPLIED and self.one_offs is not None:
            applied = events_pb2.AddOnApplied.FromString(payload)
            await self.one_offs.issue(applied.organization_id, applied.applied_add_on)
        # any other subject: a newer catalog may announce facts this version ignores

    async def applied_coupon(self, org: str, applied: coupons_pb2.AppliedCoupon) -> None:
        async with self.sessions() as session, session.begin():
            await coupons.project(session, org, applied)

    async def updated(self, org: str, sub: subscriptions_pb2.Subscription) -> None:
        end = from_proto_or_none(sub, "terminate_time")
        if end is None or await self.terminate(sub.id, end):
            return
        # Its creation has not reached this copy yet: read its plan and project it whole.
        if self.catalog is None:
            raise LookupError(f"subscription {sub.id} is unknown and there is no catalog to read it from")
        plan = await self._plan(org, sub)
        await self.apply(org, sub, plan)

    async def _plan(self, org: str, sub: subscriptions_pb2.Subscription) -> plans_pb2.Plan:
        assert self.catalog is not None  # read only with a catalog (`updated`, `_subscriptions`)
        return await self.catalog.get_plan(
            org,
            plans_pb2.GetPlanRequest(code=sub.plan_code, version=sub.plan_version),
            wait_for_ready=True,  # ride out a reconnect instead of failing fast
        )

    async def arrived(self, org: str, subscription_id: str) -> Subscription | None:
        """The organization's subscription as this copy holds it. When the
        copy lacks it but the catalog has it (its creation is still on its
        way here), after waiting up to `arrival` seconds for its event;
        UNAVAILABLE (retry) if it has not come by then. Writes nothing: reads
        never do, the event brings it."""
        row = await self._stored(org, subscription_id)
        if row is not None or self.catalog is None:
            return row
        try:
            await self.catalog.get_subscription(org, subscriptions_pb2.GetSubscriptionRequest(id=subscription_id))
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise Unavailable(f"the catalog could not be reached to find subscription {subscription_id!r}") from None
        deadline = asyncio.get_running_loop().time() + self.arrival
        while asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(ARRIVAL_POLL)
            row = await self._stored(org, subscription_id)
            if row is not None:
                return row
        raise Unavailable(f"subscription {subscription_id!r} is still being set up here; retry in a moment")

    async def arrived_for(self, org: str, customer_id: str) -> None:
        """Waits (as `arrived`) for those of the customer's subscriptions the
        catalog lists first (ARRIVALS_AWAITED) that this copy lacks: a read
        right after a subscription is created sees it. One catalog call."""
        if self.catalog is None:
            return
        try:
            page = await self.catalog.list_subscriptions(
                org, subscriptions_pb2.ListSubscriptionsRequest(customer_id=customer_id, page_size=ARRIVALS_AWAITED)
            )
        except grpc.aio.AioRpcError:
            raise Unavailable(f"the catalog could not be reached to find customer {customer_id!r}") from None
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
        for sub in page.subscriptions:
            if sub.id not in known:
                await self.arrived(org, sub.id)

    async def _stored(self, org: str, subscription_id: str) -> Subscription | None:
        async with self.sessions() as session:
            row = await session.get(Subscription, subscription_id)
        return row if row is not None and row.organization_id == org else None

    async def catch_up(self, org: str, customer_id: str) -> None:
        """Best effort: when the catalog cannot be reached, events still arrive later."""
        if self.catalog is None:
            return
        try:
            await self._catch_up(org, customer_id)
        except grpc.aio.AioRpcError as error:
            log.warning("catalog unreachable while catching up %s: %s", customer_id, error.code())

    async def catch_up_clock(self, org: str, test_clock_id: str) -> None:
        """Best effort, like `catch_up`: the subscriptions of a test clock's customers."""
        if self.catalog is None:
            return
        try:
            await self._subscriptions(org, Subscription.test_clock_id == test_clock_id, test_clock_id=test_clock_id)
        except grpc.aio.AioRpcError as error:
            log.warning("catalog unreachable while catching up clock %s: %s", test_clock_id, error.code())

    async def _subscriptions(self, org: str, mine: ColumnElement[bool], **scope: str) -> None:
        """Applies the subscriptions the catalog lists for `scope` (`mine` selects them here) that this copy lacks,
        and the ends of those it has."""
        async with self.sessions() as session:
            rows = await session.execute(
                select(Subscription.id, Subscription.terminate_time).where(Subscription.organization_id == org, mine)
            )
            known = {sub_id: end for sub_id, end in rows}
        assert self.catalog is not None  # caught up only with a catalog (`catch_up`, `catch_up_clock`)
        listing = self.catalog.list_subscriptions
        request_type = subscriptions_pb2.ListSubscriptionsRequest
        async for sub in self._every(listing, request_type, lambda page: page.subscriptions, org, scope):
            end = from_proto_or_none(sub, "terminate_time")
            if sub.id not in known:
                await self.apply(org, sub, await self._plan(org, sub))
            elif end is not None and ((held := known[sub.id]) is None or end < held):
                await self.terminate(sub.id, end)

    async def _catch_up(self, org: str, customer_id: str) -> None:
        await self._subscriptions(org, Subscription.customer_id == customer_id, customer_id=customer_id)
        assert self.catalog is not None  # caught up only with a catalog (`catch_up`)
        async for applied in self._every(
            self.catalog.list_applied_coupons,
            coupons_pb2.ListAppliedCouponsRequest,
            lambda page: page.applied_coupons,
            org,
            {"customer_id": customer_id},
        ):
            await self.applied_coupon(org, applied)
        if self.one_offs is None:
            return
        listing = self.catalog.list_applied_add_ons
        async for applied_add_on in self._every(
            listing,
            add_ons_pb2.ListAppliedAddOnsRequest,
            lambda page: page.applied_add_ons,
            org,
            {"customer_id": customer_id},
        ):
            await self.one_offs.issue(org, applied_add_on)

    def _every[Request, Response: peers.Page, Item](
        self,
        listing: peers.Listing[Request, Response],
        request_type: Callable[..., Request],
        items: Callable[[Response], Iterable[Item]],
        org: str,
        scope: dict[str, str],
    ) -> AsyncIterator[Item]:
        """Every item of one of the catalog's listings for `scope`, riding out a reconnect."""
        return peers.every(listing, request_type, items, org, scope, self.page_size, wait_for_ready=True)
