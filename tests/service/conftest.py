"""Fixtures shared by the service tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from services.common import bus, peers
from services.common.outbox import OutboxRelay
from services.invoicing.billing import Biller
from services.invoicing.calculations import Pricing
from services.invoicing.fees import FeeCalculator
from services.invoicing.models import Outbox
from services.invoicing.progressive import ProgressiveBilling
from services.invoicing.projection import SubscriptionProjection
from services.invoicing.requested import RequestedInvoices
from services.metering.clickhouse import ClickHouse, Embedded, Remote
from services.metering.store import EventStore
from tests.conftest import Infra, Stack, organization, unique
from tests.service.announcement_helpers import Announcements, opened
from tests.service.invoicing_helpers import InvoicingDb
from tests.service.payments_helpers import PaymentsDb


@pytest.fixture(scope="session", params=["embedded", "remote"])
async def clickhouse(request, infra: Infra) -> AsyncIterator[ClickHouse]:
    """Both ClickHouse transports, for storage tests that must pass on each: Embedded
    opens a second session on the test session's chdb; Remote talks to the chdb
    HTTP server process."""
    ch = Embedded(infra.chdb_path) if request.param == "embedded" else Remote(request.getfixturevalue("clickhouse_url"))
    yield ch
    await ch.close()


@pytest.fixture(scope="session")
async def store(clickhouse: ClickHouse) -> EventStore:
    """An event store on each transport; tests keep apart by organization."""
    store = EventStore(clickhouse, "bxb_store")
    await store.create_schema()
    return store


@pytest.fixture
async def org(request: pytest.FixtureRequest) -> str:
    """A fresh organization id: created in catalog when the test runs the
    stack (services act only for organizations that exist)."""
    if "stack" in request.fixturenames:
        return await organization(request.getfixturevalue("stack"))
    return unique("org")


@pytest.fixture
async def invoicing_db(stack: Stack) -> AsyncIterator[InvoicingDb]:
    handle = InvoicingDb(stack)
    yield handle
    await handle.close()


@pytest.fixture
async def biller(infra: Infra, stack: Stack, invoicing_db: InvoicingDb) -> AsyncIterator[Biller]:
    """A biller of its own on invoicing's database, as a second invoicing
    process would be, told what time it is (no settle delay)."""
    metering, catalog = peers.Metering(stack.metering), peers.Catalog(stack.catalog)
    # Never opened nor started: rows stay for the service's relay.
    relay = OutboxRelay(invoicing_db.sessions, Outbox, bus.Bus(infra.nats.url, unique("unopened")))
    fees = FeeCalculator(invoicing_db.sessions, metering, catalog)
    pricing = Pricing(invoicing_db.sessions, fees, SubscriptionProjection(invoicing_db.sessions, catalog))
    progressive = ProgressiveBilling(
        invoicing_db.sessions, fees, RequestedInvoices(invoicing_db.sessions, fees, pricing, relay)
    )
    yield Biller(invoicing_db.sessions, fees, relay, timedelta(0), progressive=progressive)
    await metering.close()
    await catalog.close()


@pytest.fixture
async def payments_db(stack: Stack, infra: Infra) -> AsyncIterator[PaymentsDb]:
    handle = PaymentsDb(infra, stack)
    yield handle
    await handle.invoicing.close()
    await handle.engine.dispose()


@pytest.fixture
async def announcements(stack: Stack, infra: Infra) -> AsyncIterator[Announcements]:
    """The announcements the stack's payments service stores, and endpoints subscribed there."""
    async with opened(infra) as handle:
        yield handle
