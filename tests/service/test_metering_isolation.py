"""No event and no queued message holds metering up: a batch spanning
decades is stored, an event ClickHouse refuses is left out and listed with
the rejected events, a message that does not decode is parked, and a usage
query waits only for its own organization's queued events, at a bounded
cost in NATS requests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest

from bxb.metering.v1 import events_pb2
from bxb.metering.v1 import usage_events_pb2 as pb
from deploy.embedded import Nats
from services.common import bus
from services.common.timestamps import to_proto, utcnow
from services.metering import backlog as backlog_module
from services.metering import intake as intake_module
from services.metering.backlog import Backlog, IngestionBacklogged, IngestionBehind
from services.metering.clickhouse import ClickHouse
from services.metering.intake import Intake
from services.metering.rejections import Rejections
from services.metering.store import Event, EventStore, Unstorable, partition_chunks
from tests.conftest import Infra, Tenant, eventually, unique

NOW = datetime(2026, 4, 2, tzinfo=UTC)


def monthly(months: int, key: str = "m") -> list[dict]:
    """One event on the 15th of each month from 2010-01, `months` of them."""
    return [
        {
            "idempotency_key": f"{key}{n}",
            "customer_id": "cust_acme",
            "metric_key": "api_calls",
            "value": "1",
            "timestamp": f"{2010 + n // 12}-{n % 12 + 1:02d}-15T00:00:00Z",
        }
        for n in range(months)
    ]


async def compute(tenant: Tenant, start: str, end: str) -> tuple[int, dict]:
    body = {"customer_id": "cust_acme", "metric_key": "api_calls", "period_start": start, "period_end": end}
    response = await tenant.http.post("/v1/usage/compute", json=body)
    return response.status_code, response.json()


async def test_a_batch_spanning_101_months_is_stored_and_no_one_waits_on_it(tenant: Tenant, make_tenant):
    metric = {"key": "api_calls", "aggregation_type": "sum", "value_type": "integer"}
    other = await make_tenant()
    try:
        for t in (tenant, other):
            assert (await t.http.post("/v1/metrics", json=metric)).status_code == 201
        # Once before, so the timed read below is the other organization's read alone, not
        # its first (the metric's definition fetched from the catalog, connections opened).
        assert (await compute(other, "2026-03-01T00:00:00Z", "2026-04-01T00:00:00Z"))[0] == 200
        response = await tenant.http.post("/v1/events/batch", json={"events": monthly(101)})
        assert [r["status"] for r in response.json()["results"]] == [202] * 101
        started = asyncio.get_running_loop().time()
        status, _ = await compute(other, "2026-03-01T00:00:00Z", "2026-04-01T00:00:00Z")
        assert status == 200 and asyncio.get_running_loop().time() - started < 2
        status, counted = await compute(tenant, "2010-01-01T00:00:00Z", "2019-01-01T00:00:00Z")
        assert (status, counted["value"], counted["events_count"]) == (200, "101", 101)
    finally:
        await other.http.aclose()


def test_an_insert_touches_at_most_100_months():
    rows = [{"timestamp": f"{2000 + n // 12}-{n % 12 + 1:02d}-15 00:00:00.000", "n": n} for n in range(250)]
    rows.append({"timestamp": "2000-01-20 00:00:00.000", "n": 250})  # a second row of the first month
    chunks = partition_chunks(rows)
    assert [len({row["timestamp"][:7] for row in chunk}) for chunk in chunks] == [100, 100, 50]
    assert sorted(row["n"] for chunk in chunks for row in chunk) == list(range(251))
    assert partition_chunks([]) == []


async def test_an_event_before_1970_is_refused_naming_the_field(tenant: Tenant):
    event = {**monthly(1)[0], "timestamp": "1969-12-31T23:59:59Z"}
    response = await tenant.http.post("/v1/events", json=event)
    error = response.json()["error"]
    assert (response.status_code, error["field"], error["reason"]) == (400, "timestamp", "TIMESTAMP_OUT_OF_RANGE")
    assert "1970-01-01T00:00:00Z" in error["message"]


@pytest.fixture
async def guarded(clickhouse: ClickHouse) -> EventStore:
    """A store whose ClickHouse refuses events of customer "poison" (a table
    constraint): an event that can never be stored, whatever else is written."""
    store = EventStore(clickhouse, unique("bxb_guarded"))
    await store.create_schema()
    await clickhouse.execute(f"ALTER TABLE {store.db}.events ADD CONSTRAINT no_poison CHECK customer_id != 'poison'")
    return store


def event(txn: str, customer: str = "cus_1") -> Event:
    return Event(txn, customer, "api", datetime(2026, 3, 1, tzinfo=UTC), {"v": "1"})


async def test_an_event_clickhouse_refuses_is_left_out_and_the_rest_stored(guarded: EventStore, org: str):
    batch = [event("a"), event("b"), event("bad", customer="poison"), event("c"), event("d")]
    other_call = [event("e")]
    first, second = await asyncio.gather(guarded.ingest(org, batch, NOW), guarded.ingest(org, other_call, NOW))
    assert first[:2] == [True, True] and first[3:] == [True, True] and second == [True]
    assert isinstance(first[2], Unstorable) and "no_poison" in first[2].reason
    counted = await guarded.aggregate(org, "cus_1", "api", "count", "", datetime(2026, 3, 1, tzinfo=UTC), NOW)
    assert counted.count == 5
    assert await guarded.ingest(org, [event("a"), event("bad", customer="poison")], NOW) == [False, first[2]]


async def test_the_queue_lists_an_unstorable_event_as_rejected_and_acknowledges_it(
    guarded: EventStore, clickhouse: ClickHouse, org: str, infra: Infra
):
    rejections = Rejections(clickhouse, guarded.db)
    intake = Intake(guarded, rejections, bus.Bus(infra.nats.url, unique("unopened")))  # handed the message directly
    message = events_pb2.EventsAccepted(
        event_id="evb_1",
        organization_id=org,
        occur_time=to_proto(utcnow()),  # rejections are kept 90 days from now
        events=[
            pb.UsageEvent(transaction_id=t, customer_id=c, code="api", timestamp=to_proto(NOW))
            for t, c in (("ok", "cus_1"), ("bad", "poison"))
        ],
    )
    await intake.store_message(intake_module.subject_of(org), message.SerializeToString())  # no exception: acked
    [listed] = await rejections.list(org, "", "", 0, 10)
    assert (listed.event.transaction_id, listed.error.reason, listed.stored) == ("bad", "UNSTORABLE", False)
    assert "no_poison" in listed.error.message


async def test_an_unreadable_queued_message_is_parked_with_the_organization_s_rejections(
    clickhouse: ClickHouse, org: str, infra: Infra
):
    db = unique("bxb_parked")
    store = EventStore(clickhouse, db)
    await store.create_schema()
    rejections = Rejections(clickhouse, db)
    parked = bus.Parked("S", "D", 7, intake_module.subject_of(org), b"\xffnot a message", org, 1, "DecodeError: bad")
    await Intake(store, rejections, bus.Bus(infra.nats.url, unique("unopened"))).park(parked)
    [listed] = await rejections.list(org, "", "", 0, 10)
    assert (listed.error.reason, listed.stored) == ("UNREADABLE_MESSAGE", False)
    assert listed.error.message == "a queued message could not be read: DecodeError: bad"
    assert listed.body == "/25vdCBhIG1lc3NhZ2U="  # the payload, base64


async def test_a_garbage_message_on_the_queue_is_parked_and_blocks_nobody(tenant: Tenant, infra: Infra):
    connection = await bus.Bus.connect(infra.nats.url, "garbage")
    try:
        subject = intake_module.subject_of(tenant.organization_id)
        await connection.publish(subject, b"\xff\xff garbage", unique("m"), tenant.organization_id)
    finally:
        await connection.close()
    metric = {"key": "api_calls", "aggregation_type": "sum", "value_type": "integer"}
    assert (await tenant.http.post("/v1/metrics", json=metric)).status_code == 201
    status, _ = await compute(tenant, "2026-03-01T00:00:00Z", "2026-04-01T00:00:00Z")
    assert status == 200  # the message was parked: the organization's backlog is empty
    listed = (await tenant.http.get("/v1/events", params={"status": "rejected"})).json()["events"]
    assert [e["reason"] for e in listed] == ["UNREADABLE_MESSAGE"]


def test_a_call_s_events_are_queued_in_messages_far_below_the_nats_limit():
    big = {f"k{i}": "x" * 1000 for i in range(15)}  # about 15 KB of properties
    events = [pb.UsageEvent(transaction_id=f"t{n}", customer_id="c", code="api", properties=big) for n in range(500)]
    queued = intake_module.messages("org_1", events, NOW)
    assert len(queued) > 1 and all(m.ByteSize() <= intake_module.MAX_MESSAGE_BYTES for m in queued)
    assert [e.transaction_id for m in queued for e in m.events] == [f"t{n}" for n in range(500)]
    assert len({m.event_id for m in queued}) == len(queued)


def test_an_organization_s_subject_is_its_id_or_a_digest_of_it():
    assert intake_module.subject_of("org_abc-1") == "bxb.metering.v1.events_accepted.org_abc-1"
    odd = intake_module.subject_of("org a.b>")
    assert odd.startswith("bxb.metering.v1.events_accepted.x-") and " " not in odd and odd.count(".") == 4


class CountingBacklog(Backlog):
    """A backlog counting the NATS reads of the first message left."""

    looks = 0

    async def first(self, subject: str, after: int = 0) -> float:
        self.looks += 1
        return await super().first(subject, after)


@dataclass
class Queue:
    """A work-queue stream of its own, as the intake's is, and a bus on it."""

    bus: bus.Bus
    stream: str
    prefix: str

    def subject(self, org: str) -> str:
        return f"{self.prefix}.{org}"

    async def send(self, org: str, payload: bytes = b"x") -> None:
        await self.bus.publish(self.subject(org), payload, unique("m"), org)

    async def take(self, org: str) -> None:
        """Stores (acknowledges) the organization's first message, as the consumer would."""
        sub = await self.bus.js.pull_subscribe(self.subject(org), unique("store"), stream=self.stream)
        [msg] = await sub.fetch(1, timeout=2)
        await msg.ack()


@pytest.fixture
async def queue(infra: Infra) -> AsyncIterator[Queue]:
    connection = await bus.Bus.connect(infra.nats.url, "backlog")
    prefix = unique("queue")
    stream = bus.Stream(prefix.upper(), (f"{prefix}.>",), work_queue=True)
    await connection.ensure_stream(stream)
    yield Queue(connection, stream.name, prefix)
    await connection.js.delete_stream(stream.name)
    await connection.close()


async def test_waiters_on_one_organization_share_one_watch(queue: Queue):
    """With no process consuming, 200 readers of one organization wait on
    one message: each asks NATS once, and one watch looks for all of them."""
    await queue.send("org_w")
    backlog = CountingBacklog(queue.bus.js, queue.stream, timeout=0.5)
    started = asyncio.get_running_loop().time()
    waits = await asyncio.gather(*(backlog.settled(queue.subject("org_w")) for _ in range(200)), return_exceptions=True)
    elapsed = asyncio.get_running_loop().time() - started
    assert all(isinstance(w, IngestionBehind) for w in waits)
    assert 200 <= backlog.looks <= 200 + 2 * elapsed / 0.05 + 10, backlog.looks
    await backlog.settled(queue.subject("org_other"))  # nothing of its own: no wait

    async def watch_ended():
        assert backlog._watches == {} and backlog._waiting == {}

    await eventually(watch_ended, timeout=1)


async def test_a_waiter_is_released_once_its_messages_are_stored(queue: Queue):
    await queue.send("org_r")
    backlog = Backlog(queue.bus.js, queue.stream, timeout=10)
    waiting = asyncio.create_task(backlog.settled(queue.subject("org_r")))
    await asyncio.sleep(0.2)
    assert not waiting.done()
    await queue.take("org_r")
    await queue.send("org_r", b"later")  # queued after the wait began
    await asyncio.wait_for(waiting, 2)


class StutteringBacklog(Backlog):
    """A backlog whose second read of NATS fails, as while NATS restarts."""

    reads = 0

    async def first(self, subject: str, after: int = 0) -> float:
        self.reads += 1
        if self.reads == 2:
            raise ConnectionError("nats restarting")
        return await super().first(subject, after)


async def test_a_watch_rides_out_a_failed_read(queue: Queue):
    await queue.send("org_s")
    backlog = StutteringBacklog(queue.bus.js, queue.stream, timeout=10)
    waiting = asyncio.create_task(backlog.settled(queue.subject("org_s")))
    await queue.take("org_s")
    await asyncio.wait_for(waiting, 2)
    assert backlog.reads >= 3


async def test_an_organization_s_lag_is_how_long_its_oldest_queued_message_waits(queue: Queue, monkeypatch):
    backlog = Backlog(queue.bus.js, queue.stream, timeout=1)
    assert await backlog.lag(queue.subject("org_l")) == 0.0
    await queue.send("org_l")
    assert await backlog.lag(queue.subject("org_l")) == 0.0  # read a moment ago: taken as read
    await asyncio.sleep(0.3)
    assert 0.25 < await backlog.lag(queue.subject("org_l")) < 5
    monkeypatch.setattr(backlog_module, "AGES_KEPT", 1)
    assert await backlog.lag(queue.subject("org_none")) == 0.0
    assert list(backlog._ages) == [queue.subject("org_none")]  # the remembered lags are bounded


async def test_events_of_an_organization_too_far_behind_are_refused_until_it_catches_up(
    tmp_path, clickhouse: ClickHouse, monkeypatch
):
    """With no process consuming, an organization's queue only ages."""
    monkeypatch.setattr(intake_module, "MAX_LAG", 0.2)
    nats = Nats(tmp_path / "nats", durable=False)
    nats.start()
    connection = await bus.Bus.connect(nats.url, "lagging")
    try:
        await connection.ensure_stream(intake_module.STREAM)
        lagging = EventStore(clickhouse, "bxb_lagging"), Rejections(clickhouse, "bxb_lagging")
        intake = Intake(*lagging, connection, settle_timeout=1)
        event = pb.UsageEvent(transaction_id="l1", customer_id="c", code="api", timestamp=to_proto(utcnow()))
        await intake.queue("org_slow", [event], utcnow())
        await asyncio.sleep(0.5)
        with pytest.raises(IngestionBacklogged) as refused:
            await intake.queue("org_slow", [event], utcnow())
        assert refused.value.message.endswith(" s behind); retry in a moment")
        await intake.queue("org_other", [event], utcnow())  # another organization's queue is not behind
    finally:
        await connection.close()
        nats.stop()
