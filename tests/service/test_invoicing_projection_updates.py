"""The subscription projection learns when subscriptions end: from
SubscriptionUpdated events and from catching up with the catalog."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC
from types import SimpleNamespace

import grpc
import pytest
from sqlalchemy import select

from bxb.catalog.v1 import coupons_pb2, coupons_pb2_grpc, plans_pb2, subscriptions_pb2, subscriptions_pb2_grpc
from bxb.catalog.v1 import events_pb2 as catalog_events
from services.common import peers, tenancy
from services.common.db import create_engine, migrate
from services.common.db import sessions as db_sessions
from services.common.timestamps import to_proto
from services.invoicing.models import AppliedCoupon, Subscription
from services.invoicing.projection import SubscriptionProjection
from services.invoicing.server import MIGRATIONS
from tests.conftest import Stack, Tenant, unique
from tests.service.invoicing_helpers import InvoicingDb, at, create_plan, subscribe

CREATED, UPDATED = "bxb.catalog.v1.subscription_created", "bxb.catalog.v1.subscription_updated"
CHARGES = [{"billable_metric_code": "api_requests", "charge_model": "standard", "properties": {"amount": "1"}}]


@pytest.fixture
async def empty_db(infra) -> AsyncIterator[SimpleNamespace]:
    """A fresh invoicing database: a projection whose catalog events have not arrived."""
    url = await infra.database(unique("inv").lower())
    await migrate(url, MIGRATIONS)
    engine = create_engine(url, pool_size=2)
    yield SimpleNamespace(sessions=db_sessions(engine))
    await engine.dispose()


@pytest.fixture
async def catalog(stack: Stack):
    async with grpc.aio.insecure_channel(stack.catalog) as channel:
        yield channel


def updated(org: str, sub: subscriptions_pb2.Subscription) -> bytes:
    return catalog_events.SubscriptionUpdated(
        event_id=unique("evt"), organization_id=org, subscription=sub
    ).SerializeToString()


def ending(sub_id: str, when: str | None) -> subscriptions_pb2.Subscription:
    sub = subscriptions_pb2.Subscription(id=sub_id)
    if when:
        sub.terminate_time.CopyFrom(to_proto(at(when)))
    return sub


async def end_of(db, sub_id: str):
    async with db.sessions() as session:
        return (await session.get(Subscription, sub_id)).terminate_time


async def test_an_update_sets_the_end_and_the_earliest_end_wins_in_any_order(invoicing_db: InvoicingDb):
    projection = SubscriptionProjection(invoicing_db.sessions)
    org, sub_id = unique("org"), unique("sub")
    created = catalog_events.SubscriptionCreated(
        event_id=unique("evt"),
        organization_id=org,
        subscription=subscriptions_pb2.Subscription(
            id=sub_id,
            customer_id="c",
            billing_time=subscriptions_pb2.BILLING_TIME_ANNIVERSARY,
            start_time=to_proto(at("2026-01-01T00:00:00")),
            create_time=to_proto(at("2026-01-01T00:00:00")),
        ),
        plan=plans_pb2.Plan(code="p", interval=plans_pb2.PLAN_INTERVAL_MONTHLY, currency="USD"),
    ).SerializeToString()
    await projection.handle(CREATED, created)
    assert await end_of(invoicing_db, sub_id) is None

    scheduled = updated(org, ending(sub_id, "2026-03-01T00:00:00"))  # a downgrade at the period's end
    for _ in range(2):  # a redelivery changes nothing
        await projection.handle(UPDATED, scheduled)
    assert await end_of(invoicing_db, sub_id) == at("2026-03-01T00:00:00")
    await projection.handle(UPDATED, updated(org, ending(sub_id, "2026-02-10T00:00:00")))  # then terminated now
    await projection.handle(UPDATED, scheduled)  # the older announcement, redelivered late
    await projection.handle(UPDATED, updated(org, ending(sub_id, None)))  # an update that sets no end
    await projection.handle(CREATED, created)  # the creation, redelivered
    assert await end_of(invoicing_db, sub_id) == at("2026-02-10T00:00:00")


async def test_an_update_of_an_unknown_subscription_reads_it_from_the_catalog(tenant: Tenant, empty_db, catalog):
    await create_plan(tenant, "known_later", CHARGES, amount_cents=700)
    sub = await subscribe(tenant, "late_news", "known_later", "2026-04-01T00:00:00Z")
    meta = tenancy.metadata(tenant.organization_id)
    stub = subscriptions_pb2_grpc.SubscriptionServiceStub(catalog)
    terminated = await stub.TerminateSubscription(
        subscriptions_pb2.TerminateSubscriptionRequest(id=sub["id"]), metadata=meta
    )

    projection = SubscriptionProjection(empty_db.sessions, peers.Catalog(channel=catalog))
    await projection.handle(UPDATED, updated(tenant.organization_id, terminated))
    async with empty_db.sessions() as session:
        row = await session.get(Subscription, sub["id"])
    assert (row.customer_id, row.start_time, row.terminate_time) == (
        "late_news",
        at("2026-04-01T00:00:00"),
        terminated.terminate_time.ToDatetime(tzinfo=UTC),
    )
    assert (row.plan["code"], row.plan["amount_cents"], row.plan["charges"][0]["billable_metric_code"]) == (
        "known_later",
        "700",
        "api_requests",
    )


async def test_an_update_of_an_unknown_subscription_without_a_catalog_is_retried(empty_db):
    projection = SubscriptionProjection(empty_db.sessions)
    with pytest.raises(LookupError):  # the bus redelivers it: its creation may come first by then
        await projection.handle(UPDATED, updated(unique("org"), ending(unique("sub"), "2026-02-10T00:00:00")))
    await projection.handle(UPDATED, updated(unique("org"), ending(unique("sub"), None)))  # nothing to learn
    async with empty_db.sessions() as session:
        assert (await session.execute(select(Subscription))).scalars().all() == []


async def test_catching_up_applies_the_ends_the_catalog_knows(tenant: Tenant, empty_db, catalog):
    await create_plan(tenant, "ends", CHARGES)
    subs = [await subscribe(tenant, "catch_end", "ends", "2026-04-01T00:00:00Z") for _ in range(4)]
    projection = SubscriptionProjection(empty_db.sessions, peers.Catalog(channel=catalog), page_size=2)
    await projection.catch_up(tenant.organization_id, "catch_end")  # all four, none ended yet
    assert [await end_of(empty_db, s["id"]) for s in subs] == [None] * 4

    stub = subscriptions_pb2_grpc.SubscriptionServiceStub(catalog)
    meta = tenancy.metadata(tenant.organization_id)
    ends = []
    for sub in subs[:3]:
        reply = await stub.TerminateSubscription(
            subscriptions_pb2.TerminateSubscriptionRequest(id=sub["id"]), metadata=meta
        )
        ends.append(reply.terminate_time.ToDatetime(tzinfo=UTC))
    await projection.terminate(subs[1]["id"], at("2099-01-01T00:00:00"))  # a later end: the catalog's wins
    await projection.terminate(subs[2]["id"], at("2026-05-01T00:00:00"))  # an earlier one stays

    await projection.catch_up(tenant.organization_id, "catch_end")
    assert [await end_of(empty_db, s["id"]) for s in subs] == [ends[0], ends[1], at("2026-05-01T00:00:00"), None]


async def applied_coupons(db) -> dict[str, object]:
    async with db.sessions() as session:
        rows = (await session.execute(select(AppliedCoupon))).scalars().all()
    return {row.id: row.terminate_time for row in rows}


async def test_applied_coupons_are_projected_from_events_and_caught_up_page_by_page(tenant: Tenant, empty_db, catalog):
    h = tenant.http
    for n in range(3):
        body = {"code": f"C{n}", "discount_type": "percentage", "discount_value": 5, "duration": "forever"}
        assert (await h.post("/v1/coupons", json=body)).status_code == 201
    ids = [
        (await h.post("/v1/applied_coupons", json={"customer_id": "cc", "coupon_code": f"C{n}"})).json()["id"]
        for n in range(3)
    ]
    removed = (await h.delete(f"/v1/applied_coupons/{ids[0]}")).json()
    projection = SubscriptionProjection(empty_db.sessions, peers.Catalog(channel=catalog), page_size=2)
    await projection.catch_up(tenant.organization_id, "cc")  # two pages
    known = await applied_coupons(empty_db)
    assert sorted(known) == sorted(ids)
    assert known[ids[0]].isoformat().replace("+00:00", "Z").startswith(removed["terminated_at"][:19])
    assert (known[ids[1]], known[ids[2]]) == (None, None)

    # The event of an earlier application arriving late changes nothing: a known removal stays.
    stub = coupons_pb2_grpc.CouponServiceStub(catalog)
    meta = tenancy.metadata(tenant.organization_id)
    listed = await stub.ListAppliedCoupons(coupons_pb2.ListAppliedCouponsRequest(customer_id="cc"), metadata=meta)
    first = coupons_pb2.AppliedCoupon()
    first.CopyFrom(listed.applied_coupons[0])
    first.ClearField("terminate_time")
    event = catalog_events.AppliedCouponUpdated(organization_id=tenant.organization_id, applied_coupon=first)
    await projection.handle("bxb.catalog.v1.applied_coupon_updated", event.SerializeToString())
    assert await applied_coupons(empty_db) == known
