"""The sender on a payments database of its own (no other sender there), as
one payments process runs it: its slots per process and per sink, leases
handed back on stop or left to run out when the database is unreachable, a
delivery canceled or removed while in flight, failures that send nothing
(an address refused at send time, a secret or key that does not open, no
such vendor, a deadline, a refused connection), and integration deliveries."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from deploy.embedded import free_port
from services.common import db, sealing
from services.common.ids import new_id
from services.common.timestamps import utcnow
from services.payments import webhook_sink
from services.payments.announcing import Announcer, Draft
from services.payments.models import DELIVERY_CANCELED, Delivery, DeliveryAttempt, Integration, WebhookEndpoint
from services.payments.sender import INTEGRATION_KEY_PURPOSE, Sender
from services.payments.server import MIGRATIONS
from services.payments.sinks import Account, Outgoing, Sent, Sink
from services.payments.webhook_endpoints import SECRET_PURPOSE
from services.payments.webhook_signing import new_secret
from tests.conftest import Infra, eventually, unique
from tests.webhook_receiver import Receiver

ORG = "org_sender"


@dataclass
class OwnDb:
    sessions: async_sessionmaker[AsyncSession]
    announcer: Announcer
    http: httpx.AsyncClient
    senders: list[Sender] = field(default_factory=list)

    def sender(self, vendors: dict[str, Any] | None = None, http: httpx.AsyncClient | None = None, **options) -> Sender:
        settings = {
            "webhook_timeout": 2.0,
            "retry_schedule": (0.1, 0.2),
            "disable_after": 3600.0,
            "interval": 0.05,
            "concurrency": 8,
            "sink_concurrency": 2,
            "lease": 1.0,
        } | options
        sender = Sender(self.sessions, self.announcer, vendors or {}, http or self.http, **settings)
        self.senders.append(sender)
        return sender

    async def endpoint(self, url: str, secret: str = "", sealed: str = "") -> str:
        endpoint_id = new_id("we")
        async with self.sessions() as session, session.begin():
            session.add(
                WebhookEndpoint(
                    id=endpoint_id,
                    organization_id=ORG,
                    url=url,
                    event_types=[],
                    enabled=True,
                    secret_sealed=sealed or sealing.seal(secret or new_secret(), ORG, SECRET_PURPOSE),
                )
            )
        return endpoint_id

    async def integration(self, provider: str, sealed: str = "", org: str = ORG) -> str:
        integration_id = new_id("int")
        async with self.sessions() as session, session.begin():
            session.add(
                Integration(
                    id=integration_id,
                    organization_id=org,
                    provider=provider,
                    api_key_sealed=sealed or sealing.seal("key_123", ORG, INTEGRATION_KEY_PURPOSE),
                    api_key_hint="key_...123",
                    data_source_id="ds_1",
                )
            )
        return integration_id

    async def announce(
        self, customer_id: str, endpoint_id: str = "", integration_id: str = "", org: str = ORG, **data: Any
    ) -> str:
        now = utcnow()
        draft = Draft(
            org,
            "invoice.paid",
            customer_id,
            new_id("src"),
            now,
            dict(data),
            endpoint_id=endpoint_id,
            integration_id=integration_id,
        )
        async with self.sessions() as session, session.begin():
            [delivery_id] = await self.announcer.announce(session, draft, now)
        return delivery_id

    async def delivery(self, delivery_id: str) -> Delivery:
        async with self.sessions() as session:
            found = await session.get(Delivery, delivery_id)
        assert found is not None
        return found

    async def attempts(self, delivery_id: str) -> list[DeliveryAttempt]:
        async with self.sessions() as session:
            query = select(DeliveryAttempt).where(DeliveryAttempt.delivery_id == delivery_id)
            return list(await session.scalars(query.order_by(DeliveryAttempt.id)))

    async def integration_row(self, integration_id: str) -> Integration:
        async with self.sessions() as session:
            found = await session.get(Integration, integration_id)
        assert found is not None
        return found


@pytest.fixture
async def own_db(infra: Infra) -> AsyncIterator[OwnDb]:
    url = await infra.database(unique("hooks"))
    await db.migrate(url, MIGRATIONS)
    engine = db.create_engine(url, pool_size=4)
    http = webhook_sink.client(True, 2.0, 8)
    handle = OwnDb(db.sessions(engine), Announcer({"receiver": frozenset({"invoice.paid"})}), http)
    yield handle
    for sender in handle.senders:
        await sender.stop()
    await http.aclose()
    await engine.dispose()


async def succeeded(own_db: OwnDb, delivery_id: str, attempts: int = 1) -> None:
    found = await own_db.delivery(delivery_id)
    assert (found.status, found.attempt_count) == ("DELIVERY_STATUS_SUCCEEDED", attempts)


async def test_requests_in_flight_are_bounded_per_process_and_per_sink(own_db: OwnDb):
    release = asyncio.Event()
    async with Receiver(release=release) as first, Receiver(release=release) as second:
        one, two = await own_db.endpoint(first.url), await own_db.endpoint(second.url)
        ids = [await own_db.announce(f"cus_{n}", endpoint_id=sink) for n in range(5) for sink in (one, two)]
        own_db.sender(concurrency=3, sink_concurrency=2).start()

        async def three_in_flight():
            assert len(first.received) + len(second.received) == 3

        await eventually(three_in_flight)
        await asyncio.sleep(0.3)  # several sweeps, with every slot taken
        assert len(first.received) + len(second.received) == 3
        assert max(len(first.received), len(second.received)) == 2
        release.set()
        for delivery_id in ids:
            await eventually(lambda delivery_id=delivery_id: succeeded(own_db, delivery_id))
        assert len(first.received) == len(second.received) == 5


async def test_a_retry_goes_out_when_due_though_the_sweep_is_a_minute_away(own_db: OwnDb):
    async with Receiver(fail_first=1) as receiver:
        delivery_id = await own_db.announce("cus_r", endpoint_id=await own_db.endpoint(receiver.url))
        own_db.sender(interval=60.0, retry_schedule=(0.5,)).start()  # the first sweep sends it at once
        await eventually(lambda: succeeded(own_db, delivery_id, attempts=2), timeout=10)
        first, second = receiver.received
        assert 0.4 <= second.time - first.time < 5  # its retry's time (jittered), not the next sweep's


async def test_stopping_hands_back_what_was_in_flight_and_the_next_process_sends_it(own_db: OwnDb):
    release = asyncio.Event()
    async with Receiver(release=release) as receiver:
        delivery_id = await own_db.announce("cus_s", endpoint_id=await own_db.endpoint(receiver.url))
        first = own_db.sender(lease=300.0)
        first.start()
        await asyncio.wait_for(receiver.arrived.wait(), 10)
        await first.stop()
        handed = await own_db.delivery(delivery_id)
        assert (handed.status, handed.lease_until, handed.attempt_count) == ("DELIVERY_STATUS_PENDING", None, 0)
        release.set()
        own_db.sender().start()
        await eventually(lambda: succeeded(own_db, delivery_id))
        first_request, second_request = receiver.received
        assert first_request.id == second_request.id  # at least once, under one id


async def test_an_outcome_that_cannot_be_recorded_is_sent_again_once_its_lease_runs_out(
    own_db: OwnDb, infra: Infra, caplog
):
    release = asyncio.Event()
    async with Receiver(release=release) as receiver:
        delivery_id = await own_db.announce("cus_l", endpoint_id=await own_db.endpoint(receiver.url))
        sender = own_db.sender(lease=1.0)
        working = own_db.sessions.kw["bind"]
        closed = db.create_engine(f"postgresql://postgres@127.0.0.1:{free_port()}/none")
        with caplog.at_level(logging.ERROR, logger="bxb.payments.sender"):
            sender.start()
            await asyncio.wait_for(receiver.arrived.wait(), 10)
            own_db.sessions.configure(bind=closed)  # the database goes away while the request is out
            release.set()

            async def logged():
                assert "could not be recorded" in caplog.text

            await eventually(logged)
        own_db.sessions.configure(bind=working)
        await eventually(lambda: succeeded(own_db, delivery_id))
        assert [r.id for r in receiver.received] == [receiver.received[0].id] * 2
        await closed.dispose()


async def test_a_delivery_canceled_or_removed_while_in_flight_is_left_as_it_is(own_db: OwnDb):
    release = asyncio.Event()
    async with Receiver(release=release) as receiver:
        endpoint_id = await own_db.endpoint(receiver.url)
        canceled = await own_db.announce("cus_c", endpoint_id=endpoint_id)
        own_db.sender().start()
        await asyncio.wait_for(receiver.arrived.wait(), 10)
        async with own_db.sessions() as session, session.begin():
            await session.execute(update(Delivery).where(Delivery.id == canceled).values(status=DELIVERY_CANCELED))
        release.set()

        async def attempted():
            assert [a.succeeded for a in await own_db.attempts(canceled)] == [True]

        await eventually(attempted)
        found = await own_db.delivery(canceled)
        assert (found.status, found.attempt_count) == (DELIVERY_CANCELED, 0)

        release.clear()
        receiver.arrived.clear()
        removed = await own_db.announce("cus_c", endpoint_id=endpoint_id)
        await asyncio.wait_for(receiver.arrived.wait(), 10)
        async with own_db.sessions() as session, session.begin():
            await session.execute(delete(WebhookEndpoint).where(WebhookEndpoint.id == endpoint_id))
        release.set()
        await asyncio.sleep(0.3)
        async with own_db.sessions() as session:
            assert await session.get(Delivery, removed) is None
            query = select(DeliveryAttempt).where(DeliveryAttempt.delivery_id == removed)
            assert list(await session.scalars(query)) == []  # removed with it


async def failed_attempt(own_db: OwnDb, delivery_id: str) -> DeliveryAttempt:
    attempts = await own_db.attempts(delivery_id)
    assert attempts
    assert not attempts[0].succeeded
    return attempts[0]


async def test_what_cannot_be_sent_is_a_failed_attempt_that_says_why(own_db: OwnDb):
    async with Receiver() as receiver, Receiver(delay=5) as slow:
        guarded = webhook_sink.client(False, 2.0, 4)  # internal addresses refused, as in production
        refused_endpoint = await own_db.endpoint(receiver.url)
        refused_id = await own_db.announce("cus_1", endpoint_id=refused_endpoint)
        own_db.sender(http=guarded).start()
        refused = await eventually(lambda: failed_attempt(own_db, refused_id))
        assert (
            refused.error
            == "not sent: 127.0.0.1 resolves to a loopback address 127.0.0.1: internal addresses are not called"
        )
        assert refused.status_code == 0
        await own_db.senders.pop().stop()
        await guarded.aclose()
        assert receiver.received == []  # no request was made
        async with own_db.sessions() as session, session.begin():
            await session.execute(delete(WebhookEndpoint).where(WebhookEndpoint.id == refused_endpoint))

        own_db.sender(webhook_timeout=0.3).start()
        garbled = sealing.seal("whsec_x", "org_other", SECRET_PURPOSE)  # another organization's: does not open here
        unsealable = await own_db.announce("cus_2", endpoint_id=await own_db.endpoint(receiver.url, sealed=garbled))
        closed_port = await own_db.announce(
            "cus_3", endpoint_id=await own_db.endpoint(f"http://127.0.0.1:{free_port()}/hook")
        )
        timed_out = await own_db.announce("cus_4", endpoint_id=await own_db.endpoint(slow.url))
        attempt = await eventually(lambda: failed_attempt(own_db, unsealable))
        assert attempt.error == "the endpoint's signing secret does not open (sealed under another BXB_SECRET_KEY?)"
        attempt = await eventually(lambda: failed_attempt(own_db, closed_port))
        assert attempt.error.startswith("ConnectError: ")
        attempt = await eventually(lambda: failed_attempt(own_db, timed_out))
        assert attempt.error == "no answer within 0.3 s" and 300 <= attempt.latency_ms < 2000
        assert receiver.received == []


async def test_a_previous_secret_past_its_overlap_no_longer_signs(own_db: OwnDb):
    async with Receiver() as receiver:
        current, previous = new_secret(), new_secret()
        endpoint_id = await own_db.endpoint(receiver.url, secret=current)
        async with own_db.sessions() as session, session.begin():
            await session.execute(
                update(WebhookEndpoint)
                .where(WebhookEndpoint.id == endpoint_id)
                .values(
                    previous_secret_sealed=sealing.seal(previous, ORG, SECRET_PURPOSE),
                    previous_secret_expire_time=datetime(2020, 1, 1, tzinfo=utcnow().tzinfo),
                )
            )
        receiver.secrets = [current, previous]
        delivery_id = await own_db.announce("cus_p", endpoint_id=endpoint_id)
        own_db.sender().start()
        await eventually(lambda: succeeded(own_db, delivery_id))
        assert receiver.received[0].verified == {current: True, previous: False}


class ReceiverVendor:
    """An analytics tool for the sender's sake: its sink POSTs the payload to a receiver."""

    name = "receiver"
    accepts = frozenset({"invoice.paid"})

    def __init__(self, url: str, http: httpx.AsyncClient):
        self.url, self.http = url, http
        self.accounts: list[Account] = []

    async def connect(self, api_key: str, data_source_id: str) -> str:
        return data_source_id

    def sink(self, account: Account) -> Sink:
        self.accounts.append(account)
        return self

    async def send(self, outgoing: Outgoing) -> Sent:
        answer = await self.http.post(self.url, content=outgoing.payload, headers={"webhook-id": outgoing.event_id})
        ok = answer.status_code < 300
        return Sent(ok, answer.status_code, error="" if ok else f"the tool answered {answer.status_code}")


async def test_integration_deliveries_go_through_their_vendors_sink_and_are_kept_on_the_integration(own_db: OwnDb):
    async with Receiver(fail_first=1) as receiver:
        vendor = ReceiverVendor(receiver.url, own_db.http)
        synced = await own_db.integration("receiver")
        missing = await own_db.integration("nowhere")
        unsealable = await own_db.integration("receiver", org="org_2", sealed=sealing.seal("k", ORG, "x"))
        own_db.sender(vendors={"receiver": vendor}).start()
        delivery_id = await own_db.announce("cus_i", integration_id=synced)
        await eventually(lambda: succeeded(own_db, delivery_id, attempts=2))
        row = await own_db.integration_row(synced)
        assert row.last_sync_time is not None and row.last_error == "the tool answered 500"
        assert row.last_error_time is not None and row.last_error_time < row.last_sync_time
        assert vendor.accounts[0] == Account(ORG, "key_123", "ds_1")
        assert len(receiver.received) == 2

        nowhere = await own_db.announce("cus_i", integration_id=missing)
        attempt = await eventually(lambda: failed_attempt(own_db, nowhere))
        assert attempt.error == "no 'nowhere' integration in this bxb: nothing sends to it"
        assert (await own_db.integration_row(missing)).last_error == attempt.error
        closed = await own_db.announce("cus_i", integration_id=unsealable, org="org_2")
        attempt = await eventually(lambda: failed_attempt(own_db, closed))
        assert attempt.error == "the integration's API key does not open (sealed under another BXB_SECRET_KEY?)"
