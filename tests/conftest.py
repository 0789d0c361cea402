"""Shared fixtures: real PostgreSQL, NATS and ClickHouse (chdb), the four
services as in-process gRPC servers on port 0, and the gateway app."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import pytest
import stripe

from bxb.catalog.v1 import organizations_pb2, organizations_pb2_grpc
from bxb.invoicing.v1 import billing_runs_pb2, billing_runs_pb2_grpc
from deploy.embedded import Nats, Postgres, free_port
from gateway.app import create_app
from gateway.config import Settings as GatewaySettings
from services.catalog import server as catalog_server
from services.common import bus, channels, grpc_server, tenancy
from services.invoicing import server as invoicing_server
from services.metering import server as metering_server
from services.payments import server as payments_server
from services.payments.vendors import VendorSettings
from tests import clickhouse_http
from tests.baremetrics_fake import BaremetricsFake
from tests.chartmogul_fake import ChartMogulFake
from tests.profitwell_fake import ProfitWellFake
from tests.smtp import Mailbox
from tests.stripe import GOOD_CARD, LocalStripe, customer_with_card
from tests.stripe_double import Account, StripeDouble

# Where Stripe sends customers back after 3-D Secure or a payment link.
PAYMENT_RETURN_URL = "https://shop.bxb.test/payment-complete"


@dataclass
class Infra:
    postgres: Postgres
    nats: Nats
    chdb_path: Path

    async def database(self, name: str) -> str:
        await self.postgres.create_database(name)
        return self.postgres.url(name)


@pytest.fixture(scope="session")
def infra(tmp_path_factory) -> Infra:
    root = tmp_path_factory.mktemp("infra")
    postgres = Postgres(root / "postgres", durable=False)
    nats = Nats(root / "nats", durable=False)
    postgres.start()
    nats.start()
    yield Infra(postgres, nats, root / "chdb")
    nats.stop()
    postgres.stop()


@pytest.fixture(scope="session")
def clickhouse_url(tmp_path_factory) -> Iterator[str]:
    """ClickHouse's HTTP interface over chdb, in its own process with its own
    data, for `services.metering.clickhouse.Remote` (see tests/clickhouse_http.py)."""
    with clickhouse_http.serve(tmp_path_factory.mktemp("clickhouse_http")) as url:
        yield url


@pytest.fixture(scope="session")
def mailbox() -> Iterator[Mailbox]:
    """The SMTP server the test stack's invoicing sends email to."""
    with Mailbox() as box:
        yield box


@pytest.fixture(scope="session")
def localstripe() -> Iterator[LocalStripe]:
    """Stripe's API as localstripe serves it, in its own process (GPL: never imported)."""
    with LocalStripe() as server:
        yield server


@pytest.fixture(scope="session")
def other_localstripe() -> Iterator[LocalStripe]:
    """A second localstripe: the accounts on it hold none of the session localstripe's objects."""
    with LocalStripe() as server:
        yield server


@pytest.fixture(scope="session")
def chartmogul() -> Iterator[ChartMogulFake]:
    fake = ChartMogulFake().start()
    yield fake
    fake.stop()


@pytest.fixture(scope="session")
async def stripe_double(localstripe: LocalStripe) -> AsyncIterator[StripeDouble]:
    """Stripe as the product sees it (tests/stripe_double.py), in front of the
    session's localstripe: a test adds its own accounts (`add_account()`),
    which share that localstripe's objects."""
    async with StripeDouble(localstripe) as double:
        yield double


@pytest.fixture(scope="session")
async def baremetrics_fake() -> AsyncIterator[BaremetricsFake]:
    """Baremetrics' API (tests/baremetrics_fake.py); a test adds its own accounts."""
    async with BaremetricsFake() as fake:
        yield fake


@pytest.fixture(scope="session")
async def profitwell_fake() -> AsyncIterator[ProfitWellFake]:
    """ProfitWell's API (tests/profitwell_fake.py); a test adds its own accounts."""
    async with ProfitWellFake() as fake:
        yield fake


@dataclass
class Stack:
    catalog: str
    metering: str
    invoicing: str
    payments: str
    app: object
    invoicing_service: grpc_server.Service
    invoicing_database: str = ""
    stripe: StripeDouble | None = None  # every organization's Stripe account is one of its accounts
    chartmogul: ChartMogulFake | None = None  # the ChartMogul the payments service syncs to

    def channel(self, service: str) -> grpc.aio.Channel:
        """A channel to `service` as bxb's own processes open them (carrying the service token)."""
        return channels.open_channel(getattr(self, service))


async def start(service: grpc_server.Service, address: str = "127.0.0.1:0") -> tuple[grpc.aio.Server, str]:
    server, port = await grpc_server.start(service, address)
    return server, f"127.0.0.1:{port}"


# Outgoing webhooks in tests: receivers on 127.0.0.1, retries within seconds
# (each sent when due: the sender's sweep interval stays the default).
WEBHOOK_SETTINGS = {
    "webhooks_allow_private": True,
    "retry_schedule": (0.2, 0.4, 0.8, 1.6, 3.2),
}

# Seals the Stripe keys organizations connect (payments refuses to seal under the public development key).
TEST_SECRET_KEY = "bxb test secret: sealing the organizations' Stripe keys"


@pytest.fixture(scope="session")
async def stack(
    infra: Infra,
    mailbox: Mailbox,
    stripe_double: StripeDouble,
    chartmogul: ChartMogulFake,
    baremetrics_fake: BaremetricsFake,
    profitwell_fake: ProfitWellFake,
) -> AsyncIterator[Stack]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BXB_SECRET_KEY", TEST_SECRET_KEY)
        tools = VendorSettings(
            chartmogul_api_base=chartmogul.url,
            baremetrics_api_base=baremetrics_fake.url,
            profitwell_api_base=profitwell_fake.url,
        )
        async for running in _stack(infra, mailbox, stripe_double, tools, chartmogul):
            yield running


async def _stack(
    infra: Infra, mailbox: Mailbox, stripe_double: StripeDouble, tools: VendorSettings, chartmogul: ChartMogulFake
) -> AsyncIterator[Stack]:
    nats_url = infra.nats.url
    # localstripe's own key is an account of the double too, for tests that call Stripe as bxb does.
    stripe_double.add_account(api_key=LocalStripe.api_key)
    running = []
    # Services that call each other: invoicing's and payments' addresses are chosen before any starts.
    invoicing_address, payments_address = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    catalog = catalog_server.build(
        catalog_server.Settings(
            "", await infra.database("catalog"), nats_url, api_key="", invoicing_address=invoicing_address
        )
    )
    running.append((catalog, *(await start(catalog))))
    metering = metering_server.build(
        metering_server.Settings("", "", infra.chdb_path, "bxb_test", nats_url, catalog_address=running[0][2])
    )
    running.append((metering, *(await start(metering))))
    invoicing_database = await infra.database("invoicing")
    invoicing = invoicing_server.build(
        invoicing_server.Settings(
            "",
            invoicing_database,
            nats_url,
            running[1][2],
            3600,
            settle_seconds=0,
            catalog_address=running[0][2],
            smtp_url=mailbox.url,
            smtp_from="billing@bxb.test",
            payments_address=payments_address,
        )
    )
    running.append((invoicing, *(await start(invoicing, invoicing_address))))
    payments = payments_server.build(
        payments_server.Settings(
            "",
            await infra.database("payments"),
            nats_url,
            invoicing_address=running[2][2],
            catalog_address=running[0][2],
            stripe_api_base=stripe_double.url,  # no default account: each organization connects its own
            payment_return_url=PAYMENT_RETURN_URL,
            **WEBHOOK_SETTINGS,
            resync_interval=0.5,
            vendors=tools,
        )
    )
    running.append((payments, *(await start(payments, payments_address))))
    addresses = [address for _, _, address in running]
    settings = GatewaySettings("127.0.0.1", 0, *addresses, max_body_bytes=65536, auth_cache_seconds=30, call_timeout=30)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        yield Stack(
            *addresses,
            app=app,
            invoicing_service=invoicing,
            invoicing_database=invoicing_database,
            stripe=stripe_double,
            chartmogul=chartmogul,
        )
    for service, server, _ in reversed(running):
        await grpc_server.stop(service, server, grace=1)


@dataclass
class Tenant:
    """A fresh organization with its own API key and HTTP client."""

    organization_id: str
    key: str
    http: httpx.AsyncClient
    stack: Stack | None = None
    stripe: Account | None = None  # its own Stripe account, once connected

    async def connect_stripe(self, account: Account | None = None) -> Account:
        """Connects a Stripe account of the stack's double as the
        organization's own: `account`, else a new one on the session's
        localstripe (whose objects, such as LocalStripe.customer_with_card's,
        it sees)."""
        assert self.stack is not None and self.stack.stripe is not None
        account = account or self.stack.stripe.add_account()
        body = {"secret_key": account.api_key, "webhook_secret": account.webhook_secret}
        connected = await self.http.post("/v1/payment_providers/stripe", json=body)
        assert connected.status_code == 201, connected.text
        self.stripe = account
        return account

    def stripe_client(self) -> stripe.StripeClient:
        """A client of the organization's own Stripe account, as its staff would use it."""
        assert self.stack is not None and self.stack.stripe is not None and self.stripe is not None
        return stripe.StripeClient(
            self.stripe.api_key,
            base_addresses={"api": self.stack.stripe.url},
            http_client=stripe.HTTPXClient(),
            max_network_retries=0,
        )

    async def customer_with_card(self, number: str = GOOD_CARD) -> tuple[str, str]:
        """A customer with a saved card in the organization's own Stripe account: (cus_..., pm_...)."""
        return await customer_with_card(self.stripe_client(), number)

    async def bill(self, customer_id: str = "") -> int:
        """Runs billing for the organization (one customer's, when given) as
        the billing run would, without its settle wait; the invoices it made."""
        assert self.stack is not None
        async with self.stack.channel("invoicing") as channel:
            reply = await billing_runs_pb2_grpc.BillingRunServiceStub(channel).RunBilling(
                billing_runs_pb2.RunBillingRequest(customer_id=customer_id),
                metadata=tenancy.metadata(self.organization_id),
            )
        return reply.invoices_created


async def organization(stack: Stack, org: str = "") -> str:
    """Creates an organization in the stack's catalog (`org`, else a fresh
    id): services act only for organizations that exist. Returns its id."""
    org = org or unique("org")
    async with stack.channel("catalog") as channel:
        await organizations_pb2_grpc.OrganizationServiceStub(channel).CreateOrganization(
            organizations_pb2.CreateOrganizationRequest(id=org, name=org)
        )
    return org


async def new_tenant(stack: Stack) -> Tenant:
    async with stack.channel("catalog") as channel:
        stub = organizations_pb2_grpc.OrganizationServiceStub(channel)
        org = await stub.CreateOrganization(organizations_pb2.CreateOrganizationRequest(name="Test org"))
        key = await stub.CreateApiKey(organizations_pb2.CreateApiKeyRequest(organization_id=org.id))
    http = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=stack.app),
        base_url="http://bxb.test",
        headers={"Authorization": f"Bearer {key.secret}"},
    )
    return Tenant(org.id, key.secret, http, stack)


@pytest.fixture
async def tenant(stack: Stack) -> AsyncIterator[Tenant]:
    t = await new_tenant(stack)
    yield t
    await t.http.aclose()


@pytest.fixture
def make_tenant(stack: Stack) -> Callable[[], Awaitable[Tenant]]:
    return lambda: new_tenant(stack)


@pytest.fixture
async def stripe_tenant(tenant: Tenant) -> Tenant:
    """A fresh organization that has connected its own Stripe account (on the session's localstripe)."""
    await tenant.connect_stripe()
    return tenant


async def eventually(check: Callable[[], Awaitable[object]], timeout: float = 10.0, interval: float = 0.05):
    """Retries an async check until it stops raising AssertionError."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            return await check()
        except AssertionError:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(interval)


class Parking:
    """A parker (bus.Parker) keeping what it is given; failing while `broken`."""

    def __init__(self):
        self.parked: list[bus.Parked] = []
        self.broken = False

    async def __call__(self, parked: bus.Parked) -> None:
        if self.broken:
            raise RuntimeError("the dead-letter store is down")
        self.parked.append(parked)


def unique(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(4)}"


__all__ = ["Infra", "Parking", "Stack", "Tenant", "eventually", "organization", "unique"]
