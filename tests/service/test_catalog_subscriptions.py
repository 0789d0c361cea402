"""SubscriptionService over gRPC, and the subscription_created event it
publishes to NATS through the outbox."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import grpc
import nats
import pytest
from nats.js.api import ConsumerConfig, DeliverPolicy
from sqlalchemy import update

from bxb.catalog.v1 import (
    customers_pb2,
    customers_pb2_grpc,
    events_pb2,
    organizations_pb2,
    organizations_pb2_grpc,
    plans_pb2,
    plans_pb2_grpc,
    subscriptions_pb2_grpc,
)
from bxb.catalog.v1 import subscriptions_pb2 as pb
from services.catalog.models import Subscription
from services.catalog.subscriptions import SUBSCRIPTION_CREATED
from services.common import bus, db
from services.common.errors import error_info
from services.common.tenancy import metadata
from services.common.timestamps import to_proto
from tests.conftest import Infra, Stack


class Catalog:
    def __init__(self, channel: grpc.aio.Channel, org: str):
        self.org = org
        self.md = metadata(org)
        self.subscriptions = subscriptions_pb2_grpc.SubscriptionServiceStub(channel)
        self.plans = plans_pb2_grpc.PlanServiceStub(channel)
        self.customers = customers_pb2_grpc.CustomerServiceStub(channel)

    async def plan(self, code: str, amount_cents: int = 0) -> plans_pb2.Plan:
        spec = plans_pb2.Plan(code=code, interval=plans_pb2.PLAN_INTERVAL_MONTHLY, amount_cents=amount_cents)
        return await self.plans.CreatePlan(plans_pb2.CreatePlanRequest(plan=spec), metadata=self.md)

    async def subscribe(self, **fields) -> pb.Subscription:
        return await self.subscriptions.CreateSubscription(pb.CreateSubscriptionRequest(**fields), metadata=self.md)

    async def get(self, subscription_id: str) -> pb.Subscription:
        return await self.subscriptions.GetSubscription(pb.GetSubscriptionRequest(id=subscription_id), metadata=self.md)

    async def list(self, **fields) -> pb.ListSubscriptionsResponse:
        return await self.subscriptions.ListSubscriptions(pb.ListSubscriptionsRequest(**fields), metadata=self.md)

    async def rejected(self, code: grpc.StatusCode, field: str, **fields) -> grpc.aio.AioRpcError:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await self.subscribe(**fields)
        assert raised.value.code() == code, raised.value.details()
        assert error_info(raised.value).metadata["field"] == field
        return raised.value


async def new_org(channel: grpc.aio.Channel) -> str:
    orgs = organizations_pb2_grpc.OrganizationServiceStub(channel)
    return (await orgs.CreateOrganization(organizations_pb2.CreateOrganizationRequest(name="Subscriptions"))).id


@pytest.fixture
async def catalog(stack: Stack):
    async with stack.channel("catalog") as channel:
        yield Catalog(channel, await new_org(channel))


async def test_subscribing_by_plan_code_creates_the_customer_and_is_active(catalog: Catalog):
    plan = await catalog.plan("basic")
    before = datetime.now(UTC)
    sub = await catalog.subscribe(customer_id="cus_new", plan_code="basic")
    assert sub.id.startswith("sub_")
    assert (sub.customer_id, sub.plan_id, sub.plan_code, sub.plan_version) == ("cus_new", plan.id, "basic", 1)
    assert sub.status == pb.SUBSCRIPTION_STATUS_ACTIVE
    assert sub.billing_time == pb.BILLING_TIME_ANNIVERSARY
    assert sub.external_id == ""
    assert sub.start_time == sub.create_time
    assert sub.start_time.ToDatetime(tzinfo=UTC) >= before - timedelta(seconds=1)
    assert await catalog.get(sub.id) == sub
    customer = await catalog.customers.GetCustomer(customers_pb2.GetCustomerRequest(id="cus_new"), metadata=catalog.md)
    assert (customer.id, customer.name) == ("cus_new", "")


async def test_subscribing_an_existing_customer_keeps_it(catalog: Catalog):
    await catalog.plan("basic")
    spec = customers_pb2.Customer(id="cus_known", name="Known", currency="EUR")
    await catalog.customers.CreateCustomer(customers_pb2.CreateCustomerRequest(customer=spec), metadata=catalog.md)
    await catalog.subscribe(customer_id="cus_known", plan_code="basic")
    customer = await catalog.customers.GetCustomer(
        customers_pb2.GetCustomerRequest(id="cus_known"), metadata=catalog.md
    )
    assert (customer.name, customer.currency) == ("Known", "EUR")


async def test_a_future_start_is_pending_with_the_billing_time_asked(catalog: Catalog):
    await catalog.plan("basic")
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(days=3)
    sub = await catalog.subscribe(
        customer_id="c", plan_code="basic", start_time=to_proto(start), billing_time=pb.BILLING_TIME_CALENDAR
    )
    assert sub.status == pb.SUBSCRIPTION_STATUS_PENDING
    assert sub.billing_time == pb.BILLING_TIME_CALENDAR
    assert sub.start_time.ToDatetime(tzinfo=UTC) == start
    assert (await catalog.get(sub.id)).status == pb.SUBSCRIPTION_STATUS_PENDING


async def test_a_backdated_start_is_active(catalog: Catalog):
    await catalog.plan("basic")
    start = datetime(2025, 1, 1, tzinfo=UTC)
    sub = await catalog.subscribe(customer_id="c", plan_code="basic", start_time=to_proto(start))
    assert sub.status == pb.SUBSCRIPTION_STATUS_ACTIVE
    assert sub.start_time.ToDatetime(tzinfo=UTC) == start


async def test_plan_code_pins_the_current_version(catalog: Catalog):
    await catalog.plan("pro", 100)
    v2 = await catalog.plan("pro", 200)
    sub = await catalog.subscribe(customer_id="c", plan_code="pro")
    assert (sub.plan_id, sub.plan_version) == (v2.id, 2)


async def test_plan_id_of_an_older_version_pins_the_current_version(catalog: Catalog):
    v1 = await catalog.plan("pro", 100)
    v2 = await catalog.plan("pro", 200)
    sub = await catalog.subscribe(customer_id="c", plan_id=v1.id)
    assert (sub.plan_id, sub.plan_code, sub.plan_version) == (v2.id, "pro", 2)


async def test_a_plan_code_given_as_plan_id_is_accepted(catalog: Catalog):
    plan = await catalog.plan("starter")
    sub = await catalog.subscribe(customer_id="c", plan_id="starter")
    assert (sub.plan_id, sub.plan_code) == (plan.id, "starter")


async def test_unknown_plans_and_missing_plan_are_rejected(catalog: Catalog):
    await catalog.rejected(grpc.StatusCode.NOT_FOUND, "plan_code", customer_id="c", plan_code="ghost")
    await catalog.rejected(grpc.StatusCode.NOT_FOUND, "plan_id", customer_id="c", plan_id="plan_ghost")
    error = await catalog.rejected(grpc.StatusCode.INVALID_ARGUMENT, "plan_code", customer_id="c")
    assert error.details() == "plan_code or plan_id is required"
    assert list((await catalog.list()).subscriptions) == []
    with pytest.raises(grpc.aio.AioRpcError) as raised:  # no customer was created for a failed subscription
        await catalog.customers.GetCustomer(customers_pb2.GetCustomerRequest(id="c"), metadata=catalog.md)
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


async def test_another_organizations_plan_id_is_not_found(stack: Stack, catalog: Catalog):
    async with stack.channel("catalog") as channel:
        other = Catalog(channel, await new_org(channel))
        theirs = await other.plan("theirs")
        await catalog.rejected(grpc.StatusCode.NOT_FOUND, "plan_id", customer_id="c", plan_id=theirs.id)
        sub = await other.subscribe(customer_id="c", plan_id=theirs.id)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await catalog.get(sub.id)
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    assert error_info(raised.value).metadata["field"] == "id"


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"customer_id": ""}, "customer_id"),
        ({"customer_id": "bad id"}, "customer_id"),
        ({"customer_id": "c", "external_id": "bad id"}, "external_id"),
    ],
)
async def test_invalid_ids_are_rejected(catalog: Catalog, fields, field):
    await catalog.plan("basic")
    error = await catalog.rejected(grpc.StatusCode.INVALID_ARGUMENT, field, plan_code="basic", **fields)
    assert error_info(error).reason in ("INVALID_ARGUMENT", "MISSING_FIELD")


async def test_an_external_id_makes_create_idempotent(catalog: Catalog):
    await catalog.plan("basic")
    await catalog.plan("other")
    first = await catalog.subscribe(customer_id="c", plan_code="basic", external_id="order-42")
    assert first.external_id == "order-42"
    again = await catalog.subscribe(customer_id="c", plan_code="other", external_id="order-42")
    assert again == first
    assert [s.id for s in (await catalog.list()).subscriptions] == [first.id]


async def test_concurrent_creates_with_one_external_id_make_one_subscription(catalog: Catalog):
    await catalog.plan("basic")
    results = await asyncio.gather(
        *(catalog.subscribe(customer_id="c", plan_code="basic", external_id="once") for _ in range(6)),
        return_exceptions=True,
    )
    made = {r.id for r in results if isinstance(r, pb.Subscription)}
    errors = [r for r in results if not isinstance(r, pb.Subscription)]
    assert len(made) == 1
    assert {e.code() for e in errors} <= {grpc.StatusCode.ABORTED}
    assert [s.id for s in (await catalog.list()).subscriptions] == list(made)


async def test_get_unknown_subscription_is_not_found(catalog: Catalog):
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await catalog.get("sub_missing")
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


async def test_list_filters_by_customer_and_pages_oldest_first(catalog: Catalog):
    await catalog.plan("basic")
    made = [await catalog.subscribe(customer_id=c, plan_code="basic") for c in ("a", "b", "a", "a")]
    everything = await catalog.list()
    assert [s.id for s in everything.subscriptions] == [s.id for s in made]
    only_a = await catalog.list(customer_id="a", page_size=2)
    assert [s.id for s in only_a.subscriptions] == [made[0].id, made[2].id]
    rest = await catalog.list(customer_id="a", page_size=2, page_token=only_a.next_page_token)
    assert [s.id for s in rest.subscriptions] == [made[3].id]
    assert rest.next_page_token == ""
    assert [s.customer_id for s in (await catalog.list(customer_id="b")).subscriptions] == ["b"]
    assert list((await catalog.list(customer_id="nobody")).subscriptions) == []


async def test_a_subscription_past_its_terminate_time_reads_as_terminated(infra: Infra, catalog: Catalog):
    # No API terminates a subscription yet; the column is set the way an operator would, in SQL.
    await catalog.plan("basic")
    sub = await catalog.subscribe(customer_id="c", plan_code="basic")
    engine = db.create_engine(infra.postgres.url("catalog"), pool_size=1)
    try:
        async with engine.begin() as connection:
            ended = datetime.now(UTC) - timedelta(minutes=1)
            await connection.execute(update(Subscription).where(Subscription.id == sub.id).values(terminate_time=ended))
    finally:
        await engine.dispose()
    assert (await catalog.get(sub.id)).status == pb.SUBSCRIPTION_STATUS_TERMINATED
    assert [s.status for s in (await catalog.list()).subscriptions] == [pb.SUBSCRIPTION_STATUS_TERMINATED]


async def test_creating_a_subscription_publishes_subscription_created(infra: Infra, catalog: Catalog):
    nc = await nats.connect(infra.nats.url)
    try:
        js = nc.jetstream()
        config = ConsumerConfig(filter_subject=SUBSCRIPTION_CREATED, deliver_policy=DeliverPolicy.NEW)
        consumer = await js.pull_subscribe(SUBSCRIPTION_CREATED, stream=bus.CATALOG.name, config=config)
        plan = await catalog.plan("evented", 4200)
        sub = await catalog.subscribe(customer_id="cus_evt", plan_code="evented", external_id="ext-1")
        await catalog.subscribe(customer_id="cus_evt", plan_code="evented", external_id="ext-1")  # a retry: no event

        mine = []
        deadline = asyncio.get_running_loop().time() + 10
        while asyncio.get_running_loop().time() < deadline and len(mine) < 2:
            try:
                messages = await consumer.fetch(50, timeout=0.5)
            except TimeoutError:  # nats-py raises its own or asyncio's
                if mine:
                    break
                continue
            for msg in messages:
                await msg.ack()
                if msg.headers.get(bus.ORG_HEADER) == catalog.org:
                    mine.append(msg)
        await consumer.unsubscribe()
    finally:
        await nc.close()
    [msg] = mine
    event = events_pb2.SubscriptionCreated.FromString(msg.data)
    assert msg.subject == SUBSCRIPTION_CREATED
    assert msg.headers[bus.MSG_ID] == event.event_id
    assert event.event_id.startswith("evt_")
    assert event.organization_id == catalog.org
    assert event.subscription == sub
    assert event.occur_time == sub.create_time
    assert (event.plan.id, event.plan.code, event.plan.amount_cents) == (plan.id, "evented", 4200)
