"""Draft invoices: a customer's list starts with each open period priced as it stands."""

from __future__ import annotations

from datetime import timedelta

import grpc
import pytest

from bxb.catalog.v1 import events_pb2 as catalog_events
from bxb.catalog.v1 import subscriptions_pb2
from bxb.invoicing.v1 import calculations_pb2, calculations_pb2_grpc, invoices_pb2_grpc
from bxb.invoicing.v1 import invoices_pb2 as pb
from services.common import tenancy
from services.common.periods import add_months
from services.common.timestamps import format_rfc3339, from_proto, to_proto, utcnow
from services.invoicing.models import Subscription
from services.invoicing.projection import SubscriptionProjection
from tests.conftest import Stack, Tenant, unique
from tests.service.invoicing_helpers import InvoicingDb, create_plan, send, subscribe

QUARTER = [{"billable_metric_code": "api_requests", "charge_model": "standard", "properties": {"amount": "0.25"}}]


@pytest.fixture
async def invoices(stack: Stack):
    async with grpc.aio.insecure_channel(stack.invoicing) as channel:
        yield invoices_pb2_grpc.InvoiceServiceStub(channel)


def whole_seconds_ago(days: float):
    return (utcnow() - timedelta(days=days)).replace(microsecond=0)


async def end(invoicing_db: InvoicingDb, tenant: Tenant, sub: dict, when) -> None:
    """Applies the catalog's announcement that `sub` ends at `when`."""
    event = catalog_events.SubscriptionUpdated(
        event_id=unique("evt"),
        organization_id=tenant.organization_id,
        subscription=subscriptions_pb2.Subscription(id=sub["id"], terminate_time=to_proto(when)),
    )
    await SubscriptionProjection(invoicing_db.sessions).handle(
        "bxb.catalog.v1.subscription_updated", event.SerializeToString()
    )


async def test_the_first_page_starts_with_the_draft_of_the_open_period(
    tenant: Tenant, invoices, invoicing_db: InvoicingDb
):
    await create_plan(tenant, "live", QUARTER, amount_cents=500)
    start = whole_seconds_ago(70)  # two ended monthly periods, the third one open
    sub = await subscribe(tenant, "drafty", "live", format_rfc3339(start))
    pending = await subscribe(tenant, "drafty", "live", "2099-01-01T00:00:00Z")  # no open period yet
    await send(tenant, "drafty", 40, format_rfc3339(whole_seconds_ago(1 / 24)))
    await send(tenant, "drafty", 8, format_rfc3339(start))  # in the first period, already invoiced
    await invoicing_db.projected(pending["id"])
    meta = tenancy.metadata(tenant.organization_id)
    # Before the billing run: the open period and both ended ones as drafts, newest first; nothing stored.
    unbilled = await invoices.ListInvoices(pb.ListInvoicesRequest(customer_id="drafty"), metadata=meta)
    assert [(i.status, from_proto(i.period_start), i.total_amount_cents) for i in unbilled.invoices] == [
        (pb.INVOICE_STATUS_DRAFT, add_months(start, 2), 1500),
        (pb.INVOICE_STATUS_DRAFT, add_months(start, 1), 500),
        (pb.INVOICE_STATUS_DRAFT, start, 700),
    ]
    assert await invoicing_db.invoices(sub["id"]) == []  # reading issued nothing
    await tenant.bill("drafty")

    first = await invoices.ListInvoices(pb.ListInvoicesRequest(customer_id="drafty", page_size=1), metadata=meta)
    draft, newest = first.invoices
    assert (draft.id, draft.number, draft.status, draft.timing) == (
        "",
        "",
        pb.INVOICE_STATUS_DRAFT,
        pb.BILLING_TIMING_IN_ARREARS,
    )
    assert (draft.customer_id, draft.subscription_id, draft.plan_code, draft.currency) == (
        "drafty",
        sub["id"],
        "live",
        "USD",
    )
    assert (from_proto(draft.period_start), from_proto(draft.period_end)) == (
        add_months(start, 2),
        add_months(start, 3),
    )
    # The base fee of the whole period, and 40 tokens x 0.25 so far.
    assert [(f.type, f.amount_cents) for f in draft.fees] == [
        (pb.FEE_TYPE_SUBSCRIPTION, 500),
        (pb.FEE_TYPE_CHARGE, 1000),
    ]
    assert (draft.subtotal_cents, draft.total_amount_cents) == (1500, 1500)
    assert not draft.HasField("issue_time") and not draft.HasField("create_time")

    assert (newest.status, from_proto(newest.period_start)) == (pb.INVOICE_STATUS_FINALIZED, add_months(start, 1))
    second = await invoices.ListInvoices(
        pb.ListInvoicesRequest(customer_id="drafty", page_size=1, page_token=first.next_page_token),
        metadata=meta,
    )
    [oldest] = second.invoices  # drafts head the first page only
    assert (oldest.status, from_proto(oldest.period_start), oldest.total_amount_cents) == (
        pb.INVOICE_STATUS_FINALIZED,
        start,
        700,  # 500 + 8 tokens x 0.25
    )

    everyone = await invoices.ListInvoices(pb.ListInvoicesRequest(), metadata=meta)
    assert [i.status for i in everyone.invoices] == [pb.INVOICE_STATUS_FINALIZED] * 2  # drafts need a customer


async def test_ended_subscriptions_and_periods_without_arrears_fees_have_no_draft(
    stack: Stack, tenant: Tenant, invoices, invoicing_db: InvoicingDb
):
    await create_plan(tenant, "metered", QUARTER, amount_cents=3000)
    await create_plan(tenant, "upfront", [], amount_cents=2500, pay_in_advance=True)
    start = whole_seconds_ago(3)
    ended = await subscribe(tenant, "mixed", "metered", format_rfc3339(start))
    upfront = await subscribe(tenant, "mixed", "upfront", format_rfc3339(start))
    ending = await subscribe(tenant, "mixed", "metered", format_rfc3339(start))
    for sub in (ended, upfront, ending):
        await invoicing_db.projected(sub["id"])
    await end(invoicing_db, tenant, ended, start + timedelta(days=1))
    later = start + timedelta(days=5)
    await end(invoicing_db, tenant, ending, later)  # a scheduled end, after now
    meta = tenancy.metadata(tenant.organization_id)
    await tenant.bill("mixed")

    listed = await invoices.ListInvoices(pb.ListInvoicesRequest(customer_id="mixed"), metadata=meta)
    drafts = [i for i in listed.invoices if i.status == pb.INVOICE_STATUS_DRAFT]
    [draft] = drafts  # the upfront plan bills nothing at the period's end, the ended one has no open period
    assert (draft.subscription_id, from_proto(draft.period_start), from_proto(draft.period_end)) == (
        ending["id"],
        start,
        later,  # cut at the scheduled end, its base fee prorated
    )
    full_month = add_months(start, 1) - start
    share = timedelta(days=5) / full_month
    assert abs(draft.fees[0].amount_cents - 3000 * share) <= 0.5
    finalized = {(i.subscription_id, i.timing) for i in listed.invoices if i.status == pb.INVOICE_STATUS_FINALIZED}
    assert finalized == {(ended["id"], pb.BILLING_TIMING_IN_ARREARS), (upfront["id"], pb.BILLING_TIMING_IN_ADVANCE)}

    async with grpc.aio.insecure_channel(stack.invoicing) as channel:
        calculations = calculations_pb2_grpc.CalculationServiceStub(channel)
        usage = await calculations.GetCurrentUsage(
            calculations_pb2.GetCurrentUsageRequest(customer_id="mixed"), metadata=meta
        )
    assert [u.subscription_id for u in usage.subscriptions] == [upfront["id"], ending["id"]]  # not the ended one


async def test_the_gateway_shows_drafts_in_a_customers_lists_only(tenant: Tenant, invoicing_db: InvoicingDb):
    await create_plan(tenant, "gw", QUARTER, amount_cents=100)
    sub = await subscribe(tenant, "gwc", "gw", format_rfc3339(whole_seconds_ago(40)))
    await invoicing_db.projected(sub["id"])
    await tenant.bill("gwc")
    h = tenant.http

    by_path = (await h.get("/v1/customers/gwc/invoices")).json()
    by_query = (await h.get("/v1/invoices", params={"customer_id": "gwc"})).json()
    assert by_path == by_query
    draft, finalized = by_path["invoices"]
    assert {k: draft[k] for k in ("id", "number", "status", "timing", "issued_at", "created_at", "calculation_id")} == {
        "id": None,
        "number": None,
        "status": "draft",
        "timing": "in_arrears",
        "issued_at": None,
        "created_at": None,
        "calculation_id": None,
    }
    assert (finalized["status"], finalized["timing"], finalized["number"]) == ("finalized", "in_arrears", "INV-000001")
    assert draft["period_start"] == finalized["period_end"]
    base, charge = draft["fees"]
    assert (base["period_start"], base["period_end"]) == (draft["period_start"], draft["period_end"])
    assert (charge["group"], charge["filter"], charge["units"]) == ({}, None, "0")
    everything = (await h.get("/v1/invoices")).json()["invoices"]
    assert [i["status"] for i in everything] == ["finalized"]


async def test_a_subscription_whose_clock_is_unknown_here_has_no_draft_yet(
    tenant: Tenant, invoices, invoicing_db: InvoicingDb
):
    await create_plan(tenant, "clocked", QUARTER, amount_cents=100)
    sub = await subscribe(tenant, "unclocked", "clocked", format_rfc3339(whole_seconds_ago(3)))
    await invoicing_db.projected(sub["id"])
    async with invoicing_db.sessions() as session, session.begin():  # as if its clock's announcement were late
        row = await session.get(Subscription, sub["id"])
        row.test_clock_id = "clk_not_announced"
    listed = await invoices.ListInvoices(
        pb.ListInvoicesRequest(
            customer_id="unclocked",
        ),
        metadata=tenancy.metadata(tenant.organization_id),
    )
    assert list(listed.invoices) == []
