"""Nothing is lost across a restart of the payments process: a payments
process of its own (its own database and NATS, so no other sender shares
its deliveries) is stopped mid-stream and started again; every event
arrives, at least once under its id, in order per customer."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import grpc
from sqlalchemy import select

from bxb.payments.v1 import webhook_endpoints_pb2 as pb
from bxb.payments.v1 import webhook_endpoints_pb2_grpc
from deploy.embedded import Nats
from services.common import db, grpc_server, tenancy
from services.common.ids import new_id
from services.common.timestamps import utcnow
from services.payments import server as payments_server
from services.payments.announcing import Announcer, Draft
from services.payments.models import Announcement, Delivery
from tests.conftest import WEBHOOK_SETTINGS, Infra, eventually, start, unique
from tests.webhook_receiver import Receiver

ORG = "org_restart"


async def test_every_event_arrives_across_a_restart_of_the_payments_process(infra: Infra, tmp_path: Path):
    nats = Nats(tmp_path / "nats", durable=False)
    nats.start()
    url = await infra.database(unique("restart"))
    settings = payments_server.Settings("", url, nats.url, "127.0.0.1:9", **WEBHOOK_SETTINGS, sink_concurrency=1)
    engine = db.create_engine(url, pool_size=2)
    sessions = db.sessions(engine)
    service = payments_server.build(settings)
    server, address = await start(service)
    try:
        async with Receiver(delay=0.05) as receiver:
            async with grpc.aio.insecure_channel(address) as channel:
                stub = webhook_endpoints_pb2_grpc.WebhookEndpointServiceStub(channel)
                created = await stub.CreateWebhookEndpoint(
                    pb.CreateWebhookEndpointRequest(webhook_endpoint=pb.WebhookEndpoint(url=receiver.url)),
                    metadata=tenancy.metadata(ORG),
                )
            receiver.secrets = [created.secret]
            announcer = Announcer({})
            for n in range(10):
                for customer in ("cus_a", "cus_b", "cus_c"):
                    now = utcnow()
                    draft = Draft(ORG, "invoice.paid", customer, new_id("src"), now, {"customer": customer, "n": n})
                    async with sessions() as session, session.begin():
                        await announcer.announce(session, draft, now)

            async def some_arrived():
                assert len(receiver.received) >= 8

            await eventually(some_arrived)
            await grpc_server.stop(service, server, grace=0)  # mid-stream
            at_stop = len(receiver.received)
            assert at_stop < 30
            service = payments_server.build(settings)
            server, _ = await start(service)

            async def all_delivered():
                async with sessions() as session:
                    statuses = list(await session.scalars(select(Delivery.status)))
                assert len(statuses) == 30 and set(statuses) == {"DELIVERY_STATUS_SUCCEEDED"}

            await eventually(all_delivered, timeout=30)
            async with sessions() as session:
                announced = set(await session.scalars(select(Announcement.id)))
            assert set(receiver.ids()) == announced  # every event, under its own id
            assert receiver.verified(created.secret)
            arrived: dict[str, list[int]] = defaultdict(list)
            for request in receiver.received:
                arrived[request.json["data"]["customer"]].append(request.json["data"]["n"])
            for numbers in arrived.values():
                assert numbers == sorted(numbers) and set(numbers) == set(range(10))
    finally:
        await grpc_server.stop(service, server, grace=0)
        await engine.dispose()
        nats.stop()
