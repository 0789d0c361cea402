"""A three-node NATS cluster losing a node under load: streams replicated on
every node, a publisher sending as the services do (a transactional outbox's
relay and direct publishes, as metering's intake), a durable consumer as the
services consume; the stream's leader is killed (SIGKILL) midway, and every
message whose publish was acknowledged is consumed, none lost."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from nats.js.api import AckPolicy, ConsumerConfig
from sqlalchemy import MetaData, func, select

from bxb.catalog.v1 import events_pb2
from deploy.embedded import NATS_USER, NatsCluster, Route, free_port
from deploy.stack import DATABASES, Stack
from services.common import bus, db, outbox
from services.common.ids import new_id
from services.metering import intake
from tests.conftest import Infra, eventually, unique
from tests.e2e.test_stack import KEY, send_events, september_invoice, stack_env, walkthrough


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    nodes = NatsCluster(tmp_path / "cluster", durable=False)
    nodes.start()
    yield nodes
    nodes.stop()


@pytest.fixture
async def buses(cluster: NatsCluster) -> AsyncIterator[tuple[bus.Bus, bus.Bus]]:
    """A publisher's and a consumer's connection, each to the whole cluster."""
    publisher = await bus.Bus.connect(cluster.url, "cluster-publisher", replicas=3)
    consumer = await bus.Bus.connect(cluster.url, "cluster-consumer", replicas=3)
    yield publisher, consumer
    await consumer.close()
    await publisher.close()


def event(organization: str) -> events_pb2.SubscriptionCreated:
    return events_pb2.SubscriptionCreated(event_id=new_id("evt"), organization_id=organization)


async def test_every_acknowledged_message_is_consumed_though_the_stream_leader_is_killed(
    cluster: NatsCluster, buses: tuple[bus.Bus, bus.Bus], infra: Infra
):
    publisher, consumer = buses
    stream = bus.Stream("CLUSTER_LOAD", ("cluster.>",))
    await publisher.ensure_stream(stream)
    info = await publisher.js.stream_info(stream.name)
    assert info.config.num_replicas == 3 and len(info.cluster.replicas) == 2

    engine = db.create_engine(await infra.database(unique("cluster_outbox")), pool_size=4)
    metadata = MetaData()
    table = outbox.outbox_table(metadata)
    async with engine.begin() as connection:
        await connection.run_sync(metadata.create_all)
    sessions = db.sessions(engine)
    relay = outbox.OutboxRelay(sessions, table, publisher, poll_seconds=0.1)

    consumed: list[str] = []

    async def handler(subject: str, payload: bytes) -> None:
        consumed.append(events_pb2.SubscriptionCreated.FromString(payload).event_id)

    await consumer.consume(stream, "cluster-load", None, handler, batch=100, in_order=False, ack_wait=5.0)
    relay.start()

    enqueued: list[str] = []  # through the outbox: published once the relay marks them
    acknowledged: list[str] = []  # published directly: acknowledged once publish returned
    failed: list[BaseException] = []

    async def through_outbox(rounds: int) -> None:
        for _ in range(rounds):
            events = [event("org_outbox") for _ in range(25)]
            async with sessions() as session, session.begin():
                await outbox.enqueue(session, table, "cluster.v1.outboxed", *events)
            enqueued.extend(e.event_id for e in events)
            relay.wake()
            await asyncio.sleep(0.05)

    async def directly(rounds: int) -> None:
        for _ in range(rounds):
            events = [event("org_direct") for _ in range(25)]
            results = await asyncio.gather(
                *(
                    publisher.publish("cluster.v1.direct", e.SerializeToString(), e.event_id, "org_direct")
                    for e in events
                ),
                return_exceptions=True,
            )
            for e, result in zip(events, results, strict=True):
                if isinstance(result, BaseException):
                    failed.append(result)
                else:
                    acknowledged.append(e.event_id)
            await asyncio.sleep(0.05)

    async def kill_the_leader() -> str:
        await eventually(lambda: _has_consumed(consumed, 300), timeout=30)
        leader = (await publisher.js.stream_info(stream.name)).cluster.leader
        node = next(node for node in cluster.nodes if node.server_name == leader)
        assert node.process is not None
        node.process.send_signal(signal.SIGKILL)
        node.process.wait()
        return str(leader)

    try:
        killed, *_ = await asyncio.gather(kill_the_leader(), through_outbox(40), directly(40))

        async def all_published() -> None:
            async with sessions() as session:
                pending = await session.scalar(select(func.count()).where(table.c.publish_time.is_(None)))
            assert pending == 0

        await eventually(all_published, timeout=30)
        published = set(enqueued) | set(acknowledged)

        async def all_consumed() -> None:
            assert published <= set(consumed)

        await eventually(all_consumed, timeout=30)
        # Nothing lost, nothing extra; a message appears twice only where JetStream redelivered it.
        assert set(consumed) == published and len(published) == 2000 - len(failed)
        assert failed == []  # the publishes retried through the election of a new leader
        new_leader = (await publisher.js.stream_info(stream.name)).cluster.leader
        assert new_leader != killed
    finally:
        await relay.stop()
        await engine.dispose()


async def _has_consumed(consumed: list[str], count: int) -> None:
    assert len(consumed) >= count


async def test_a_stream_made_with_one_replica_gets_the_replicas_bxb_nats_replicas_asks_for(
    cluster: NatsCluster, monkeypatch: pytest.MonkeyPatch
):
    stream = bus.Stream("CLUSTER_GROWING", ("growing.>",))
    single = await bus.Bus.connect(cluster.url, "single", replicas=1)
    try:
        await single.ensure_stream(stream)
        assert (await single.js.stream_info(stream.name)).config.num_replicas == 1
        await single.publish("growing.v1.before", b"kept", "growing-1")
        await single.js.add_consumer(stream.name, ConsumerConfig(durable_name="grower", ack_policy=AckPolicy.EXPLICIT))
    finally:
        await single.close()

    # As a service is configured: the nodes, the credentials and the replicas each in its variable.
    monkeypatch.setenv("BXB_NATS_REPLICAS", "3")
    monkeypatch.setenv("BXB_NATS_USER", NATS_USER)
    monkeypatch.setenv("BXB_NATS_PASSWORD", cluster.nodes[0].password)
    replicated = await bus.Bus.connect(cluster.address, "replicated")
    try:
        assert replicated.replicas == 3
        await replicated.ensure_stream(stream)

        async def three_copies() -> None:
            try:
                info = await replicated.js.stream_info(stream.name)
                consumer = await replicated.js.consumer_info(stream.name, "grower")
            except TimeoutError as slow:  # the stream's leader busy catching its new replicas up
                raise AssertionError("no stream info yet") from slow
            assert info.config.num_replicas == 3 and len(info.cluster.replicas or []) == 2
            assert all(peer.current for peer in info.cluster.replicas) and info.state.messages == 1
            assert consumer.cluster is not None and len(consumer.cluster.replicas or []) == 2  # its consumers follow

        await eventually(three_copies, timeout=20)
    finally:
        await replicated.close()


def test_a_cluster_whose_nodes_cannot_reach_each_other_never_gets_ready(tmp_path: Path):
    cluster = NatsCluster(tmp_path / "cluster", durable=False)
    for node in cluster.nodes:  # each routed to where no node listens: no quorum, no meta leader
        assert node.route is not None
        node.route = Route(node.route.cluster, node.route.port, (f"nats-route://127.0.0.1:{free_port()}",))
    try:
        with pytest.raises(
            TimeoutError, match=r"NATS cluster without a JetStream meta leader followed by all after 1\.5s"
        ):
            cluster.start(timeout=1.5)
        cluster.nodes[0].monitor_port = free_port()  # one not answering is skipped
        assert (cluster.meta_leader(), cluster.ready()) == ("", False)
    finally:
        cluster.stop()
    assert cluster.meta_leader() == ""  # none running


@pytest.mark.timeout(240)
async def test_the_stack_on_the_cluster_bills_every_event_though_a_node_dies(
    cluster: NatsCluster, infra: Infra, tmp_path: Path
):
    """make run on external PostgreSQL and the cluster (its nodes, login and
    three replicas from the environment): events sent before and after the
    node leading metering's queue is killed are all counted, and invoicing
    still hears of new subscriptions."""
    home = tmp_path / "home"
    external = {f"BXB_{db.upper()}_DATABASE_URL": await infra.database(unique(f"nc_{db}")) for db in DATABASES}
    env = stack_env(
        home,
        BXB_API_KEY=KEY,
        BXB_NATS_URL=cluster.address,
        BXB_NATS_USER=NATS_USER,
        BXB_NATS_PASSWORD=cluster.nodes[0].password,
        BXB_NATS_REPLICAS="3",
        **external,
    )
    stack = Stack(home, env)
    watcher = await bus.Bus.connect(cluster.url, "stack-watcher")
    try:
        url, _ = await stack.start()
        assert stack.nats is None  # the cluster, not an embedded server
        async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {KEY}"}, timeout=60) as http:
            await walkthrough(http)
            await send_events(http)
            draft = await eventually(lambda: september_invoice(http), timeout=30)
            assert draft["total_amount_cents"] == 234
            queue = await watcher.js.stream_info(intake.STREAM.name)
            assert queue.config.num_replicas == 3
            leader = next(node for node in cluster.nodes if node.server_name == queue.cluster.leader)
            assert leader.process is not None
            leader.process.send_signal(signal.SIGKILL)
            leader.process.wait()

            for n in range(20):  # 2,000 more tokens, each event answered 200 though the queue's leader is gone
                body = {
                    "transaction_id": f"txn_after_{n}",
                    "customer_id": "cus_9a4b2",
                    "code": "api_requests",
                    "timestamp": "2026-09-20T00:00:00Z",
                    "properties": {"tokens": 100},
                }
                response = await http.post("/v1/events", json=body)
                assert response.status_code == 200, response.text

            async def all_counted() -> None:
                assert (await september_invoice(http))["total_amount_cents"] == 434

            await eventually(all_counted, timeout=60)
            await walkthrough_subscription(http, "cus_after")  # announced by catalog's outbox over the cluster
            assert (await eventually(lambda: september_invoice(http, "cus_after"), timeout=30))[
                "total_amount_cents"
            ] == 0
    finally:
        await watcher.close()
        await stack.stop()


async def walkthrough_subscription(http: httpx.AsyncClient, customer: str) -> None:
    sub = await http.post(
        "/v1/subscriptions", json={"customer_id": customer, "plan_code": "payg", "start_date": "2026-09-01T00:00:00Z"}
    )
    assert sub.status_code == 201, sub.text
