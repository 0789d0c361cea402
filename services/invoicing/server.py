"""The invoicing service process: subscription projection from catalog
events, the billing run, invoices and current usage."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from bxb.common.v1 import parked_messages_pb2, parked_messages_pb2_grpc
from bxb.invoicing.v1 import (
    billing_runs_pb2,
    billing_runs_pb2_grpc,
    calculations_pb2,
    calculations_pb2_grpc,
    credit_notes_pb2,
    credit_notes_pb2_grpc,
    invoices_pb2,
    invoices_pb2_grpc,
)
from services.common import bus, commands, config, db, grpc_server, logs, parking, peers, tracing
from services.common.known_organizations import KnownOrganizations
from services.common.outbox import OUTBOX, OutboxRelay
from services.common.parking import ParkedMessages
from services.invoicing.billing import Biller, Scheduler
from services.invoicing.calculation_service import CalculationServicer
from services.invoicing.calculations import Pricing
from services.invoicing.credit_notes import CreditNotes
from services.invoicing.delivery import Delivery
from services.invoicing.fees import FeeCalculator
from services.invoicing.invoices import Drafting, InvoiceServicer
from services.invoicing.lifecycle import Lifecycle
from services.invoicing.mailer import Mailer
from services.invoicing.models import Outbox, Parked
from services.invoicing.one_offs import OneOffInvoices
from services.invoicing.progressive import ProgressiveBilling
from services.invoicing.projection import SubscriptionProjection
from services.invoicing.requested import RequestedInvoices
from services.invoicing.runs import BillingRunServicer

MIGRATIONS = Path(__file__).parent / "migrations"
METERING_REPLY_BYTES = 256 * 1024 * 1024
# Deliveries of a failing catalog or payments event before it is parked:
# with doubling delays up to 5 minutes apart, about an hour of retries.
MAX_ATTEMPTS = 20


@dataclass
class Settings:
    address: str
    database_url: str
    nats_url: str
    metering_address: str
    billing_interval: float
    settle_seconds: float
    catalog_address: str
    smtp_url: str = ""
    smtp_from: str = "billing@localhost"
    billing_page_size: int = 200
    # Payments: asked to close an invoice's payment before the invoice is voided, within the deadline (seconds).
    payments_address: str = ""
    payments_timeout: float = 5.0
    # Seconds a call to the catalog may take (subscriptions, plans, taxes, customers).
    catalog_timeout: float = 10.0

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            address=config.listen_address("invoicing", config.DEFAULT_PORTS["invoicing"]),
            database_url=config.database_url("invoicing"),
            nats_url=config.nats_url(),
            metering_address=config.grpc_address("metering", config.DEFAULT_PORTS["metering"]),
            billing_interval=config.env_float("BXB_BILLING_INTERVAL_SECONDS", 10.0),
            settle_seconds=config.env_float("BXB_BILLING_SETTLE_SECONDS", 60.0),
            catalog_address=config.grpc_address("catalog", config.DEFAULT_PORTS["catalog"]),
            smtp_url=config.env_str("BXB_SMTP_URL", ""),
            smtp_from=config.env_str("BXB_SMTP_FROM", "billing@localhost"),
            billing_page_size=max(1, int(config.env_float("BXB_BILLING_PAGE_SIZE", 200))),
            payments_address=config.grpc_address("payments", config.DEFAULT_PORTS["payments"]),
            payments_timeout=config.env_float("BXB_PAYMENTS_TIMEOUT_SECONDS", 5.0),
        )


def build(settings: Settings) -> grpc_server.Service:
    engine = db.create_engine(settings.database_url)
    sessions = db.sessions(engine)
    # Percentage charges read every event's value of a period: allow large replies.
    metering = peers.Metering(settings.metering_address, receive_bytes=METERING_REPLY_BYTES)
    catalog = peers.Catalog(settings.catalog_address, timeout=settings.catalog_timeout)
    payments = peers.Payments(settings.payments_address, timeout=settings.payments_timeout)
    events = bus.Bus(settings.nats_url, "invoicing")
    park = parking.parker(sessions, Parked)
    relay = OutboxRelay(sessions, Outbox, events, park=park)
    fees = FeeCalculator(sessions, metering, catalog)
    projection = SubscriptionProjection(sessions, catalog, OneOffInvoices(sessions, fees, relay))
    pricing = Pricing(sessions, fees, projection)
    requested = RequestedInvoices(sessions, fees, pricing, relay)
    biller = Biller(
        sessions,
        fees,
        relay,
        timedelta(seconds=settings.settle_seconds),
        page_size=settings.billing_page_size,
        progressive=ProgressiveBilling(sessions, fees, requested),
    )
    scheduler = Scheduler(biller, settings.billing_interval)
    delivery = Delivery(sessions, Mailer(settings.smtp_url, settings.smtp_from), catalog)
    lifecycle = Lifecycle(sessions, relay, payments)
    # What a retry of each kind of parked message runs.
    handlers = {OUTBOX: relay.republish, "invoicing": projection.handle, "invoicing-payments": lifecycle.paid}
    parked = ParkedMessages("invoicing", sessions, Parked, handlers)

    async def on_start() -> None:
        await events.open()
        await events.ensure_stream(bus.INVOICING)
        await events.consume(
            bus.CATALOG, "invoicing", "bxb.catalog.>", projection.handle, park=park, max_attempts=MAX_ATTEMPTS
        )
        await events.ensure_stream(bus.PAYMENTS)  # whichever service starts first creates it
        await events.consume(
            bus.PAYMENTS, "invoicing-payments", "bxb.payments.>", lifecycle.paid, park=park, max_attempts=MAX_ATTEMPTS
        )
        relay.start()
        scheduler.start()

    async def on_stop() -> None:
        await scheduler.stop()
        await relay.stop()
        await events.close()  # on_stop follows a successful on_start, which opened the bus
        for peer in (metering, catalog, payments):
            await peer.close()
        await engine.dispose()

    drafting = Drafting(sessions, fees, projection)
    credit_notes = CreditNotes(sessions, relay)
    return grpc_server.Service(
        name="invoicing",
        registrars=[
            grpc_server.registrar(
                invoices_pb2,
                invoices_pb2_grpc,
                "InvoiceService",
                InvoiceServicer(sessions, drafting, biller, requested, lifecycle, delivery),
            ),
            grpc_server.registrar(
                calculations_pb2, calculations_pb2_grpc, "CalculationService", CalculationServicer(pricing, drafting)
            ),
            grpc_server.registrar(
                billing_runs_pb2,
                billing_runs_pb2_grpc,
                "BillingRunService",
                BillingRunServicer(sessions, biller, scheduler, projection),
            ),
            grpc_server.registrar(credit_notes_pb2, credit_notes_pb2_grpc, "CreditNoteService", credit_notes),
            grpc_server.registrar(parked_messages_pb2, parked_messages_pb2_grpc, "ParkedMessageService", parked),
        ],
        migrate=functools.partial(db.migrate, settings.database_url, MIGRATIONS),
        on_start=on_start,
        on_stop=on_stop,
        probes=[relay.probe()],
        organizations=KnownOrganizations(catalog.organization_exists),
    )


def main(argv: list[str] | None = None) -> None:
    logs.configure("invoicing")
    tracing.configure("invoicing")
    settings = Settings.from_env()
    commands.run("invoicing", lambda: build(settings), settings.address, argv)
