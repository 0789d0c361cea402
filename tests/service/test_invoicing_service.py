"""InvoiceService over gRPC: invoices, current usage, the subscription projection."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from sqlalchemy import select

from bxb.catalog.v1 import events_pb2 as catalog_events
from bxb.catalog.v1 import plans_pb2, subscriptions_pb2
from bxb.invoicing.v1 import calculations_pb2, calculations_pb2_grpc, invoices_pb2, invoices_pb2_grpc
from deploy.embedded import free_port
from services.common import peers, tenancy
from services.common.db import create_engine, migrate
from services.common.db import sessions as db_sessions
from services.common.errors import Unavailable, error_info
from services.common.timestamps import format_rfc3339, to_proto, utcnow
from services.invoicing.models import Subscription
from services.invoicing.projection import SubscriptionProjection
from services.invoicing.server import MIGRATIONS
from tests.conftest import Stack, Tenant, unique
from tests.service.invoicing_helpers import InvoicingDb, at, create_plan, send, subscribe

STANDARD = [{"billable_metric_code": "api_requests", "charge_model": "standard", "properties": {"amount": "0.25"}}]


@pytest.fixture
async def invoices(stack: Stack):
    async with grpc.aio.insecure_channel(stack.invoicing) as channel:
        yield invoices_pb2_grpc.InvoiceServiceStub(channel)


@pytest.fixture
async def calculations(stack: Stack):
    async with grpc.aio.insecure_channel(stack.invoicing) as channel:
        yield calculations_pb2_grpc.CalculationServiceStub(channel)


async def test_current_usage_prices_the_open_period(tenant: Tenant, calculations, invoicing_db: InvoicingDb):
    await create_plan(tenant, "live", STANDARD)
    sub = await subscribe(tenant, "now", "live", "2026-01-15T00:00:00Z")
    future = await subscribe(tenant, "now", "live", "2099-01-01T00:00:00Z")
    assert future["status"] == "pending"
    await invoicing_db.projected(sub["id"])
    await invoicing_db.projected(future["id"])
    await send(tenant, "now", 10, "2026-01-15T00:00:00Z")  # in a closed period: not current usage
    await send(tenant, "now", 6, format_rfc3339(utcnow()))
    reply = await calculations.GetCurrentUsage(
        calculations_pb2.GetCurrentUsageRequest(customer_id="now"), metadata=tenancy.metadata(tenant.organization_id)
    )
    [usage] = reply.subscriptions  # the pending subscription has no open period yet
    assert usage.subscription_id == sub["id"]
    assert usage.period_start.ToDatetime() <= utcnow().replace(tzinfo=None) < usage.period_end.ToDatetime()
    assert (usage.amount_cents, usage.fees[0].units) == (150, "6")

    only = await calculations.GetCurrentUsage(
        calculations_pb2.GetCurrentUsageRequest(customer_id="now", subscription_id=sub["id"]),
        metadata=tenancy.metadata(tenant.organization_id),
    )
    assert [u.subscription_id for u in only.subscriptions] == [sub["id"]]


async def test_unknown_subscription_and_invoice_are_not_found(tenant: Tenant, invoices, calculations):
    meta = tenancy.metadata(tenant.organization_id)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await calculations.GetCurrentUsage(
            calculations_pb2.GetCurrentUsageRequest(customer_id="x", subscription_id="sub_missing"), metadata=meta
        )
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    assert error_info(raised.value).metadata["field"] == "subscription_id"
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await invoices.GetInvoice(invoices_pb2.GetInvoiceRequest(id="inv_missing"), metadata=meta)
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


async def test_invoices_of_one_organization_are_invisible_to_another(
    tenant: Tenant, make_tenant, invoices, invoicing_db: InvoicingDb
):
    await create_plan(tenant, "p", STANDARD)
    sub = await subscribe(tenant, "shared_name", "p", "2026-08-01T00:00:00Z")
    await invoicing_db.projected(sub["id"])
    await tenant.bill("shared_name")
    mine = await invoices.ListInvoices(
        invoices_pb2.ListInvoicesRequest(customer_id="shared_name"), metadata=tenancy.metadata(tenant.organization_id)
    )
    assert mine.invoices
    other = await make_tenant()
    try:
        theirs = await invoices.ListInvoices(
            invoices_pb2.ListInvoicesRequest(customer_id="shared_name"),
            metadata=tenancy.metadata(other.organization_id),
        )
        assert list(theirs.invoices) == []
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await invoices.GetInvoice(
                invoices_pb2.GetInvoiceRequest(id=mine.invoices[0].id), metadata=tenancy.metadata(other.organization_id)
            )
        assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        await other.http.aclose()


async def test_projection_is_idempotent_and_ignores_unknown_events(invoicing_db: InvoicingDb):
    projection = SubscriptionProjection(invoicing_db.sessions)
    sub_id = unique("sub")
    event = catalog_events.SubscriptionCreated(
        event_id=unique("evt"),
        organization_id=unique("org"),
        subscription=subscriptions_pb2.Subscription(
            id=sub_id,
            customer_id="c",
            billing_time=subscriptions_pb2.BILLING_TIME_ANNIVERSARY,
            start_time=to_proto(at("2026-01-01T00:00:00")),
            create_time=to_proto(at("2026-01-01T00:00:00")),
        ),
        plan=plans_pb2.Plan(code="p", interval=plans_pb2.PLAN_INTERVAL_MONTHLY, currency="USD"),
    )
    for _ in range(2):  # a redelivery
        await projection.handle("bxb.catalog.v1.subscription_created", event.SerializeToString())
    await projection.handle("bxb.catalog.v1.something_new", b"\x00")
    row = await invoicing_db.projected(sub_id)
    assert (row.customer_id, row.plan["code"]) == ("c", "p")


async def test_list_invoices_pages_newest_period_first(tenant: Tenant, invoices, invoicing_db: InvoicingDb):
    await create_plan(tenant, "pages", STANDARD)
    sub = await subscribe(tenant, "pager", "pages", "2026-05-01T00:00:00Z")
    await invoicing_db.projected(sub["id"])
    await tenant.bill("pager")
    meta = tenancy.metadata(tenant.organization_id)
    first = await invoices.ListInvoices(
        invoices_pb2.ListInvoicesRequest(customer_id="pager", page_size=2), metadata=meta
    )
    second = await invoices.ListInvoices(
        invoices_pb2.ListInvoicesRequest(customer_id="pager", page_size=2, page_token=first.next_page_token),
        metadata=meta,
    )
    # A customer's first page starts with the draft of its open period, over gRPC as over REST.
    draft, *issued = first.invoices
    assert (draft.status, draft.id) == (invoices_pb2.INVOICE_STATUS_DRAFT, "")
    starts = [i.period_start.ToDatetime() for i in [*issued, *second.invoices]]
    assert len(issued) == 2 and first.next_page_token
    assert starts == sorted(starts, reverse=True)
    everything = await invoices.ListInvoices(invoices_pb2.ListInvoicesRequest(), metadata=meta)
    assert {i.customer_id for i in everything.invoices} == {"pager"}


async def test_catch_up_reads_subscriptions_the_events_have_not_brought_yet(
    stack: Stack, infra, tenant: Tenant, caplog
):
    """A projection on an empty database stands for one whose event is late."""
    await create_plan(tenant, "cu", STANDARD, amount_cents=500)
    subs = [await subscribe(tenant, "catchup", "cu", "2026-08-01T00:00:00Z") for _ in range(2)]
    url = await infra.database(unique("inv").lower())
    await migrate(url, MIGRATIONS)
    engine = create_engine(url, pool_size=2)
    try:
        async with grpc.aio.insecure_channel(stack.catalog) as catalog:
            projection = SubscriptionProjection(db_sessions(engine), peers.Catalog(channel=catalog), page_size=1)
            await projection.catch_up(tenant.organization_id, "catchup")
            await projection.catch_up(tenant.organization_id, "catchup")  # nothing new the second time
        async with db_sessions(engine)() as session:
            rows = (await session.execute(select(Subscription).order_by(Subscription.create_time))).scalars().all()
        assert [r.id for r in rows] == [s["id"] for s in subs]
        assert (
            rows[0].plan["amount_cents"] == "500"
            and rows[0].plan["charges"][0]["billable_metric_code"] == "api_requests"
        )

        nowhere = peers.Catalog("127.0.0.1:1", timeout=0.5)
        await SubscriptionProjection(db_sessions(engine), nowhere).catch_up(tenant.organization_id, "catchup")
        await nowhere.close()
        assert "catalog unreachable" in caplog.text
        await SubscriptionProjection(db_sessions(engine)).catch_up(
            tenant.organization_id, "catchup"
        )  # no catalog: no-op
    finally:
        await engine.dispose()


async def test_without_a_reachable_catalog_lookups_find_only_what_is_projected(invoicing_db: InvoicingDb):
    alone = SubscriptionProjection(invoicing_db.sessions)
    assert await alone.arrived("org_x", "sub_unknown") is None
    await alone.arrived_for("org_x", "cus_unknown")  # nothing to ask: nothing to wait for
    await alone.catch_up_clock("org_x", "clock_x")  # nothing to ask: nothing happens
    closed = f"127.0.0.1:{free_port()}"
    catalog = peers.Catalog(closed, timeout=0.3)
    cut_off = SubscriptionProjection(invoicing_db.sessions, catalog)
    for lookup in (cut_off.arrived("org_x", "sub_unknown"), cut_off.arrived_for("org_x", "cus_unknown")):
        with pytest.raises(Unavailable):  # whether it exists is unknown: retry, not 404
            await lookup
    await cut_off.catch_up_clock("org_x", "clock_x")  # logged; the clock's run bills what is known
    await catalog.close()


async def test_a_read_waits_for_a_subscription_on_its_way_and_writes_nothing(stack: Stack, infra, tenant: Tenant):
    """A projection on an empty database stands for one whose events are late."""
    await create_plan(tenant, "late", STANDARD)
    sub = await subscribe(tenant, "latecomer", "late", "2026-08-01T00:00:00Z")
    url = await infra.database(unique("inv").lower())
    await migrate(url, MIGRATIONS)
    engine = create_engine(url, pool_size=2)
    org = tenant.organization_id
    try:
        async with grpc.aio.insecure_channel(stack.catalog) as channel:
            catalog = peers.Catalog(channel=channel)
            waiting = SubscriptionProjection(db_sessions(engine), catalog, arrival=0.3)
            with pytest.raises(Unavailable):  # the catalog has it, this copy never got it
                await waiting.arrived(org, sub["id"])
            with pytest.raises(Unavailable):
                await waiting.arrived_for(org, "latecomer")
            assert await waiting.arrived(org, "sub_nowhere") is None  # the catalog has none: 404
            async with db_sessions(engine)() as session:
                assert (await session.execute(select(Subscription))).first() is None  # nothing written
            patient = SubscriptionProjection(db_sessions(engine), catalog, arrival=5)
            found = asyncio.create_task(patient.arrived(org, sub["id"]))
            await asyncio.sleep(0.1)
            await patient.catch_up(org, "latecomer")  # its event, arriving meanwhile
            assert (await found).id == sub["id"]
            await patient.arrived_for(org, "latecomer")  # the customer has one here now: no wait
    finally:
        await engine.dispose()
