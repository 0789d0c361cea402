"""Invoices on request (ABAXUS `POST /v1/invoices`) and the invoice lifecycle,
hand-computed: the seed's step C, a cutoff inside a period and the period-end
invoice deducting it, refusals that store nothing, gapless numbers, and the
void and archive transitions with their 409s."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import grpc
import pytest

from bxb.invoicing.v1 import invoices_pb2 as pb
from bxb.invoicing.v1 import invoices_pb2_grpc
from services.common import bus, peers, tenancy
from services.common.errors import Aborted, error_info
from services.common.outbox import OutboxRelay
from services.common.timestamps import to_proto
from services.invoicing.billing import Biller
from services.invoicing.calculations import Pricing
from services.invoicing.fees import FeeCalculator
from services.invoicing.models import Outbox
from services.invoicing.projection import SubscriptionProjection
from services.invoicing.requested import RequestedInvoices
from tests.conftest import Infra, Stack, Tenant, unique
from tests.service.invoicing_helpers import InvoicingDb, at, create_plan, on_clock, run_billing, send, subscribe

STANDARD = [{"billable_metric_code": "api_requests", "charge_model": "standard", "properties": {"amount": "0.001"}}]
GROWTH = {
    "id": "plan_growth",
    "currency": "USD",
    "charges": [
        {
            "metric_key": "api_calls",
            "model": "tiered",
            "properties": {
                "tiers": [{"up_to": 10000, "unit_amount": "0.001"}, {"up_to": None, "unit_amount": "0.0005"}]
            },
        }
    ],
}


async def issue(t: Tenant, customer: str, cutoff: str, expect: int = 201, **extra) -> dict:
    response = await t.http.post("/v1/invoices", json={"customer_id": customer, "cutoff_date": cutoff, **extra})
    assert response.status_code == expect, response.text
    return response.json()


async def numbers(invoicing_db: InvoicingDb, subscription_id: str) -> list[str]:
    return [i.number for i in await invoicing_db.invoices(subscription_id)]


async def test_the_seed_flow_issues_the_invoice_up_to_the_cutoff(tenant: Tenant, invoicing_db: InvoicingDb):
    h = tenant.http
    metric = {"key": "api_calls", "aggregation_type": "sum", "value_type": "integer"}
    assert (await h.post("/v1/metrics", json=metric)).status_code == 201
    assert (await h.post("/v1/price-plans", json=GROWTH)).status_code == 201
    assert (await h.post("/v1/customers", json={"id": "cust_acme"})).status_code == 201
    sub = {"customer_id": "cust_acme", "plan_id": "plan_growth", "start_date": "2026-01-01T00:00:00Z"}
    subscribed = (await h.post("/v1/subscriptions", json=sub)).json()
    for key, when in (("e1", "2026-01-10T00:00:00Z"), ("e2", "2026-03-05T00:00:00Z"), ("e3", "2026-04-02T00:00:00Z")):
        event = {
            "idempotency_key": key,
            "customer_id": "cust_acme",
            "metric_key": "api_calls",
            "value": 85000,
            "timestamp": when,
        }
        assert (await h.post("/v1/events", json=event)).status_code == 202

    invoice = await issue(tenant, "cust_acme", "2026-03-31T23:59:59Z")
    assert (invoice["status"], invoice["timing"]) == ("issued", "on_request")
    # Nothing was invoiced yet: it starts at the subscription's start and ends with March.
    assert (invoice["period_start"], invoice["period_end"]) == ("2026-01-01T00:00:00Z", "2026-04-01T00:00:00Z")
    # Each month is tiered on its own: 85,000 calls = 10,000 x $0.001 + 75,000 x $0.0005 = $47.50; February 0.
    assert [(f["period_start"][:7], f["amount_cents"]) for f in invoice["fees"]] == [
        ("2026-01", 4750),
        ("2026-02", 0),
        ("2026-03", 4750),
    ]
    assert (invoice["subtotal_cents"], invoice["total_amount_cents"]) == (9500, 9500)
    calculation = (await h.get(f"/v1/pricing/calculations/{invoice['calculation_id']}")).json()
    assert calculation["total_amount_cents"] == 9500
    assert (await h.get(f"/v1/invoices/{invoice['id']}")).json() == invoice

    # The billing run leaves the invoiced months alone and bills from April on.
    await tenant.bill("cust_acme")
    listed = (await h.get("/v1/customers/cust_acme/invoices", params={"page_size": 100})).json()["invoices"]
    finalized = sorted((i for i in listed if i["status"] != "draft"), key=lambda i: i["period_start"])
    assert finalized[0]["id"] == invoice["id"]
    assert finalized[1]["period_start"] == "2026-04-01T00:00:00Z"
    assert finalized[1]["total_amount_cents"] == 4750
    # The same cutoff again answers the invoice that ends there, issued on request or not.
    assert (await issue(tenant, "cust_acme", "2026-03-31T23:59:59Z"))["id"] == invoice["id"]
    april = await issue(tenant, "cust_acme", "2026-04-30T23:59:59Z")
    assert (april["id"], april["status"]) == (finalized[1]["id"], "issued")
    numbered = await numbers(invoicing_db, subscribed["id"])
    assert numbered == sorted(numbered) and len(set(numbered)) == len(numbered)


async def test_an_invoice_for_a_calculated_window_references_that_calculation(tenant: Tenant):
    await create_plan(tenant, "pro", STANDARD, amount_cents=4900)
    sub = await subscribe(tenant, "c1", "pro", "2026-03-01T00:00:00Z")
    await send(tenant, "c1", 25000, "2026-03-10T00:00:00Z")
    body = {
        "customer_id": "c1",
        "subscription_id": sub["id"],
        "period_start": "2026-03-01T00:00:00Z",
        "period_end": "2026-04-01T00:00:00Z",
    }
    calculated = (await tenant.http.post("/v1/pricing/calculate", json=body)).json()
    invoice = await issue(tenant, "c1", "2026-03-31T23:59:59Z")
    assert invoice["calculation_id"] == calculated["calculation_id"]
    assert invoice["total_amount_cents"] == calculated["total_amount_cents"] == 4900 + 2500


async def test_a_cutoff_inside_a_period_bills_so_far_and_the_period_end_deducts_it(
    stack: Stack, tenant: Tenant, invoicing_db: InvoicingDb
):
    await create_plan(tenant, "pro", STANDARD, amount_cents=4900)
    sub = await subscribe(tenant, "c1", "pro", "2026-03-01T00:00:00Z")
    await send(tenant, "c1", 100000, "2026-03-05T00:00:00Z")  # $100
    await send(tenant, "c1", 30000, "2026-03-20T00:00:00Z")  # $30, after the first cutoff
    await send(tenant, "c1", 20000, "2026-03-28T00:00:00Z")  # $20, after the second

    first = await issue(tenant, "c1", "2026-03-15T23:59:59Z")
    assert (first["period_start"], first["period_end"]) == ("2026-03-01T00:00:00Z", "2026-03-16T00:00:00Z")
    # 15 of March's 31 days of the base fee: 4900 x 15/31 = 2370.97 -> 2371; usage so far 10000.
    assert [(f["type"], f["amount_cents"]) for f in first["fees"]] == [("subscription", 2371), ("charge", 10000)]

    second = await issue(tenant, "c1", "2026-03-25T12:00:00Z")  # any instant: the exclusive end
    assert (second["period_start"], second["period_end"]) == ("2026-03-16T00:00:00Z", "2026-03-25T12:00:00Z")
    # March 1 to 25 noon, less what the first billed: 4900 x 24.5/31 = 3872.58 -> 3873, usage 13000.
    assert [(f["type"], f["amount_cents"]) for f in second["fees"]] == [
        ("subscription", 3873),
        ("charge", 13000),
        ("already_billed", -12371),
    ]
    assert second["total_amount_cents"] == 3873 + 13000 - 12371

    await run_billing(stack, tenant)
    final = next(i for i in await invoicing_db.invoices(sub["id"]) if i.timing == "BILLING_TIMING_IN_ARREARS")
    # The whole of March (4900 + 15000) less both invoices on request (12371 + 4502).
    assert [int(f["amount_cents"]) for f in final.fees] == [4900, 15000, -(12371 + 4502)]
    assert first["total_amount_cents"] + second["total_amount_cents"] + final.total_amount_cents == 4900 + 15000


async def test_an_invoice_billing_nothing_is_refused_and_stores_nothing(tenant: Tenant, invoicing_db: InvoicingDb):
    await create_plan(tenant, "free", STANDARD)
    sub = await subscribe(tenant, "c1", "free", "2026-03-01T00:00:00Z")
    refused = await tenant.http.post("/v1/invoices", json={"customer_id": "c1", "cutoff_date": "2026-03-31T23:59:59Z"})
    assert refused.status_code == 409, refused.text
    assert (refused.json()["error"]["reason"], refused.json()["error"]["field"]) == ("ZERO_TOTAL", "cutoff_date")
    assert await invoicing_db.invoices(sub["id"]) == []
    await send(tenant, "c1", 1000, "2026-03-10T00:00:00Z")
    invoice = await issue(tenant, "c1", "2026-03-31T23:59:59Z")
    assert invoice["total_amount_cents"] == 100
    assert invoice["number"].endswith("000001")  # the refusal took no number


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"customer_id": "c1"}, 400, "cutoff_date"),
        ({"cutoff_date": "2026-03-31T23:59:59Z"}, 400, "customer_id"),
        ({"customer_id": "c1", "cutoff_date": "2099-01-01T00:00:00Z"}, 400, "cutoff_date"),
        ({"customer_id": "c1", "cutoff_date": "9999-12-31T23:59:59Z"}, 400, "cutoff_date"),  # no second after it
        ({"customer_id": "c1", "cutoff_date": "2026-02-15T00:00:00Z"}, 409, "cutoff_date"),
        ({"customer_id": "nobody", "cutoff_date": "2026-03-31T23:59:59Z"}, 404, "customer_id"),
        (
            {"customer_id": "c1", "subscription_id": "sub_nope", "cutoff_date": "2026-03-31T23:59:59Z"},
            404,
            "subscription_id",
        ),
    ],
)
async def test_bad_requests_name_their_field(tenant: Tenant, body, status, field):
    await create_plan(tenant, "pro", STANDARD, amount_cents=4900)
    await subscribe(tenant, "c1", "pro", "2026-03-01T00:00:00Z")
    response = await tenant.http.post("/v1/invoices", json=body)
    assert (response.status_code, response.json()["error"]["field"]) == (status, field), response.text


async def test_a_customer_with_two_subscriptions_must_name_one(tenant: Tenant):
    await create_plan(tenant, "pro", STANDARD, amount_cents=4900)
    await subscribe(tenant, "c1", "pro", "2026-03-01T00:00:00Z")
    other = await subscribe(tenant, "c1", "pro", "2026-03-01T00:00:00Z")
    refused = await tenant.http.post("/v1/invoices", json={"customer_id": "c1", "cutoff_date": "2026-03-31T23:59:59Z"})
    assert (refused.status_code, refused.json()["error"]["field"]) == (400, "subscription_id")
    invoice = await issue(tenant, "c1", "2026-03-31T23:59:59Z", subscription_id=other["id"])
    assert invoice["subscription_id"] == other["id"]


async def test_void_and_archive_follow_the_lifecycle_and_refuse_the_rest(tenant: Tenant, make_tenant):
    h = tenant.http
    await create_plan(tenant, "pro", STANDARD, amount_cents=4900)
    await h.post(
        "/v1/coupons", json={"code": "FIVE", "discount_type": "fixed_amount", "discount_value": 50, "duration": "once"}
    )
    await h.post("/v1/applied_coupons", json={"customer_id": "c1", "coupon_code": "FIVE"})
    await subscribe(tenant, "c1", "pro", "2026-03-01T00:00:00Z")
    invoice = await issue(tenant, "c1", "2026-03-15T23:59:59Z")  # half of March: 4900 x 15/31 = 2371
    assert (invoice["subtotal_cents"], invoice["coupons_amount_cents"]) == (2371, -2371)  # $50 against $23.71

    voided = await h.post(f"/v1/invoices/{invoice['id']}/void")
    assert (voided.status_code, voided.json()["status"]) == (200, "voided")
    again = await h.post(f"/v1/invoices/{invoice['id']}/void")
    assert again.status_code == 409
    assert (again.json()["error"]["reason"], again.json()["error"]["field"]) == ("INVALID_TRANSITION", "status")
    assert "is voided" in again.json()["error"]["message"]

    # Voiding gave the coupon back and the days it billed: the same invoice again, with a new number.
    reissued = await issue(tenant, "c1", "2026-03-15T23:59:59Z")
    assert (reissued["total_amount_cents"], reissued["coupons_amount_cents"]) == (0, -2371)
    assert reissued["number"] != invoice["number"]
    # An invoice that closed its period does not reopen it when voided.
    closing = await issue(tenant, "c1", "2026-03-31T23:59:59Z")
    # March in full less the 2371 already billed, all of it covered by what is left of the $50.
    assert (closing["period_start"], closing["subtotal_cents"]) == ("2026-03-16T00:00:00Z", 4900 - 2371)
    assert (closing["coupons_amount_cents"], closing["total_amount_cents"]) == (-2529, 0)
    assert (await h.post(f"/v1/invoices/{closing['id']}/void")).status_code == 200
    reopened = await h.post("/v1/invoices", json={"customer_id": "c1", "cutoff_date": "2026-03-31T23:59:59Z"})
    assert (reopened.status_code, reopened.json()["error"]["reason"]) == (409, "ALREADY_INVOICED")

    archived = await h.post(f"/v1/invoices/{invoice['id']}/archive")
    assert (archived.status_code, archived.json()["status"]) == (200, "archived")
    for action in ("void", "archive"):
        refused = await h.post(f"/v1/invoices/{invoice['id']}/{action}")
        assert refused.status_code == 409 and "is archived" in refused.json()["error"]["message"]
    assert (await h.post(f"/v1/invoices/{reissued['id']}/archive")).json()["status"] == "archived"
    assert (await h.post("/v1/invoices/inv_nope/void")).status_code == 404

    other = await make_tenant()
    try:
        assert (await other.http.post(f"/v1/invoices/{reissued['id']}/void")).status_code == 404
    finally:
        await other.http.aclose()


async def test_the_billing_run_skips_a_period_closed_on_request_after_it_read_the_subscription(
    tenant: Tenant, invoicing_db: InvoicingDb, biller: Biller
):
    await create_plan(tenant, "pro", STANDARD, amount_cents=4900)
    sub = await subscribe(tenant, "c1", "pro", "2026-03-01T00:00:00Z")
    stale = await invoicing_db.projected(sub["id"])  # read before the invoice on request closes March
    issued = await issue(tenant, "c1", "2026-03-31T23:59:59Z")
    assert await biller.bill(stale, at("2026-04-02T00:00:00"), waits_after_creation=False) == 0
    assert [i.id for i in await invoicing_db.invoices(sub["id"])] == [issued["id"]]


async def test_a_period_billed_whole_on_request_before_its_end_gets_no_period_end_invoice(
    stack: Stack, tenant: Tenant, invoicing_db: InvoicingDb
):
    await create_plan(tenant, "usage_only", STANDARD)
    sub = await subscribe(tenant, "c1", "usage_only", "2026-03-01T00:00:00Z")
    await send(tenant, "c1", 5000, "2026-03-05T00:00:00Z")
    await issue(tenant, "c1", "2026-03-15T23:59:59Z")  # everything March will bill, before its end
    await run_billing(stack, tenant)
    timings = [i.timing for i in await invoicing_db.invoices(sub["id"]) if i.period_start < at("2026-04-01T00:00:00")]
    assert timings == ["BILLING_TIMING_ON_REQUEST"]
    assert (await invoicing_db.projected(sub["id"])).billed_through >= at("2026-04-01T00:00:00")


async def test_an_ended_subscription_is_invoiced_up_to_its_end(tenant: Tenant):
    await create_plan(tenant, "pro", STANDARD, amount_cents=4900)
    sub = await subscribe(tenant, "c1", "pro", "2026-11-01T00:00:00Z")
    ended = (await tenant.http.delete(f"/v1/subscriptions/{sub['id']}")).json()["terminated_at"]
    await asyncio.sleep(0.01)
    invoice = await issue(tenant, "c1", datetime.now(UTC).isoformat())
    assert invoice["period_end"] == ended


class Paused(FeeCalculator):
    """Prices as invoicing does, but waits inside pricing until released."""

    def __init__(self, sessions, metering):
        super().__init__(sessions, metering)
        self.pricing, self.release = asyncio.Event(), asyncio.Event()

    async def period_fees(self, *args, **kwargs):
        self.pricing.set()
        await self.release.wait()
        return await super().period_fees(*args, **kwargs)


async def test_a_request_that_lost_a_race_is_aborted_and_stores_nothing(
    infra: Infra, stack: Stack, tenant: Tenant, invoicing_db: InvoicingDb
):
    await create_plan(tenant, "pro", STANDARD, amount_cents=4900)
    sub = await subscribe(tenant, "c1", "pro", "2026-03-01T00:00:00Z")
    await invoicing_db.projected(sub["id"])
    metering, catalog = peers.Metering(stack.metering), peers.Catalog(stack.catalog)
    try:
        fees = Paused(invoicing_db.sessions, metering)
        pricing = Pricing(invoicing_db.sessions, fees, SubscriptionProjection(invoicing_db.sessions, catalog))
        relay = OutboxRelay(invoicing_db.sessions, Outbox, bus.Bus(infra.nats.url, unique("unopened")))
        slow = RequestedInvoices(invoicing_db.sessions, fees, pricing, relay)
        request = pb.CreateInvoiceRequest(
            customer_id="c1", subscription_id=sub["id"], cutoff_time=to_proto(at("2026-03-31T23:59:59"))
        )
        racing = asyncio.create_task(slow.create(tenant.organization_id, request))
        await fees.pricing.wait()
        winner = await issue(tenant, "c1", "2026-03-31T23:59:59Z")  # the service's own path wins
        fees.release.set()
        with pytest.raises(Aborted):
            await racing
    finally:
        await metering.close()
        await catalog.close()
    assert [i.id for i in await invoicing_db.invoices(sub["id"])] == [winner["id"]]


@pytest.mark.parametrize(
    ("fields", "field"),
    [({"cutoff_time": to_proto(at("2026-03-01T00:00:00"))}, "customer_id"), ({"customer_id": "c1"}, "cutoff_time")],
)
async def test_the_service_names_a_missing_field(stack: Stack, tenant: Tenant, fields, field):
    async with stack.channel("invoicing") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await invoices_pb2_grpc.InvoiceServiceStub(channel).CreateInvoice(
                pb.CreateInvoiceRequest(**fields), metadata=tenancy.metadata(tenant.organization_id)
            )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(refused.value).metadata["field"] == field


async def test_a_cutoff_at_an_archived_invoice_answers_it_as_it_stands(tenant: Tenant):
    await create_plan(tenant, "pro", STANDARD, amount_cents=4900)
    await subscribe(tenant, "c1", "pro", "2026-03-01T00:00:00Z")
    invoice = await issue(tenant, "c1", "2026-03-31T23:59:59Z")
    assert (await tenant.http.post(f"/v1/invoices/{invoice['id']}/archive")).status_code == 200
    again = await issue(tenant, "c1", "2026-03-31T23:59:59Z")
    assert (again["id"], again["status"]) == (invoice["id"], "archived")


async def test_the_draft_of_a_period_invoiced_in_part_deducts_what_was_billed(tenant: Tenant):
    await on_clock(tenant, "c1")  # November is open
    await create_plan(tenant, "pro", STANDARD, amount_cents=3000)
    await subscribe(tenant, "c1", "pro", "2026-11-01T00:00:00Z")
    await send(tenant, "c1", 5000, "2026-11-05T00:00:00Z")
    interim = await issue(tenant, "c1", "2026-11-09T23:59:59Z")  # 9 of 30 days: 900, usage 500
    assert interim["total_amount_cents"] == 1400
    [draft] = [
        i for i in (await tenant.http.get("/v1/customers/c1/invoices")).json()["invoices"] if i["status"] == "draft"
    ]
    assert [(f["type"], f["amount_cents"]) for f in draft["fees"]] == [
        ("subscription", 3000),
        ("charge", 500),
        ("already_billed", -1400),
    ]
    assert draft["total_amount_cents"] == 2100
