"""The payments service process: receivables from finalized invoices,
organizations' Stripe accounts, customers linked to Stripe and their payment
methods, charging invoices (on request, automatically, dunning) and refunding
them through Stripe, and Stripe's webhooks."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

from bxb.common.v1 import parked_messages_pb2, parked_messages_pb2_grpc
from bxb.payments.v1 import (
    dunning_pb2,
    dunning_pb2_grpc,
    integrations_pb2,
    integrations_pb2_grpc,
    payments_pb2,
    payments_pb2_grpc,
    providers_pb2,
    providers_pb2_grpc,
    stripe_webhooks_pb2,
    stripe_webhooks_pb2_grpc,
    webhook_endpoints_pb2,
    webhook_endpoints_pb2_grpc,
)
from services.common import bus, commands, config, db, grpc_server, logs, parking, peers, tracing
from services.common.known_organizations import KnownOrganizations
from services.common.outbox import OUTBOX, OutboxRelay
from services.common.parking import ParkedMessages
from services.payments import webhook_sink
from services.payments.accounts import StripeAccounts
from services.payments.announcements import CONSUMERS, Announcements
from services.payments.announcing import Announcer
from services.payments.backlog import webhook_backlog
from services.payments.charging import PAYMENT_UPDATED, STALE_MARGIN_SECONDS, Charging
from services.payments.clocks import TEST_CLOCK_ADVANCED, Clocks
from services.payments.closing import Closing
from services.payments.collection import Collector
from services.payments.customers import ProviderCustomers
from services.payments.dunning import DunningCampaignServicer
from services.payments.history import History
from services.payments.integrations import IntegrationServicer
from services.payments.intent_events import IntentEvents
from services.payments.linking import Linker
from services.payments.links import PaymentLinks
from services.payments.method_events import MethodEvents
from services.payments.methods import PaymentMethods
from services.payments.models import Outbox, Parked
from services.payments.notices import Notices
from services.payments.payments import PaymentServicer
from services.payments.providers import PaymentProviderServicer
from services.payments.receivables import Receivables
from services.payments.recovery import Recovery
from services.payments.refunder import Refunder
from services.payments.refunds import Refunds
from services.payments.sender import LEASE_MARGIN_SECONDS, Sender
from services.payments.vendors import VendorSettings, vendors
from services.payments.webhook_endpoints import WebhookEndpointServicer
from services.payments.webhooks import StripeWebhookServicer

MIGRATIONS = Path(__file__).parent / "migrations"
# Deliveries of a failing invoicing or catalog event before it is parked:
# with doubling delays up to 5 minutes apart, about an hour of retries.
MAX_ATTEMPTS = 20


@dataclass
class Settings:
    address: str
    database_url: str
    nats_url: str
    invoicing_address: str = ""
    # The catalog, read for resyncs' history (and ChartMogul's plan versions).
    catalog_address: str = ""
    # Seconds between looks for resyncs to gather when nothing wakes the worker.
    resync_interval: float = 5.0
    # Stripe: the default organization's account while it has connected none
    # (its secret key and webhook signing secret); for a test double, its address.
    stripe_api_key: str = ""
    stripe_api_base: str = ""
    stripe_webhook_secret: str = ""
    # Deadlines, in seconds: one charge's requests to Stripe together; a call to invoicing.
    stripe_timeout: float = 20.0
    invoicing_timeout: float = 5.0
    # How often attempts abandoned mid-call are looked up at Stripe.
    recovery_interval: float = 60.0
    # Where Stripe sends a customer back after 3-D Secure or a payment link;
    # without it, intents carry no authentication page and no links are made.
    payment_return_url: str = ""
    # Seconds between the collector's sweeps when nothing wakes it.
    collection_interval: float = 5.0
    # How often due refunds are sent to Stripe (and at once when one is recorded).
    refund_interval: float = 5.0
    # How often customers waiting to be linked to Stripe are looked for (besides when one is recorded).
    linking_interval: float = 5.0
    # Outgoing webhooks and analytics sync (services/payments/sender.py): whether
    # endpoints may name internal addresses (development and tests only); each
    # request's deadline; the wait before each retry, after the attempt before it
    # (jittered; the default spans about 27.6 hours); how long an endpoint
    # fails without one success before it is disabled; the sender's sweep
    # interval, its requests in flight per process and per sink.
    webhooks_allow_private: bool = False
    webhook_timeout: float = 10.0
    retry_schedule: tuple[float, ...] = (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)
    endpoint_disable_after: float = 5 * 86400.0
    delivery_interval: float = 1.0
    delivery_concurrency: int = 64
    sink_concurrency: int = 4
    vendors: VendorSettings = field(default_factory=VendorSettings)

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            address=config.listen_address("payments", config.DEFAULT_PORTS["payments"]),
            database_url=config.database_url("payments"),
            nats_url=config.nats_url(),
            invoicing_address=config.grpc_address("invoicing", config.DEFAULT_PORTS["invoicing"]),
            catalog_address=config.grpc_address("catalog", config.DEFAULT_PORTS["catalog"]),
            stripe_api_key=config.env_str("BXB_STRIPE_API_KEY", ""),
            stripe_api_base=config.env_str("BXB_STRIPE_API_BASE", ""),
            stripe_webhook_secret=config.env_str("BXB_STRIPE_WEBHOOK_SECRET", ""),
            stripe_timeout=config.env_float("BXB_STRIPE_TIMEOUT_SECONDS", 20.0),
            invoicing_timeout=config.env_float("BXB_INVOICING_TIMEOUT_SECONDS", 5.0),
            recovery_interval=config.env_float("BXB_PAYMENTS_RECOVERY_INTERVAL_SECONDS", 60.0),
            payment_return_url=config.env_str("BXB_PAYMENT_RETURN_URL", ""),
            collection_interval=config.env_float("BXB_PAYMENTS_COLLECTION_INTERVAL_SECONDS", 5.0),
            refund_interval=config.env_float("BXB_PAYMENTS_REFUND_INTERVAL_SECONDS", 5.0),
            linking_interval=config.env_float("BXB_PAYMENTS_LINKING_INTERVAL_SECONDS", 5.0),
            webhooks_allow_private=config.env_str("BXB_WEBHOOKS_ALLOW_PRIVATE", "") == "1",
            webhook_timeout=config.env_float("BXB_WEBHOOKS_TIMEOUT_SECONDS", 10.0),
            retry_schedule=config.env_floats("BXB_DELIVERY_RETRY_SCHEDULE", Settings.retry_schedule),
            endpoint_disable_after=config.env_float("BXB_WEBHOOKS_DISABLE_AFTER_SECONDS", 5 * 86400.0),
            delivery_interval=config.env_float("BXB_DELIVERY_INTERVAL_SECONDS", 1.0),
            delivery_concurrency=int(config.env_float("BXB_DELIVERY_CONCURRENCY", 64)),
            sink_concurrency=int(config.env_float("BXB_SINK_CONCURRENCY", 4)),
            vendors=VendorSettings(
                chartmogul_api_base=config.env_str("BXB_CHARTMOGUL_API_BASE", VendorSettings.chartmogul_api_base),
                baremetrics_api_base=config.env_str("BXB_BAREMETRICS_API_BASE", VendorSettings.baremetrics_api_base),
                profitwell_api_base=config.env_str("BXB_PROFITWELL_API_BASE", VendorSettings.profitwell_api_base),
                timeout=config.env_float("BXB_INTEGRATIONS_TIMEOUT_SECONDS", 10.0),
            ),
        )


def build(settings: Settings) -> grpc_server.Service:
    engine = db.create_engine(settings.database_url)
    sessions = db.sessions(engine)
    invoicing = peers.Invoicing(settings.invoicing_address, timeout=settings.invoicing_timeout)
    catalog = peers.Catalog(settings.catalog_address, timeout=settings.invoicing_timeout)
    tools = vendors(settings.vendors, catalog)
    events = bus.Bus(settings.nats_url, "payments")
    park = parking.parker(sessions, Parked)
    relay = OutboxRelay(sessions, Outbox, events, park=park)
    # Outgoing webhooks and analytics sync: what consumes a domain event calls
    # `announcer.announce(session, draft, now)` in its transaction, then
    # `sender.wake()` once committed.
    announcer = Announcer({name: vendor.accepts for name, vendor in tools.items()})
    webhook_client = webhook_sink.client(
        settings.webhooks_allow_private, settings.webhook_timeout, settings.delivery_concurrency
    )
    sender = Sender(
        sessions,
        announcer,
        tools,
        webhook_client,
        webhook_timeout=settings.webhook_timeout,
        retry_schedule=settings.retry_schedule,
        disable_after=settings.endpoint_disable_after,
        interval=settings.delivery_interval,
        concurrency=settings.delivery_concurrency,
        sink_concurrency=settings.sink_concurrency,
        lease=max(settings.webhook_timeout, settings.vendors.timeout) + LEASE_MARGIN_SECONDS,
    )
    history = History(sessions, catalog, invoicing, tools, settings.resync_interval, announced=sender.wake)
    accounts = StripeAccounts(
        sessions,
        settings.stripe_api_base,
        settings.stripe_timeout,
        default_api_key=settings.stripe_api_key,
        default_webhook_secret=settings.stripe_webhook_secret,
        return_url=settings.payment_return_url,
    )
    links = PaymentLinks(accounts)
    refunder = Refunder(
        sessions, relay, accounts, settings.refund_interval, stale_after=settings.stripe_timeout + STALE_MARGIN_SECONDS
    )
    charging = Charging(
        sessions,
        relay,
        invoicing,
        accounts,
        stale_after=settings.stripe_timeout + STALE_MARGIN_SECONDS,
        links=links,
        wait_for_collection=settings.stripe_timeout,
    )
    collector = Collector(sessions, charging, settings.collection_interval)
    refunds = Refunds(sessions, relay, refunder.wake)
    receivables = Receivables(sessions, collector.wake, refunds)
    linker = Linker(sessions, accounts, poll=settings.linking_interval)
    customers = ProviderCustomers(sessions, recorded=linker.wake)
    clocks = Clocks(sessions, collector.wake)
    notices = Notices(sessions, relay, invoicing, links, settings.payment_return_url)
    intents = IntentEvents(sessions, relay, collector.wake)
    method_events = MethodEvents(sessions, accounts)
    announcements = Announcements(sessions, announcer, announced=sender.wake)

    async def catalog_facts(subject: str, payload: bytes) -> None:
        if subject == TEST_CLOCK_ADVANCED:
            await clocks.advanced(payload)
        else:
            await customers.handle(subject, payload)

    # What a retry of each kind of parked message runs.
    handlers = {
        OUTBOX: relay.republish,
        "payments": receivables.handle,
        "payments-catalog": catalog_facts,
        "payments-notices": notices.handle,
        **{durable: announcements.handle for _, durable, _ in CONSUMERS},
    }
    parked = ParkedMessages("payments", sessions, Parked, handlers)
    recovery = Recovery(charging, settings.recovery_interval)
    stripe_events = {**intents.handlers(), **refunds.handlers(), **method_events.handlers()}
    webhooks = StripeWebhookServicer(sessions, accounts, stripe_events)

    async def on_start() -> None:
        await events.open()
        await events.ensure_stream(bus.PAYMENTS)
        await events.consume(
            bus.INVOICING, "payments", "bxb.invoicing.>", receivables.handle, park=park, max_attempts=MAX_ATTEMPTS
        )
        await events.consume(
            bus.CATALOG, "payments-catalog", "bxb.catalog.>", catalog_facts, park=park, max_attempts=MAX_ATTEMPTS
        )
        await events.consume(
            bus.PAYMENTS, "payments-notices", PAYMENT_UPDATED, notices.handle, park=park, max_attempts=MAX_ATTEMPTS
        )
        for stream, durable, subject in CONSUMERS:
            await events.consume(stream, durable, subject, announcements.handle, park=park, max_attempts=MAX_ATTEMPTS)
        relay.start()
        recovery.start()
        linker.start()
        collector.start()
        refunder.start()
        sender.start()
        history.worker.start()

    async def on_stop() -> None:
        await history.worker.stop()
        await sender.stop()
        await webhook_client.aclose()
        await refunder.stop()
        await collector.stop()
        await linker.stop()
        await recovery.stop()
        await relay.stop()
        await events.close()  # on_stop follows a successful on_start, which opened the bus
        await invoicing.close()
        await catalog.close()
        await engine.dispose()

    return grpc_server.Service(
        name="payments",
        registrars=[
            grpc_server.registrar(
                payments_pb2,
                payments_pb2_grpc,
                "PaymentService",
                PaymentServicer(sessions, charging, Closing(sessions), PaymentMethods(sessions, accounts)),
            ),
            grpc_server.registrar(
                providers_pb2,
                providers_pb2_grpc,
                "PaymentProviderService",
                PaymentProviderServicer(sessions, accounts, connected=linker.wake),
            ),
            grpc_server.registrar(
                dunning_pb2, dunning_pb2_grpc, "DunningCampaignService", DunningCampaignServicer(sessions)
            ),
            grpc_server.registrar(
                integrations_pb2,
                integrations_pb2_grpc,
                "IntegrationService",
                IntegrationServicer(sessions, tools, resync_asked=history.worker.wake),
            ),
            grpc_server.registrar(stripe_webhooks_pb2, stripe_webhooks_pb2_grpc, "StripeWebhookService", webhooks),
            grpc_server.registrar(
                webhook_endpoints_pb2,
                webhook_endpoints_pb2_grpc,
                "WebhookEndpointService",
                WebhookEndpointServicer(sessions, announcer, sender.wake, settings.webhooks_allow_private),
            ),
            grpc_server.registrar(parked_messages_pb2, parked_messages_pb2_grpc, "ParkedMessageService", parked),
        ],
        migrate=functools.partial(db.migrate, settings.database_url, MIGRATIONS),
        on_start=on_start,
        on_stop=on_stop,
        probes=[relay.probe(), ("webhooks", webhook_backlog(sessions))],
        organizations=KnownOrganizations(catalog.organization_exists) if settings.catalog_address else None,
    )


def main(argv: list[str] | None = None) -> None:
    logs.configure("payments")
    tracing.configure("payments")
    settings = Settings.from_env()
    commands.run("payments", lambda: build(settings), settings.address, argv)
