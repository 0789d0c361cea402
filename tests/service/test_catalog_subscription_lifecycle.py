"""Terminating subscriptions and changing their plan over gRPC, and the
subscription_updated / subscription_created events published to NATS."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import grpc
import nats
import pytest
from nats.js.api import ConsumerConfig, DeliverPolicy

from bxb.catalog.v1 import events_pb2, plans_pb2, plans_pb2_grpc, subscriptions_pb2_grpc
from bxb.catalog.v1 import subscriptions_pb2 as pb
from services.catalog.subscriptions import SUBSCRIPTION_CREATED, SUBSCRIPTION_UPDATED
from services.common import bus
from services.common.errors import error_info
from services.common.tenancy import metadata
from services.common.timestamps import to_proto
from tests.conftest import Infra, Stack, unique
from tests.service.test_catalog_subscriptions import new_org

TERMINATED, ACTIVE, PENDING = (
    pb.SUBSCRIPTION_STATUS_TERMINATED,
    pb.SUBSCRIPTION_STATUS_ACTIVE,
    pb.SUBSCRIPTION_STATUS_PENDING,
)


def utc(ts) -> datetime:
    return ts.ToDatetime(tzinfo=UTC)


def first_of_month(now: datetime, months_ahead: int) -> datetime:
    total = now.month - 1 + months_ahead
    return datetime(now.year + total // 12, total % 12 + 1, 1, tzinfo=UTC)


class Catalog:
    def __init__(self, channel: grpc.aio.Channel, org: str):
        self.org = org
        self.md = metadata(org)
        self.subscriptions = subscriptions_pb2_grpc.SubscriptionServiceStub(channel)
        self.plans = plans_pb2_grpc.PlanServiceStub(channel)

    async def plan(
        self, code: str, amount_cents: int, currency: str = "USD", interval=plans_pb2.PLAN_INTERVAL_MONTHLY
    ) -> plans_pb2.Plan:
        spec = plans_pb2.Plan(code=code, interval=interval, amount_cents=amount_cents, currency=currency)
        return await self.plans.CreatePlan(plans_pb2.CreatePlanRequest(plan=spec), metadata=self.md)

    async def subscribe(self, plan_code: str, start: datetime | None = None, **fields) -> pb.Subscription:
        request = pb.CreateSubscriptionRequest(
            customer_id=fields.pop("customer_id", "cus_life"),
            plan_code=plan_code,
            start_time=to_proto(start),
            **fields,
        )
        return await self.subscriptions.CreateSubscription(request, metadata=self.md)

    async def get(self, subscription_id: str) -> pb.Subscription:
        return await self.subscriptions.GetSubscription(pb.GetSubscriptionRequest(id=subscription_id), metadata=self.md)

    async def terminate(self, subscription_id: str) -> pb.Subscription:
        return await self.subscriptions.TerminateSubscription(
            pb.TerminateSubscriptionRequest(id=subscription_id), metadata=self.md
        )

    async def change(self, subscription_id: str, **plan) -> pb.Subscription:
        return await self.subscriptions.ChangeSubscriptionPlan(
            pb.ChangeSubscriptionPlanRequest(id=subscription_id, **plan), metadata=self.md
        )

    async def listed(self) -> list[pb.Subscription]:
        return list(
            (await self.subscriptions.ListSubscriptions(pb.ListSubscriptionsRequest(), metadata=self.md)).subscriptions
        )


@pytest.fixture
async def catalog(stack: Stack):
    async with stack.channel("catalog") as channel:
        yield Catalog(channel, await new_org(channel))


class Events:
    """The subscription events one organization publishes, read from JetStream
    in publication order."""

    def __init__(self, consumer, org: str):
        self.consumer = consumer
        self.org = org
        self.seen: list[tuple[str, object]] = []

    async def until(self, done: Callable[[list[tuple[str, object]]], bool], timeout: float = 10) -> list:
        deadline = asyncio.get_running_loop().time() + timeout
        while not done(self.seen):
            assert asyncio.get_running_loop().time() < deadline, f"events so far: {self.seen}"
            try:
                messages = await self.consumer.fetch(50, timeout=0.5)
            except TimeoutError:  # nats-py raises its own or asyncio's
                continue
            for msg in messages:
                await msg.ack()
                if msg.headers.get(bus.ORG_HEADER) != self.org:
                    continue
                if msg.subject == SUBSCRIPTION_UPDATED:
                    event = events_pb2.SubscriptionUpdated.FromString(msg.data)
                elif msg.subject == SUBSCRIPTION_CREATED:
                    event = events_pb2.SubscriptionCreated.FromString(msg.data)
                else:
                    continue
                assert msg.headers[bus.MSG_ID] == event.event_id
                self.seen.append((msg.subject, event))
        return self.seen

    async def after(self, marker: pb.Subscription) -> list[tuple[str, object]]:
        """Every event published before `marker`'s subscription_created (the
        outbox publishes in commit order, so nothing earlier is still to come)."""

        def marked(seen):
            return any(s == SUBSCRIPTION_CREATED and e.subscription.id == marker.id for s, e in seen)

        seen = await self.until(marked)
        return seen[
            : next(i for i, (s, e) in enumerate(seen) if s == SUBSCRIPTION_CREATED and e.subscription.id == marker.id)
        ]


@pytest.fixture
async def events(infra: Infra, catalog: Catalog):
    nc = await nats.connect(infra.nats.url)
    js = nc.jetstream()
    config = ConsumerConfig(filter_subject="bxb.catalog.v1.>", deliver_policy=DeliverPolicy.NEW)
    consumer = await js.pull_subscribe("bxb.catalog.v1.>", stream=bus.CATALOG.name, config=config)
    yield Events(consumer, catalog.org)
    await consumer.unsubscribe()
    await nc.close()


async def marker(catalog: Catalog) -> pb.Subscription:
    """A subscription made only to mark a point in the event stream."""
    await catalog.plan(code := unique("marker"), 0)
    return await catalog.subscribe(code, customer_id="cus_marker")


def updated(subscription: pb.Subscription) -> tuple[str, pb.Subscription]:
    return (SUBSCRIPTION_UPDATED, subscription)


def created(subscription: pb.Subscription, plan_id: str) -> tuple[str, pb.Subscription, str]:
    return (SUBSCRIPTION_CREATED, subscription, plan_id)


def summary(seen) -> list[tuple]:
    """Events as (subject, subscription[, pinned plan id]), after checking
    their envelope."""
    result = []
    for subject, event in seen:
        assert event.event_id.startswith("evt_") and event.organization_id
        if subject == SUBSCRIPTION_CREATED:
            result.append((subject, event.subscription, event.plan.id))
        else:
            result.append((subject, event.subscription))
    return result


# Termination


async def test_terminating_ends_an_active_subscription_now_and_publishes_subscription_updated(
    catalog: Catalog, events: Events
):
    basic = await catalog.plan("basic", 1000)
    sub = await catalog.subscribe("basic", datetime(2026, 1, 15, tzinfo=UTC), external_id="ext-term")
    before = datetime.now(UTC)
    ended = await catalog.terminate(sub.id)
    after = datetime.now(UTC)
    assert ended.status == TERMINATED
    assert before <= utc(ended.terminate_time) <= after
    assert ended.external_id == "ext-term"
    assert (ended.previous_subscription_id, ended.next_subscription_id) == ("", "")
    expected = pb.Subscription()
    expected.CopyFrom(sub)
    expected.status = TERMINATED
    expected.terminate_time.CopyFrom(ended.terminate_time)
    assert ended == expected  # nothing else changed
    assert await catalog.get(sub.id) == ended
    seen = await events.after(await marker(catalog))
    assert summary(seen) == [created(sub, basic.id), updated(ended)]
    assert seen[1][1].occur_time == ended.terminate_time
    assert seen[1][1].organization_id == catalog.org


async def test_terminating_again_returns_the_subscription_unchanged_and_publishes_nothing(
    catalog: Catalog, events: Events
):
    basic = await catalog.plan("basic", 1000)
    sub = await catalog.subscribe("basic")
    first = await catalog.terminate(sub.id)
    assert await catalog.terminate(sub.id) == first
    assert summary(await events.after(await marker(catalog))) == [created(sub, basic.id), updated(first)]


async def test_terminating_a_pending_subscription_cancels_it_at_its_start(catalog: Catalog):
    await catalog.plan("basic", 1000)
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(days=10)
    sub = await catalog.subscribe("basic", start)
    assert sub.status == PENDING
    cancelled = await catalog.terminate(sub.id)
    assert cancelled.status == TERMINATED  # though its start and end are both ahead
    assert utc(cancelled.terminate_time) == utc(cancelled.start_time) == start
    assert await catalog.terminate(sub.id) == cancelled
    assert [s.status for s in await catalog.listed()] == [TERMINATED]


async def test_terminating_an_unknown_or_another_organizations_subscription_is_not_found(
    stack: Stack, catalog: Catalog
):
    async with stack.channel("catalog") as channel:
        other = Catalog(channel, await new_org(channel))
        await other.plan("theirs", 100)
        theirs = await other.subscribe("theirs")
        for subscription_id in ("sub_missing", theirs.id):
            for call in (catalog.terminate(subscription_id), catalog.change(subscription_id, plan_code="theirs")):
                with pytest.raises(grpc.aio.AioRpcError) as raised:
                    await call
                assert raised.value.code() == grpc.StatusCode.NOT_FOUND
                assert error_info(raised.value).metadata["field"] == "id"
        assert await other.get(theirs.id) == theirs


# Plan changes


async def test_an_upgrade_ends_the_old_subscription_now_and_starts_the_new_plan_now(catalog: Catalog, events: Events):
    basic = await catalog.plan("basic", 1000)
    pro = await catalog.plan("pro", 2000)
    start = datetime(2026, 1, 15, tzinfo=UTC)
    old = await catalog.subscribe(
        "basic", start, customer_id="cus_up", external_id="ext-up", billing_time=pb.BILLING_TIME_CALENDAR
    )
    before = datetime.now(UTC)
    new = await catalog.change(old.id, plan_code="pro")
    after = datetime.now(UTC)

    assert new.id != old.id and new.id.startswith("sub_")
    assert (new.customer_id, new.plan_id, new.plan_code, new.plan_version) == ("cus_up", pro.id, "pro", 1)
    assert (new.status, new.billing_time, new.external_id) == (ACTIVE, pb.BILLING_TIME_CALENDAR, "ext-up")
    assert (new.previous_subscription_id, new.next_subscription_id) == (old.id, "")
    assert not new.HasField("terminate_time")
    assert before <= utc(new.start_time) <= after
    assert new.create_time == new.start_time
    ended = await catalog.get(old.id)
    assert (ended.status, ended.plan_id, ended.external_id) == (TERMINATED, basic.id, "")
    assert (ended.previous_subscription_id, ended.next_subscription_id) == ("", new.id)
    assert ended.terminate_time == new.start_time
    assert utc(ended.start_time) == start
    assert await catalog.get(new.id) == new
    assert [s.id for s in await catalog.listed()] == [old.id, new.id]

    seen = await events.after(await marker(catalog))
    assert summary(seen) == [created(old, basic.id), updated(ended), created(new, pro.id)]
    assert seen[2][1].plan.amount_cents == 2000
    assert seen[1][1].occur_time == seen[2][1].occur_time == new.create_time


async def test_an_equal_base_fee_counts_as_an_upgrade(catalog: Catalog):
    await catalog.plan("basic", 1000)
    await catalog.plan("same_price", 1000)
    old = await catalog.subscribe("basic", datetime(2026, 1, 15, tzinfo=UTC))
    new = await catalog.change(old.id, plan_code="same_price")
    assert new.status == ACTIVE
    assert (await catalog.get(old.id)).terminate_time == new.start_time


async def test_a_downgrade_starts_when_the_current_period_ends(catalog: Catalog, events: Events):
    pro = await catalog.plan("pro", 2000)
    lite = await catalog.plan("lite", 500)
    now = datetime.now(UTC)
    # Monthly anniversary from the 1st of a month: every period ends on the 1st of the next month.
    old = await catalog.subscribe("pro", first_of_month(now, -14), external_id="ext-down")
    new = await catalog.change(old.id, plan_code="lite")
    switch = first_of_month(now, 1)

    assert utc(new.start_time) == switch
    assert (new.status, new.plan_id, new.external_id, new.previous_subscription_id) == (
        PENDING,
        lite.id,
        "ext-down",
        old.id,
    )
    scheduled = await catalog.get(old.id)
    assert scheduled.status == ACTIVE  # it runs to the end of its period
    assert utc(scheduled.terminate_time) == switch
    assert (scheduled.next_subscription_id, scheduled.external_id) == (new.id, "")
    assert summary(await events.after(await marker(catalog))) == [
        created(old, pro.id),
        updated(scheduled),
        created(new, lite.id),
    ]


async def test_a_calendar_downgrade_starts_on_the_first_of_next_month(catalog: Catalog):
    await catalog.plan("pro", 2000)
    await catalog.plan("lite", 500)
    now = datetime.now(UTC)
    old = await catalog.subscribe("pro", datetime(2026, 1, 15, tzinfo=UTC), billing_time=pb.BILLING_TIME_CALENDAR)
    new = await catalog.change(old.id, plan_code="lite")
    assert utc(new.start_time) == first_of_month(now, 1)
    assert new.billing_time == pb.BILLING_TIME_CALENDAR


@pytest.mark.parametrize("new_plan", ["pro", "lite"])
async def test_a_pending_subscription_changes_at_its_start(catalog: Catalog, new_plan: str):
    await catalog.plan("mid", 1000)
    await catalog.plan("pro", 2000)
    await catalog.plan("lite", 500)
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(days=40)
    old = await catalog.subscribe("mid", start)
    new = await catalog.change(old.id, plan_code=new_plan)
    assert (new.status, utc(new.start_time), new.plan_code) == (PENDING, start, new_plan)
    cancelled = await catalog.get(old.id)
    assert (cancelled.status, utc(cancelled.terminate_time)) == (TERMINATED, start)


async def test_a_plan_given_by_the_id_of_an_older_version_pins_its_current_version(catalog: Catalog):
    await catalog.plan("basic", 1000)
    v1 = await catalog.plan("pro", 2000)
    v2 = await catalog.plan("pro", 3000)
    old = await catalog.subscribe("basic", datetime(2026, 1, 15, tzinfo=UTC))
    new = await catalog.change(old.id, plan_id=v1.id)
    assert (new.plan_id, new.plan_version, new.status) == (v2.id, 2, ACTIVE)


async def test_another_change_cancels_the_scheduled_downgrade(catalog: Catalog, events: Events):
    await catalog.plan("pro", 2000)
    await catalog.plan("lite", 500)
    top = await catalog.plan("top", 9000)
    old = await catalog.subscribe("pro", datetime(2026, 1, 15, tzinfo=UTC), external_id="ext-again")
    scheduled = await catalog.change(old.id, plan_code="lite")
    upgraded = await catalog.change(old.id, plan_code="top")

    cancelled = await catalog.get(scheduled.id)
    assert cancelled.status == TERMINATED
    assert cancelled.terminate_time == cancelled.start_time
    assert cancelled.external_id == ""
    assert (upgraded.status, upgraded.external_id, upgraded.previous_subscription_id) == (ACTIVE, "ext-again", old.id)
    ended = await catalog.get(old.id)
    assert (ended.status, ended.next_subscription_id) == (TERMINATED, upgraded.id)
    assert ended.terminate_time == upgraded.start_time

    seen = summary(await events.after(await marker(catalog)))
    assert [s[0] for s in seen[:3]] == [SUBSCRIPTION_CREATED, SUBSCRIPTION_UPDATED, SUBSCRIPTION_CREATED]
    assert seen[3:] == [updated(cancelled), updated(ended), created(upgraded, top.id)]


async def test_terminating_cancels_a_scheduled_downgrade(catalog: Catalog, events: Events):
    await catalog.plan("pro", 2000)
    await catalog.plan("lite", 500)
    old = await catalog.subscribe("pro", datetime(2026, 1, 15, tzinfo=UTC), external_id="ext-stop")
    scheduled = await catalog.change(old.id, plan_code="lite")
    before = datetime.now(UTC)
    ended = await catalog.terminate(old.id)
    assert ended.status == TERMINATED and utc(ended.terminate_time) >= before
    assert (ended.next_subscription_id, ended.external_id) == (scheduled.id, "ext-stop")  # the reference comes back
    cancelled = await catalog.get(scheduled.id)
    assert (cancelled.status, cancelled.terminate_time, cancelled.external_id) == (
        TERMINATED,
        scheduled.start_time,
        "",
    )
    seen = summary(await events.after(await marker(catalog)))
    assert seen[2][1] == scheduled
    assert seen[3:] == [updated(cancelled), updated(ended)]


async def test_a_replacement_changed_before_its_start_is_cancelled_with_the_whole_chain(catalog: Catalog):
    await catalog.plan("pro", 2000)
    await catalog.plan("lite", 500)
    await catalog.plan("mini", 100)
    old = await catalog.subscribe("pro", datetime(2026, 1, 15, tzinfo=UTC), external_id="ext-chain")
    lite = await catalog.change(old.id, plan_code="lite")
    mini = await catalog.change(lite.id, plan_code="mini")  # the pending replacement changes at its start
    assert (mini.start_time, mini.previous_subscription_id, mini.external_id) == (lite.start_time, lite.id, "ext-chain")
    assert (await catalog.get(lite.id)).status == TERMINATED

    ended = await catalog.terminate(old.id)
    assert ended.external_id == "ext-chain"
    cancelled = await catalog.get(mini.id)
    assert (cancelled.status, cancelled.terminate_time) == (TERMINATED, mini.start_time)
    assert [s.status for s in await catalog.listed()] == [TERMINATED] * 3


# Refusals


async def refused(call, code: grpc.StatusCode, field: str, reason: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    assert raised.value.code() == code, raised.value.details()
    info = error_info(raised.value)
    assert (info.metadata["field"], info.reason) == (field, reason), raised.value.details()


async def test_changes_that_make_no_sense_are_refused_and_change_nothing(catalog: Catalog):
    v1 = await catalog.plan("basic", 1000)
    await catalog.plan("basic", 1500)
    await catalog.plan("euro", 5000, currency="EUR")
    sub = await catalog.subscribe("basic", datetime(2026, 1, 15, tzinfo=UTC))
    invalid, not_found = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND
    await refused(catalog.change(sub.id, plan_code="basic"), invalid, "plan_code", "SAME_PLAN")
    await refused(catalog.change(sub.id, plan_id=v1.id), invalid, "plan_id", "SAME_PLAN")
    await refused(catalog.change(sub.id, plan_code="euro"), invalid, "plan_code", "CURRENCY_MISMATCH")
    await refused(catalog.change(sub.id, plan_id="euro"), invalid, "plan_id", "CURRENCY_MISMATCH")
    await refused(catalog.change(sub.id, plan_code="ghost"), not_found, "plan_code", "NOT_FOUND")
    await refused(catalog.change(sub.id, plan_id="plan_ghost"), not_found, "plan_id", "NOT_FOUND")
    await refused(catalog.change(sub.id), invalid, "plan_code", "INVALID_ARGUMENT")
    assert await catalog.listed() == [sub]


async def test_a_terminated_subscription_cannot_change_plan(catalog: Catalog):
    await catalog.plan("basic", 1000)
    await catalog.plan("pro", 2000)
    sub = await catalog.subscribe("basic")
    ended = await catalog.terminate(sub.id)
    await refused(
        catalog.change(sub.id, plan_code="pro"),
        grpc.StatusCode.FAILED_PRECONDITION,
        "status",
        "SUBSCRIPTION_TERMINATED",
    )
    assert await catalog.listed() == [ended]


async def test_concurrent_upgrades_of_one_subscription_make_one_replacement(catalog: Catalog):
    await catalog.plan("basic", 1000)
    await catalog.plan("pro", 2000)
    await catalog.plan("top", 3000)
    sub = await catalog.subscribe("basic", datetime(2026, 1, 15, tzinfo=UTC))
    results = await asyncio.gather(
        *(catalog.change(sub.id, plan_code=code) for code in ("pro", "top") * 4), return_exceptions=True
    )
    winners = [r for r in results if isinstance(r, pb.Subscription)]
    losers = [r for r in results if not isinstance(r, pb.Subscription)]
    assert len(winners) == 1, results
    assert {e.code() for e in losers} == {grpc.StatusCode.FAILED_PRECONDITION}
    listed = await catalog.listed()
    assert [s.id for s in listed] == [sub.id, winners[0].id]
    assert listed[0].next_subscription_id == winners[0].id


async def test_a_termination_racing_an_upgrade_leaves_one_consistent_outcome(catalog: Catalog):
    await catalog.plan("basic", 1000)
    await catalog.plan("pro", 2000)
    sub = await catalog.subscribe("basic", datetime(2026, 1, 15, tzinfo=UTC))
    changed, ended = await asyncio.gather(
        catalog.change(sub.id, plan_code="pro"), catalog.terminate(sub.id), return_exceptions=True
    )
    assert isinstance(ended, pb.Subscription) and ended.status == TERMINATED
    listed = await catalog.listed()
    if isinstance(changed, pb.Subscription):  # the change went first; termination found it ended
        assert [s.id for s in listed] == [sub.id, changed.id]
        assert ended.next_subscription_id == changed.id
    else:  # the termination went first
        assert changed.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert [s.id for s in listed] == [sub.id]
