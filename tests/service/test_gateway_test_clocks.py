"""Test clocks through the gateway: a customer on a clock is billed at the
clock's time, a year of it in one call, and real customers never notice."""

from __future__ import annotations

import grpc
import pytest
from sqlalchemy import delete

from bxb.catalog.v1 import organizations_pb2, organizations_pb2_grpc, test_clocks_pb2, test_clocks_pb2_grpc
from bxb.invoicing.v1 import billing_runs_pb2, billing_runs_pb2_grpc
from deploy.embedded import free_port
from services.catalog import server as catalog_server
from services.common import grpc_server, tenancy
from services.common.errors import error_info
from services.common.timestamps import parse_rfc3339, to_proto
from services.invoicing.models import TestClock
from tests.conftest import Infra, Stack, Tenant, eventually, unique
from tests.service.invoicing_helpers import InvoicingDb
from tests.service.test_gateway_coupons import LAUNCH20
from tests.service.test_walkthrough_bill_by_subscription import METRIC, PLAN


def tokens(month: int) -> int:
    """Month m's usage: 10,000 x m tokens above the 100,000 free, so its charge is 500 x m cents."""
    return 100_000 + 10_000 * month


async def setup(h, start: str = "2025-01-01T00:00:00Z") -> str:
    assert (await h.post("/v1/billable_metrics", json=METRIC)).status_code == 201
    assert (await h.post("/v1/plans", json=PLAN)).status_code == 201
    clock = await h.post("/v1/test_clocks", json={"name": "a year of pro", "frozen_time": start})
    assert clock.status_code == 201, clock.text
    assert clock.json()["frozen_time"] == start
    return clock.json()["id"]


async def send(h, customer: str, timestamp: str, amount: int) -> None:
    event = {"customer_id": customer, "code": "api_requests", "timestamp": timestamp, "properties": {"tokens": amount}}
    assert (await h.post("/v1/events", json=event)).status_code == 200


async def invoices(h, customer: str) -> list[dict]:
    """The customer's stored invoices (the open period's computed draft left out), oldest first."""
    listed = await h.get(f"/v1/customers/{customer}/invoices", params={"page_size": 100})
    return sorted((i for i in listed.json()["invoices"] if i["id"]), key=lambda i: i["period_start"])


async def test_a_clock_advanced_twelve_months_bills_each_month_once_with_late_usage_on_the_next(tenant: Tenant):
    h = tenant.http
    clock = await setup(h)
    customer = {"id": "cus_clock", "test_clock_id": clock}
    created = await h.post("/v1/customers", json=customer)
    assert (created.status_code, created.json()["test_clock_id"]) == (201, clock)
    sub = await h.post("/v1/subscriptions", json={"customer_id": "cus_clock", "plan_code": "pro"})
    # No start date: the clock's time, not the real one; it is active at the clock's time.
    assert (sub.json()["start_date"], sub.json()["status"]) == ("2025-01-01T00:00:00Z", "active")
    for month in range(1, 13):
        await send(h, "cus_clock", f"2025-{month:02d}-15T12:00:00Z", tokens(month))

    # The real time is long past 2025, yet nothing is billed before the clock
    # moves: the open period, at the clock's time, is January's (listed once
    # invoicing has heard of the subscription).
    async def january_only() -> None:
        listed = (await h.get("/v1/customers/cus_clock/invoices")).json()["invoices"]
        assert [(i["status"], i["period_start"], i["subtotal_cents"]) for i in listed] == [
            ("draft", "2025-01-01T00:00:00Z", 4900 + 500)
        ]

    await eventually(january_only)

    half = await h.post(f"/v1/test_clocks/{clock}/advance", json={"frozen_time": "2025-07-01T00:00:00Z"})
    assert (half.status_code, half.json()["invoices_created"]) == (200, 6), half.text
    # June's usage grows after its invoice was final: 2,000 tokens, 100 cents.
    await send(h, "cus_clock", "2025-06-20T08:00:00Z", 2_000)
    rest = await h.post(f"/v1/test_clocks/{clock}/advance", json={"frozen_time": "2026-01-01T00:00:00Z"})
    assert (rest.status_code, rest.json()["invoices_created"]) == (200, 6), rest.text
    assert (await h.get(f"/v1/test_clocks/{clock}")).json()["frozen_time"] == "2026-01-01T00:00:00Z"

    billed = await invoices(h, "cus_clock")
    assert [i["period_start"][:10] for i in billed] == [f"2025-{m:02d}-01" for m in range(1, 13)]
    assert all(i["status"] == "finalized" for i in billed)
    june, july = billed[5], billed[6]
    assert [(f["type"], f["amount_cents"]) for f in june["fees"]] == [("subscription", 4900), ("charge", 3000)]
    assert [(f["type"], f["amount_cents"]) for f in july["fees"]] == [
        ("subscription", 4900),
        ("charge", 3500),
        ("late_usage", 100),
    ]
    assert july["fees"][2]["period_start"] == "2025-06-01T00:00:00Z"
    # 12 x 4900 + 500 x (1 + ... + 12) + the late 100.
    assert sum(i["total_amount_cents"] for i in billed) == 12 * 4900 + 500 * 78 + 100
    numbers = [int(i["number"].split("-")[1]) for i in billed]
    assert sorted(numbers) == list(range(1, 13))  # gapless, each month once


async def test_a_clock_only_moves_forward_and_leaves_real_customers_alone(tenant: Tenant):
    h = tenant.http
    clock = await setup(h)
    await h.post("/v1/customers", json={"id": "cus_sim", "test_clock_id": clock})
    future = {"customer_id": "cus_sim", "plan_code": "pro", "start_date": "2025-03-01T00:00:00Z"}
    pending = await h.post("/v1/subscriptions", json=future)
    assert pending.json()["status"] == "pending"  # in the clock's future, though long past in real time
    real = {"customer_id": "cus_real", "plan_code": "pro", "start_date": "2026-09-01T00:00:00Z"}
    assert (await h.post("/v1/subscriptions", json=real)).status_code == 201

    back = await h.post(f"/v1/test_clocks/{clock}/advance", json={"frozen_time": "2024-12-31T00:00:00Z"})
    assert (back.status_code, back.json()["error"]["field"]) == (400, "frozen_time")
    moved = await h.post(f"/v1/test_clocks/{clock}/advance", json={"frozen_time": "2025-04-01T00:00:00Z"})
    assert moved.json()["invoices_created"] == 1  # March, and only the clock's customer
    listed = (await h.get("/v1/subscriptions", params={"customer_id": "cus_sim"})).json()["subscriptions"]
    assert [s["status"] for s in listed] == ["active"]
    assert [i["total_amount_cents"] for i in await invoices(h, "cus_sim")] == [4900]
    assert (await h.get("/v1/test_clocks")).json()["test_clocks"][0]["id"] == clock


async def test_clock_errors_name_the_field(tenant: Tenant):
    h = tenant.http
    missing = await h.post("/v1/test_clocks", json={"name": "no time"})
    assert (missing.status_code, missing.json()["error"]["field"]) == (400, "frozen_time")
    far = await h.post("/v1/test_clocks", json={"frozen_time": "1999-12-31T00:00:00Z"})
    assert (far.status_code, far.json()["error"]["field"]) == (400, "frozen_time")
    unknown = await h.post("/v1/customers", json={"id": "cus_x", "test_clock_id": "clock_nope"})
    assert (unknown.status_code, unknown.json()["error"]["field"]) == (404, "test_clock_id")
    assert (await h.get("/v1/test_clocks/clock_nope")).status_code == 404
    nowhere = await h.post("/v1/test_clocks/clock_nope/advance", json={"frozen_time": "2025-01-01T00:00:00Z"})
    assert nowhere.status_code == 404
    grace = await h.post("/v1/customers", json={"id": "cus_y", "invoice_grace_period": 366})
    assert (grace.status_code, grace.json()["error"]["field"]) == (400, "invoice_grace_period")


async def test_a_voided_period_is_not_billed_again_as_late_usage(tenant: Tenant):
    h = tenant.http
    clock = await setup(h)
    await h.post("/v1/customers", json={"id": "cus_void", "test_clock_id": clock})
    await h.post("/v1/subscriptions", json={"customer_id": "cus_void", "plan_code": "pro"})
    await send(h, "cus_void", "2025-01-15T00:00:00Z", tokens(1))
    await h.post(f"/v1/test_clocks/{clock}/advance", json={"frozen_time": "2025-02-01T00:00:00Z"})
    [january] = await invoices(h, "cus_void")
    assert (await h.post(f"/v1/invoices/{january['id']}/void")).status_code == 200
    await h.post(f"/v1/test_clocks/{clock}/advance", json={"frozen_time": "2025-03-01T00:00:00Z"})
    february = (await invoices(h, "cus_void"))[1]
    # The user cancelled January's invoice: February's does not bill January again.
    assert [(f["type"], f["amount_cents"]) for f in february["fees"]] == [("subscription", 4900), ("charge", 0)]


async def test_the_preview_of_a_subscription_not_started_on_its_clock_is_refused(tenant: Tenant):
    h = tenant.http
    clock = await setup(h)
    await h.post("/v1/customers", json={"id": "cus_later", "test_clock_id": clock})
    body = {"customer_id": "cus_later", "plan_code": "pro", "start_date": "2025-06-01T00:00:00Z"}
    sub = (await h.post("/v1/subscriptions", json=body)).json()
    refused = await h.post("/v1/invoices/preview", json={"subscription_id": sub["id"]})
    assert (refused.status_code, refused.json()["error"]["reason"]) == (409, "NO_OPEN_PERIOD")


async def test_a_subscription_whose_clock_invoicing_does_not_know_is_never_billed_at_the_real_time(
    stack: Stack, tenant: Tenant, invoicing_db: InvoicingDb
):
    h = tenant.http
    clock = await setup(h)
    await h.post("/v1/customers", json={"id": "cus_lost", "test_clock_id": clock})
    sub = (await h.post("/v1/subscriptions", json={"customer_id": "cus_lost", "plan_code": "pro"})).json()
    await invoicing_db.projected(sub["id"])
    async with invoicing_db.sessions() as session, session.begin():  # as if its announcement were still on its way
        await session.execute(delete(TestClock).where(TestClock.id == clock))
    async with stack.channel("invoicing") as channel:
        stub = billing_runs_pb2_grpc.BillingRunServiceStub(channel)
        md = tenancy.metadata(tenant.organization_id)
        assert (await stub.RunBilling(billing_runs_pb2.RunBillingRequest(), metadata=md)).invoices_created == 0
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.RunBilling(billing_runs_pb2.RunBillingRequest(test_clock_id=clock), metadata=md)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error_info(refused.value).metadata["field"] == "frozen_time"
    # The catalog refuses a clock without a time too, whoever calls it.
    async with stack.channel("catalog") as channel:
        clocks = test_clocks_pb2_grpc.TestClockServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as untimed:
            await clocks.CreateTestClock(
                test_clocks_pb2.CreateTestClockRequest(test_clock=test_clocks_pb2.TestClock(name="untimed")),
                metadata=md,
            )
        assert error_info(untimed.value).metadata["field"] == "test_clock.frozen_time"


async def test_coupons_and_add_ons_of_a_clock_s_customer_follow_its_time(tenant: Tenant):
    h = tenant.http
    clock = await setup(h)
    await h.post("/v1/customers", json={"id": "cus_promo", "test_clock_id": clock})
    await h.post("/v1/subscriptions", json={"customer_id": "cus_promo", "plan_code": "pro"})
    assert (await h.post("/v1/coupons", json=LAUNCH20)).status_code == 201
    applied = await h.post("/v1/applied_coupons", json={"customer_id": "cus_promo", "coupon_code": "LAUNCH20"})
    assert applied.status_code == 201, applied.text
    await h.post(f"/v1/test_clocks/{clock}/advance", json={"frozen_time": "2025-02-01T00:00:00Z"})
    # Applied at the clock's time, before January ended: January is discounted.
    [january] = await invoices(h, "cus_promo")
    assert (january["coupons_amount_cents"], january["total_amount_cents"]) == (-980, 3920)
    assert (await h.delete(f"/v1/applied_coupons/{applied.json()['id']}")).status_code == 200
    await h.post(f"/v1/test_clocks/{clock}/advance", json={"frozen_time": "2025-03-01T00:00:00Z"})
    february = (await invoices(h, "cus_promo"))[1]
    assert (february["coupons_amount_cents"], february["total_amount_cents"]) == (0, 4900)

    setup_fee = {"code": "setup", "name": "Setup", "amount_cents": 50000}
    assert (await h.post("/v1/add_ons", json=setup_fee)).status_code == 201
    body = {"customer_id": "cus_promo", "add_on_code": "setup"}
    assert (await h.post("/v1/applied_add_ons", json=body)).status_code == 201

    async def one_off():
        listed = (await h.get("/v1/customers/cus_promo/invoices")).json()["invoices"]
        found = [i for i in listed if i["timing"] == "one_off"]
        assert len(found) == 1, listed  # issued from add_on_applied, a moment after the answer
        return found[0]

    invoice = await eventually(one_off)
    assert (invoice["issued_at"], invoice["total_amount_cents"]) == ("2025-03-01T00:00:00Z", 50000)


async def test_invoices_on_request_and_calculations_of_a_clock_s_customer_use_its_time(
    tenant: Tenant, invoicing_db: InvoicingDb
):
    h = tenant.http
    clock = await setup(h)
    await h.post("/v1/customers", json={"id": "cus_abx", "test_clock_id": clock})
    sub = (await h.post("/v1/subscriptions", json={"customer_id": "cus_abx", "plan_code": "pro"})).json()
    await h.post(f"/v1/test_clocks/{clock}/advance", json={"frozen_time": "2025-03-16T00:00:00Z"})
    # Long past in real time, but after the clock's time: the future.
    late = await h.post("/v1/invoices", json={"customer_id": "cus_abx", "cutoff_date": "2025-03-31T23:59:59Z"})
    assert (late.status_code, late.json()["error"]["reason"]) == (400, "CUTOFF_IN_FUTURE")
    issued = await h.post("/v1/invoices", json={"customer_id": "cus_abx", "cutoff_date": "2025-03-15T23:59:59Z"})
    assert issued.status_code == 201, issued.text
    # March 1 to 16 of the clock's March: 4900 x 15/31 = 2370.97 -> 2371.
    body = issued.json()
    assert (body["period_start"], body["period_end"], body["total_amount_cents"]) == (
        "2025-03-01T00:00:00Z",
        "2025-03-16T00:00:00Z",
        2371,
    )
    calculated = (await h.post("/v1/pricing/calculate", json={"customer_id": "cus_abx"})).json()
    assert (calculated["period_start"], calculated["period_end"]) == ("2025-03-01T00:00:00Z", "2025-04-01T00:00:00Z")

    async with invoicing_db.sessions() as session, session.begin():  # its clock unknown here for a moment
        await session.execute(delete(TestClock).where(TestClock.id == clock))
    unknown = await h.post("/v1/invoices", json={"customer_id": "cus_abx", "cutoff_date": "2025-03-20T23:59:59Z"})
    assert unknown.status_code == 503
    assert sub["test_clock_id"] == clock


async def advance_over_grpc(channel, tenant: Tenant, clock: str, to: str) -> test_clocks_pb2.AdvanceTestClockResponse:
    request = test_clocks_pb2.AdvanceTestClockRequest(id=clock, frozen_time=to_proto(parse_rfc3339(to)))
    return await test_clocks_pb2_grpc.TestClockServiceStub(channel).AdvanceTestClock(
        request, metadata=tenancy.metadata(tenant.organization_id)
    )


async def test_over_grpc_advancing_a_clock_bills_what_fell_due_as_over_rest(stack: Stack, tenant: Tenant):
    """The catalog's RPC itself bills before answering, so a gRPC caller gets
    what the REST route shows; the clock's own time again bills nothing more."""
    h = tenant.http
    clock = await setup(h)
    assert (await h.post("/v1/customers", json={"id": "cus_g", "test_clock_id": clock})).status_code == 201
    sub = {"customer_id": "cus_g", "plan_code": PLAN["code"], "start_date": "2025-01-01T00:00:00Z"}
    assert (await h.post("/v1/subscriptions", json=sub)).status_code == 201
    async with stack.channel("catalog") as channel:
        moved = await advance_over_grpc(channel, tenant, clock, "2025-04-01T00:00:00Z")
        assert (moved.test_clock.id, moved.invoices_created) == (clock, 3)
        assert [i["period_start"][:7] for i in await invoices(h, "cus_g")] == ["2025-01", "2025-02", "2025-03"]
        again = await advance_over_grpc(channel, tenant, clock, "2025-04-01T00:00:00Z")  # a retry
        assert again.invoices_created == 0 and len(await invoices(h, "cus_g")) == 3
        with pytest.raises(grpc.aio.AioRpcError) as back:
            await advance_over_grpc(channel, tenant, clock, "2025-03-01T00:00:00Z")
    assert (back.value.code(), error_info(back.value).reason) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "CLOCK_CANNOT_GO_BACK",
    )


async def test_a_move_whose_billing_cannot_reach_invoicing_is_unavailable_and_kept(infra: Infra, tenant: Tenant):
    """The move is committed before invoicing is asked: invoicing away is
    UNAVAILABLE, and the clock stays at its new time for the retry."""
    url = await infra.database(unique("catalog_clock"))
    settings = catalog_server.Settings(
        "", url, infra.nats.url, api_key="", invoicing_address=f"127.0.0.1:{free_port()}"
    )
    service = catalog_server.build(settings)
    server, port = await grpc_server.start(service, "127.0.0.1:0")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = test_clocks_pb2_grpc.TestClockServiceStub(channel)
            md = tenancy.metadata(tenant.organization_id)
            await organizations_pb2_grpc.OrganizationServiceStub(channel).CreateOrganization(  # in this catalog too
                organizations_pb2.CreateOrganizationRequest(id=tenant.organization_id, name="Clock"), metadata=md
            )
            created = await stub.CreateTestClock(
                test_clocks_pb2.CreateTestClockRequest(
                    test_clock=test_clocks_pb2.TestClock(frozen_time=to_proto(parse_rfc3339("2025-01-01T00:00:00Z")))
                ),
                metadata=md,
            )
            with pytest.raises(grpc.aio.AioRpcError) as away:
                await advance_over_grpc(channel, tenant, created.id, "2025-02-01T00:00:00Z")
            kept = await stub.GetTestClock(test_clocks_pb2.GetTestClockRequest(id=created.id), metadata=md)
    finally:
        await grpc_server.stop(service, server, grace=0)
    assert away.value.code() == grpc.StatusCode.UNAVAILABLE
    assert kept.frozen_time.ToJsonString() == "2025-02-01T00:00:00Z"
