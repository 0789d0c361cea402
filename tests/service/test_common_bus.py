"""The NATS JetStream bus every service publishes and consumes through:
streams, publishing with ids, durable consumers that ack on success,
redeliver a failure later without holding up the messages behind it, and
park what can never be handled."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time

import pytest
from google.protobuf import empty_pb2

from services.common import bus
from tests.conftest import Infra, Parking, eventually, unique


@pytest.fixture
async def stream_bus(infra: Infra):
    connected = await bus.Bus.connect(infra.nats.url, "bus-test")
    suffix = unique("bus")
    stream = bus.Stream(suffix.upper(), (f"test.{suffix}.>",))
    yield connected, stream, f"test.{suffix}.v1"
    await connected.js.delete_stream(stream.name)
    await connected.close()


async def test_ensure_stream_creates_once_and_keeps_an_existing_stream(stream_bus):
    b, stream, prefix = stream_bus
    await b.ensure_stream(stream)
    info = await b.js.stream_info(stream.name)
    assert info.config.subjects == list(stream.subjects)
    assert info.config.duplicate_window == 120.0
    await b.publish(f"{prefix}.kept", b"x", unique("m"))
    await b.ensure_stream(stream)  # every service start calls it again
    again = await b.js.stream_info(stream.name)
    assert (again.config.subjects, again.state.messages) == (list(stream.subjects), 1)
    assert again.created == info.created


async def test_publish_sets_the_message_id_and_organization_headers(stream_bus):
    b, stream, prefix = stream_bus
    await b.ensure_stream(stream)
    await b.publish(f"{prefix}.with_org", b"a", "id-a", organization_id="org_a")
    await b.publish(f"{prefix}.without_org", b"b", "id-b")
    await b.publish(f"{prefix}.with_org", b"a-again", "id-a", organization_id="org_a")  # a retried publish
    sub = await b.js.pull_subscribe(stream.subjects[0], stream=stream.name)
    messages = await sub.fetch(10, timeout=1)
    await sub.unsubscribe()
    assert [(m.subject, m.data) for m in messages] == [(f"{prefix}.with_org", b"a"), (f"{prefix}.without_org", b"b")]
    assert messages[0].headers == {bus.MSG_ID: "id-a", bus.ORG_HEADER: "org_a"}
    assert messages[1].headers == {bus.MSG_ID: "id-b"}


async def consumer_state(b: bus.Bus, stream: bus.Stream, durable: str) -> tuple[int, int, int]:
    info = await b.js.consumer_info(stream.name, durable)
    return info.delivered.stream_seq, info.num_pending, info.num_ack_pending


async def test_consume_acks_what_the_handler_accepts(stream_bus):
    b, stream, prefix = stream_bus
    seen = []

    async def handler(subject: str, payload: bytes) -> None:
        seen.append((subject, payload))

    await b.consume(stream, "acker", f"{prefix}.>", handler)
    for i in range(3):
        await b.publish(f"{prefix}.n{i}", str(i).encode(), unique("m"))

    async def all_acked():
        assert await consumer_state(b, stream, "acker") == (3, 0, 0)

    await eventually(all_acked)
    assert seen == [(f"{prefix}.n{i}", str(i).encode()) for i in range(3)]


async def test_a_failing_handler_gets_the_message_again_until_it_succeeds(stream_bus, caplog):
    b, stream, prefix = stream_bus
    attempts = []

    async def flaky(subject: str, payload: bytes) -> None:
        attempts.append(payload)
        if len(attempts) == 1:
            raise RuntimeError("database briefly unavailable")

    with caplog.at_level(logging.ERROR, logger="bxb.bus"):
        await b.consume(stream, "flaky", f"{prefix}.>", flaky)
        await b.publish(f"{prefix}.once", b"payload", unique("m"))

        async def acked():
            assert await consumer_state(b, stream, "flaky") == (1, 0, 0)

        await eventually(acked, timeout=15)
    assert attempts == [b"payload", b"payload"]
    [record] = [r for r in caplog.records if r.name == "bxb.bus"]
    assert record.getMessage() == f"handler failed for {prefix}.once (attempt 1); redelivering"


async def test_a_durable_consumer_resumes_where_it_stopped(stream_bus, infra: Infra):
    b, stream, prefix = stream_bus
    first_run, second_run = [], []

    async def record_first(subject: str, payload: bytes) -> None:
        first_run.append(payload)

    async def record_second(subject: str, payload: bytes) -> None:
        second_run.append(payload)

    first = await bus.Bus.connect(infra.nats.url, "bus-test-first")
    await first.consume(stream, "durable", f"{prefix}.>", record_first)
    await b.publish(f"{prefix}.e", b"1", unique("m"))
    await eventually(lambda: _equal(first_run, [b"1"]))
    await first.close()  # the consuming process stops; events keep coming
    assert first.nc.is_closed
    # Its last pull request lingers on the server until it expires (the fetch
    # timeout); a message arriving before that would wait out ack_wait.
    await asyncio.sleep(1.2)
    await b.publish(f"{prefix}.e", b"2", unique("m"))
    await asyncio.sleep(0.3)
    assert first_run == [b"1"]

    second = await bus.Bus.connect(infra.nats.url, "bus-test-second")
    try:
        await second.consume(stream, "durable", f"{prefix}.>", record_second)
        await b.publish(f"{prefix}.e", b"3", unique("m"))
        await eventually(lambda: _equal(second_run, [b"2", b"3"]))
    finally:
        await second.close()


async def _equal(actual, expected) -> None:
    assert actual == expected


async def test_a_slow_handler_keeps_its_message_past_the_ack_wait(stream_bus):
    """In progress is said every third of the ack wait, so a handler that is
    still working is never raced by a redelivery to the other consumer."""
    b, stream, prefix = stream_bus
    deliveries = []

    async def slow(subject: str, payload: bytes) -> None:
        deliveries.append(payload)
        await asyncio.sleep(2.5)

    for _ in range(2):  # two processes pulling from one durable consumer
        await b.consume(stream, "slow", f"{prefix}.>", slow, in_order=False, ack_wait=1.0)
    await b.publish(f"{prefix}.slow", b"work", unique("m"))

    async def acked():
        assert await consumer_state(b, stream, "slow") == (1, 0, 0)

    await eventually(acked, timeout=15)
    assert deliveries == [b"work"]
    info = await b.js.consumer_info(stream.name, "slow")
    assert (info.config.ack_wait, info.num_redelivered) == (1.0, 0)


async def test_stopping_a_consumer_stops_the_handler_it_is_running(stream_bus, infra: Infra):
    b, stream, prefix = stream_bus
    started, stopped = asyncio.Event(), asyncio.Event()

    async def endless(subject: str, payload: bytes) -> None:
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            stopped.set()
            raise

    consumer = await bus.Bus.connect(infra.nats.url, "bus-stopping")
    await consumer.consume(stream, "endless", f"{prefix}.>", endless, in_order=False)
    await b.publish(f"{prefix}.work", b"work", unique("m"))
    await asyncio.wait_for(started.wait(), 10)
    await consumer.close()
    await asyncio.wait_for(stopped.wait(), 5)


async def test_an_unordered_consumer_lingers_so_a_trickle_is_handled_together(stream_bus):
    b, stream, prefix = stream_bus
    started, seen_together = [], []

    async def handler(subject: str, payload: bytes) -> None:
        started.append(payload)
        await asyncio.sleep(0)  # the other handlers of the same fetch start meanwhile
        seen_together.append(list(started))

    await b.consume(stream, "lingering", f"{prefix}.>", handler, batch=10, in_order=False, linger=0.5)
    await b.publish(f"{prefix}.work", b"1", unique("m"))
    await asyncio.sleep(0.2)
    await b.publish(f"{prefix}.work", b"2", unique("m"))

    async def handled_together():
        assert seen_together == [[b"1", b"2"], [b"1", b"2"]]
        assert await consumer_state(b, stream, "lingering") == (2, 0, 0)

    await eventually(handled_together)


bus_test_message = empty_pb2.Empty  # any message: b"garbage" does not decode as one


async def test_an_existing_stream_takes_the_subjects_it_should_have_now(stream_bus):
    b, stream, prefix = stream_bus
    await b.ensure_stream(stream)
    await b.publish(f"{prefix}.kept", b"x", unique("m"))
    wider = bus.Stream(stream.name, (*stream.subjects, f"other.{prefix}.>"))
    await b.ensure_stream(wider)  # a newer version's subjects
    info = await b.js.stream_info(stream.name)
    assert (info.config.subjects, info.state.messages) == (list(wider.subjects), 1)


def test_a_failed_message_waits_twice_as_long_each_time_up_to_the_cap():
    delays = [bus.retry_delay(attempt) for attempt in (1, 2, 3, 9, 10, 1000)]
    expected = [1, 2, 4, 256, 300, 300]
    assert all(0.9 * e <= d <= 1.1 * e for d, e in zip(delays, expected, strict=True)), delays
    assert 9 <= bus.retry_delay(5, cap=10) <= 11


async def test_a_poison_message_is_parked_at_once_and_the_next_ones_go_on(stream_bus):
    b, stream, prefix = stream_bus
    parking, handled = Parking(), []

    async def handler(subject: str, payload: bytes) -> None:
        if payload == b"poison":
            raise bus.Poison("this can never be handled")
        if payload == b"garbage":
            bus_test_message.FromString(payload)  # raises DecodeError
        handled.append(payload)

    await b.consume(stream, "poisoned", f"{prefix}.>", handler, park=parking, max_attempts=5)
    for payload in (b"poison", b"garbage", b"fine"):
        await b.publish(f"{prefix}.e", payload, unique("m"), organization_id="org_p")

    async def settled():
        assert handled == [b"fine"]
        assert [(p.payload, p.attempts, p.organization_id) for p in parking.parked] == [
            (b"poison", 1, "org_p"),
            (b"garbage", 1, "org_p"),
        ]
        assert await consumer_state(b, stream, "poisoned") == (3, 0, 0)

    await eventually(settled)
    first = parking.parked[0]
    assert (first.stream, first.durable, first.subject, first.sequence) == (stream.name, "poisoned", f"{prefix}.e", 1)
    assert first.error == "Poison: this can never be handled"
    assert parking.parked[1].error.startswith("DecodeError")


async def test_a_failing_message_is_retried_later_then_parked_and_holds_up_nothing(stream_bus):
    b, stream, prefix = stream_bus
    parking, handled, tries = Parking(), [], []

    async def handler(subject: str, payload: bytes) -> None:
        if payload == b"bad":
            tries.append(time.monotonic())
            raise RuntimeError("always fails")
        handled.append(payload)

    await b.consume(stream, "retrying", f"{prefix}.>", handler, park=parking, max_attempts=3)
    await b.publish(f"{prefix}.e", b"bad", unique("m"))
    await b.publish(f"{prefix}.e", b"next", unique("m"))
    await eventually(lambda: _equal(handled, [b"next"]), timeout=2)  # not behind the failing one

    async def parked():
        assert [(p.payload, p.attempts) for p in parking.parked] == [(b"bad", 3)]
        assert await consumer_state(b, stream, "retrying") == (2, 0, 0)

    await eventually(parked, timeout=15)
    gaps = [later - earlier for earlier, later in itertools.pairwise(tries)]
    assert len(tries) == 3 and 0.8 < gaps[0] < gaps[1], gaps  # about 1 s, then about 2 s
    assert parking.parked[0].error == "RuntimeError: always fails"


async def test_a_message_that_cannot_be_parked_stays_in_the_stream(stream_bus):
    b, stream, prefix = stream_bus
    parking = Parking()
    parking.broken = True

    async def poisoned(subject: str, payload: bytes) -> None:
        raise bus.Poison("never")

    await b.consume(stream, "unparked", f"{prefix}.>", poisoned, park=parking)
    await b.publish(f"{prefix}.e", b"p", unique("m"))

    async def redelivered():
        info = await b.js.consumer_info(stream.name, "unparked")
        assert info.num_redelivered >= 1 and info.num_ack_pending == 1

    await eventually(redelivered, timeout=5)
    parking.broken = False

    async def parked():
        assert [p.payload for p in parking.parked] == [b"p"]
        assert await consumer_state(b, stream, "unparked") == (1, 0, 0)

    await eventually(parked, timeout=10)
