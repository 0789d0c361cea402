"""The catalog service process: metrics, plans, customers, subscriptions,
coupons, taxes, add-ons, test clocks, organizations and API keys, in its own PostgreSQL database."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from bxb.catalog.v1 import (
    add_ons_pb2,
    add_ons_pb2_grpc,
    billable_metrics_pb2,
    billable_metrics_pb2_grpc,
    coupons_pb2,
    coupons_pb2_grpc,
    customers_pb2,
    customers_pb2_grpc,
    event_references_pb2,
    event_references_pb2_grpc,
    organizations_pb2,
    organizations_pb2_grpc,
    plans_pb2,
    plans_pb2_grpc,
    subscriptions_pb2,
    subscriptions_pb2_grpc,
    taxes_pb2,
    taxes_pb2_grpc,
    test_clocks_pb2,
    test_clocks_pb2_grpc,
)
from bxb.common.v1 import parked_messages_pb2, parked_messages_pb2_grpc
from services.catalog import organizations
from services.catalog.add_ons import AddOnServicer
from services.catalog.coupons import CouponServicer
from services.catalog.customers import CustomerServicer
from services.catalog.event_references import EventReferenceServicer
from services.catalog.metrics import BillableMetricServicer
from services.catalog.models import Outbox, Parked
from services.catalog.plans import PlanServicer
from services.catalog.subscriptions import SubscriptionServicer
from services.catalog.taxes import TaxServicer
from services.catalog.test_clocks import TestClockServicer
from services.common import bus, commands, config, db, grpc_server, logs, parking, tracing
from services.common.outbox import OUTBOX, OutboxRelay
from services.common.parking import ParkedMessages
from services.common.peers import Invoicing

MIGRATIONS = Path(__file__).parent / "migrations"


@dataclass
class Settings:
    address: str
    database_url: str
    nats_url: str
    api_key: str
    # Invoicing, asked to bill what a test clock's move made due.
    invoicing_address: str = ""

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            address=config.listen_address("catalog", config.DEFAULT_PORTS["catalog"]),
            database_url=config.database_url("catalog"),
            nats_url=config.nats_url(),
            api_key=config.env_str("BXB_API_KEY", ""),
            invoicing_address=config.grpc_address("invoicing", config.DEFAULT_PORTS["invoicing"]),
        )


def build(settings: Settings) -> grpc_server.Service:
    engine = db.create_engine(settings.database_url)
    sessions = db.sessions(engine)
    events = bus.Bus(settings.nats_url, "catalog")
    relay = OutboxRelay(sessions, Outbox, events, park=parking.parker(sessions, Parked))
    # What a retry of a parked outbox row runs (the catalog consumes no events).
    parked = ParkedMessages("catalog", sessions, Parked, {OUTBOX: relay.republish})
    invoicing = Invoicing(settings.invoicing_address)

    async def on_start() -> None:
        await organizations.bootstrap(sessions, settings.api_key)
        await events.open()
        await events.ensure_stream(bus.CATALOG)
        relay.start()

    async def on_stop() -> None:
        await relay.stop()
        await events.close()  # on_stop follows a successful on_start, which opened the bus
        await invoicing.close()
        await engine.dispose()

    return grpc_server.Service(
        name="catalog",
        registrars=[
            grpc_server.registrar(
                organizations_pb2,
                organizations_pb2_grpc,
                "OrganizationService",
                organizations.OrganizationServicer(sessions),
            ),
            grpc_server.registrar(
                billable_metrics_pb2,
                billable_metrics_pb2_grpc,
                "BillableMetricService",
                BillableMetricServicer(sessions),
            ),
            grpc_server.registrar(plans_pb2, plans_pb2_grpc, "PlanService", PlanServicer(sessions)),
            grpc_server.registrar(
                customers_pb2, customers_pb2_grpc, "CustomerService", CustomerServicer(sessions, relay)
            ),
            grpc_server.registrar(
                subscriptions_pb2, subscriptions_pb2_grpc, "SubscriptionService", SubscriptionServicer(sessions, relay)
            ),
            grpc_server.registrar(coupons_pb2, coupons_pb2_grpc, "CouponService", CouponServicer(sessions, relay)),
            grpc_server.registrar(taxes_pb2, taxes_pb2_grpc, "TaxService", TaxServicer(sessions)),
            grpc_server.registrar(
                event_references_pb2,
                event_references_pb2_grpc,
                "EventReferenceService",
                EventReferenceServicer(sessions),
            ),
            grpc_server.registrar(add_ons_pb2, add_ons_pb2_grpc, "AddOnService", AddOnServicer(sessions, relay)),
            grpc_server.registrar(
                test_clocks_pb2, test_clocks_pb2_grpc, "TestClockService", TestClockServicer(sessions, relay, invoicing)
            ),
            grpc_server.registrar(parked_messages_pb2, parked_messages_pb2_grpc, "ParkedMessageService", parked),
        ],
        migrate=functools.partial(db.migrate, settings.database_url, MIGRATIONS),
        on_start=on_start,
        organizations=organizations.known(sessions),
        on_stop=on_stop,
        probes=[relay.probe()],
    )


def main(argv: list[str] | None = None) -> None:
    logs.configure("catalog")
    tracing.configure("catalog")
    settings = Settings.from_env()
    commands.run("catalog", lambda: build(settings), settings.address, argv)
