"""Receivables: a payment per finalized invoice, driven by invoicing's
bxb.invoicing.v1.invoice_finalized events on NATS."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import grpc
import pytest

from bxb.catalog.v1 import (
    billable_metrics_pb2,
    billable_metrics_pb2_grpc,
    organizations_pb2,
    organizations_pb2_grpc,
    plans_pb2,
    plans_pb2_grpc,
    subscriptions_pb2,
    subscriptions_pb2_grpc,
)
from bxb.invoicing.v1 import billing_runs_pb2, billing_runs_pb2_grpc, events_pb2, invoices_pb2, invoices_pb2_grpc
from bxb.payments.v1 import payments_pb2 as pb
from bxb.payments.v1 import payments_pb2_grpc
from services.common import bus
from services.common.errors import error_info
from services.common.ids import new_id
from services.common.tenancy import metadata
from services.common.timestamps import to_proto
from services.payments.receivables import INVOICE_FINALIZED
from tests.conftest import Infra, Stack, eventually, organization, unique

PENDING = pb.PAYMENT_STATUS_PENDING
SUCCEEDED = pb.PAYMENT_STATUS_SUCCEEDED


async def list_payments(stack: Stack, org: str, **fields) -> pb.ListPaymentsResponse:
    async with stack.channel("payments") as channel:
        stub = payments_pb2_grpc.PaymentServiceStub(channel)
        return await stub.ListPayments(pb.ListPaymentsRequest(**fields), metadata=metadata(org))


async def bill_backdated_subscription(stack: Stack, amount_cents: int) -> tuple[str, list[invoices_pb2.Invoice]]:
    """A weekly plan subscribed 10 days ago, billed now: one finalized invoice."""
    async with stack.channel("catalog") as catalog, stack.channel("invoicing") as invoicing:
        orgs = organizations_pb2_grpc.OrganizationServiceStub(catalog)
        org = (await orgs.CreateOrganization(organizations_pb2.CreateOrganizationRequest(name="Payer"))).id
        md = metadata(org)
        metric = billable_metrics_pb2.BillableMetric(
            code="calls", aggregation_type=billable_metrics_pb2.AGGREGATION_TYPE_COUNT
        )
        await billable_metrics_pb2_grpc.BillableMetricServiceStub(catalog).CreateBillableMetric(
            billable_metrics_pb2.CreateBillableMetricRequest(billable_metric=metric), metadata=md
        )
        charge = plans_pb2.Charge(
            billable_metric_code="calls",
            charge_model=plans_pb2.CHARGE_MODEL_STANDARD,
            properties=plans_pb2.ChargeProperties(amount="0.25"),
        )
        plan = plans_pb2.Plan(
            code="weekly", interval=plans_pb2.PLAN_INTERVAL_WEEKLY, amount_cents=amount_cents, charges=[charge]
        )
        await plans_pb2_grpc.PlanServiceStub(catalog).CreatePlan(plans_pb2.CreatePlanRequest(plan=plan), metadata=md)
        start = datetime.now(UTC) - timedelta(days=10)
        await subscriptions_pb2_grpc.SubscriptionServiceStub(catalog).CreateSubscription(
            subscriptions_pb2.CreateSubscriptionRequest(
                customer_id="cus_pay", plan_code="weekly", start_time=to_proto(start)
            ),
            metadata=md,
        )
        invoices = invoices_pb2_grpc.InvoiceServiceStub(invoicing)

        async def billed():  # invoicing learns of the subscription from NATS
            runs = billing_runs_pb2_grpc.BillingRunServiceStub(invoicing)
            created = await runs.RunBilling(billing_runs_pb2.RunBillingRequest(customer_id="cus_pay"), metadata=md)
            assert created.invoices_created == 1

        await eventually(billed)
        listed = await invoices.ListInvoices(invoices_pb2.ListInvoicesRequest(customer_id="cus_pay"), metadata=md)
        return org, [i for i in listed.invoices if i.id]  # the open period's draft aside


async def test_a_finalized_invoice_becomes_a_pending_payment_of_its_total(stack: Stack):
    org, [invoice] = await bill_backdated_subscription(stack, amount_cents=1500)
    assert invoice.status == invoices_pb2.INVOICE_STATUS_FINALIZED
    assert invoice.total_amount_cents == 1500

    async def paid():
        payments = (await list_payments(stack, org)).payments
        assert len(payments) == 1
        return payments[0]

    payment = await eventually(paid)
    assert payment.id.startswith("pay_")
    assert (payment.invoice_id, payment.customer_id) == (invoice.id, "cus_pay")
    assert (payment.amount_cents, payment.currency, payment.status) == (1500, "USD", PENDING)
    assert payment.create_time.seconds > 0
    assert list((await list_payments(stack, org, invoice_id=invoice.id)).payments) == [payment]
    assert list((await list_payments(stack, org, customer_id="cus_pay")).payments) == [payment]
    assert list((await list_payments(stack, org, customer_id="someone_else")).payments) == []


async def test_a_zero_total_invoice_is_settled_at_once(stack: Stack):
    org, [invoice] = await bill_backdated_subscription(stack, amount_cents=0)
    assert invoice.total_amount_cents == 0

    async def paid():
        payments = (await list_payments(stack, org)).payments
        assert len(payments) == 1
        return payments[0]

    payment = await eventually(paid)
    assert (payment.invoice_id, payment.amount_cents, payment.status) == (invoice.id, 0, SUCCEEDED)


@pytest.fixture
async def publisher(infra: Infra):
    connected = await bus.Bus.connect(infra.nats.url, unique("test-invoicing"))
    await connected.ensure_stream(bus.INVOICING)
    yield connected
    await connected.close()


def finalized(org: str, invoice_id: str, total: int, customer: str = "cus_1", currency: str = "EUR") -> bytes:
    invoice = invoices_pb2.Invoice(id=invoice_id, customer_id=customer, total_amount_cents=total, currency=currency)
    return events_pb2.InvoiceFinalized(event_id=new_id("evt"), organization_id=org, invoice=invoice).SerializeToString()


async def test_a_redelivered_event_records_one_payment(stack: Stack, publisher: bus.Bus):
    org = await organization(stack, unique("org_redeliver"))
    payload = finalized(org, "inv_once", 700)
    for attempt in range(3):  # what JetStream does when an ack is lost: the same event again
        await publisher.publish(INVOICE_FINALIZED, payload, msg_id=unique(f"attempt{attempt}"), organization_id=org)
    await publisher.publish(INVOICE_FINALIZED, finalized(org, "inv_marker", 1), msg_id=unique("marker"))

    async def all_handled():  # one consumer handles the stream in order: the marker comes last
        payments = (await list_payments(stack, org)).payments
        assert {p.invoice_id for p in payments} == {"inv_once", "inv_marker"}
        return payments

    payments = await eventually(all_handled)
    [once] = [p for p in payments if p.invoice_id == "inv_once"]
    assert (once.amount_cents, once.currency, once.status, once.customer_id) == (700, "EUR", PENDING, "cus_1")
    assert len(payments) == 2


async def test_other_invoicing_events_are_ignored(stack: Stack, publisher: bus.Bus):
    org = await organization(stack, unique("org_ignore"))
    await publisher.publish("bxb.invoicing.v1.invoice_voided", finalized(org, "inv_voided", 500), msg_id=unique("v"))
    await publisher.publish(INVOICE_FINALIZED, finalized(org, "inv_real", 300), msg_id=unique("r"))

    async def handled():
        payments = (await list_payments(stack, org)).payments
        assert [p.invoice_id for p in payments] == ["inv_real"]

    await eventually(handled)


async def test_list_pages_newest_first(stack: Stack, publisher: bus.Bus):
    org = await organization(stack, unique("org_pages"))
    for i in range(5):
        await publisher.publish(INVOICE_FINALIZED, finalized(org, f"inv_{i}", 100 + i), msg_id=unique("p"))

    async def all_five():
        payments = (await list_payments(stack, org)).payments
        assert len(payments) == 5
        return payments

    everything = await eventually(all_five)
    times = [(p.create_time.seconds, p.create_time.nanos) for p in everything]
    assert times == sorted(times, reverse=True)
    first = await list_payments(stack, org, page_size=2)
    second = await list_payments(stack, org, page_size=2, page_token=first.next_page_token)
    third = await list_payments(stack, org, page_size=2, page_token=second.next_page_token)
    assert third.next_page_token == ""
    paged = [p.id for page in (first, second, third) for p in page.payments]
    assert paged == [p.id for p in everything]


@pytest.mark.parametrize(("fields", "field"), [({"page_size": -1}, "page_size"), ({"page_token": "b:x"}, "page_token")])
async def test_list_rejects_bad_paging(stack: Stack, fields, field):
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await list_payments(stack, await organization(stack, unique("org_x")), **fields)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(raised.value).metadata["field"] == field
