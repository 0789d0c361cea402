"""The rules a proto declares hold for every caller: the server checks each
request before its handler runs (services/common/validation.py)."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from bxb.catalog.v1 import (
    add_ons_pb2,
    add_ons_pb2_grpc,
    billable_metrics_pb2,
    billable_metrics_pb2_grpc,
    coupons_pb2,
    coupons_pb2_grpc,
    customers_pb2,
    customers_pb2_grpc,
    plans_pb2,
    plans_pb2_grpc,
    subscriptions_pb2,
    subscriptions_pb2_grpc,
    taxes_pb2,
    taxes_pb2_grpc,
)
from bxb.invoicing.v1 import (
    calculations_pb2,
    calculations_pb2_grpc,
    credit_notes_pb2,
    credit_notes_pb2_grpc,
    invoices_pb2,
    invoices_pb2_grpc,
)
from bxb.metering.v1 import usage_events_pb2, usage_events_pb2_grpc, usage_pb2, usage_pb2_grpc
from bxb.payments.v1 import payments_pb2, payments_pb2_grpc
from services.common import tenancy
from services.common.errors import error_info
from tests.conftest import Stack, Tenant


@pytest.mark.parametrize(
    ("tax", "field"),
    [
        (taxes_pb2.Tax(code="x" * 101, rate="20"), "tax.code"),
        (taxes_pb2.Tax(code="vat", name="n" * 201, rate="20"), "tax.name"),
        (taxes_pb2.Tax(code="vat", rate="20", description="d" * 2001), "tax.description"),
    ],
)
async def test_a_grpc_caller_is_refused_what_the_proto_forbids_naming_the_field(
    stack: Stack, tenant: Tenant, tax, field
):
    async with stack.channel("catalog") as channel:
        stub = taxes_pb2_grpc.TaxServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.CreateTax(taxes_pb2.CreateTaxRequest(tax=tax), metadata=tenancy.metadata(tenant.organization_id))
        listed = await stub.ListTaxes(taxes_pb2.ListTaxesRequest(), metadata=tenancy.metadata(tenant.organization_id))
    assert (refused.value.code(), error_info(refused.value).metadata["field"]) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        field,
    )
    assert field in refused.value.details() and not listed.taxes


async def test_an_item_of_a_repeated_field_is_named_by_its_index(stack: Stack, tenant: Tenant):
    customer = customers_pb2.Customer(id="cus_v", tax_codes=["vat", "x" * 101])
    async with stack.channel("catalog") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await customers_pb2_grpc.CustomerServiceStub(channel).CreateCustomer(
                customers_pb2.CreateCustomerRequest(customer=customer),
                metadata=tenancy.metadata(tenant.organization_id),
            )
    assert error_info(refused.value).metadata["field"] == "customer.tax_codes[1]"


def md(tenant: Tenant):
    return tenancy.metadata(tenant.organization_id)


async def refused_field(stack: Stack, tenant: Tenant, service: str, stub_class, method: str, request) -> str:
    """The field a direct gRPC call is refused naming (INVALID_ARGUMENT, with
    the path in the message too)."""
    async with stack.channel(service) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await getattr(stub_class(channel), method)(request, metadata=md(tenant))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, refused.value.details()
    field = error_info(refused.value).metadata["field"]
    assert refused.value.details().startswith(f"{field} ")
    return field


def charge(code: str) -> plans_pb2.Charge:
    return plans_pb2.Charge(
        billable_metric_code=code,
        charge_model=plans_pb2.CHARGE_MODEL_STANDARD,
        properties=plans_pb2.ChargeProperties(amount="1"),
    )


# One request per kind of rule and service: a length, a repeated field's size,
# an enum's defined values, a required field, a repeated item named by its index.
CASES = [
    # catalog
    (
        "catalog",
        add_ons_pb2_grpc.AddOnServiceStub,
        "CreateAddOn",
        add_ons_pb2.CreateAddOnRequest(add_on=add_ons_pb2.AddOn(code="fee", name="n" * 201, amount_cents=1)),
        "add_on.name",
    ),
    (
        "catalog",
        coupons_pb2_grpc.CouponServiceStub,
        "CreateCoupon",
        coupons_pb2.CreateCouponRequest(
            coupon=coupons_pb2.Coupon(
                code="c",
                coupon_type=coupons_pb2.COUPON_TYPE_PERCENTAGE,
                duration=coupons_pb2.COUPON_DURATION_ONCE,
                percentage="5",
                plan_codes=[f"p{i}" for i in range(101)],
            )
        ),
        "coupon.plan_codes",
    ),
    (
        "catalog",
        plans_pb2_grpc.PlanServiceStub,
        "CreatePlan",
        plans_pb2.CreatePlanRequest(plan=plans_pb2.Plan(code="p", interval=9)),
        "plan.interval",
    ),
    (
        "catalog",
        billable_metrics_pb2_grpc.BillableMetricServiceStub,
        "CreateBillableMetric",
        billable_metrics_pb2.CreateBillableMetricRequest(
            billable_metric=billable_metrics_pb2.BillableMetric(
                aggregation_type=billable_metrics_pb2.AGGREGATION_TYPE_COUNT
            )
        ),
        "billable_metric.code",
    ),
    (
        "catalog",
        plans_pb2_grpc.PlanServiceStub,
        "CreatePlan",
        plans_pb2.CreatePlanRequest(
            plan=plans_pb2.Plan(code="p", interval=plans_pb2.PLAN_INTERVAL_MONTHLY, charges=[charge("m"), charge("")])
        ),
        "plan.charges[1].billable_metric_code",
    ),
    (
        "catalog",
        subscriptions_pb2_grpc.SubscriptionServiceStub,
        "CreateSubscription",
        subscriptions_pb2.CreateSubscriptionRequest(customer_id="c" * 201, plan_code="p"),
        "customer_id",
    ),
    # invoicing
    (
        "invoicing",
        invoices_pb2_grpc.InvoiceServiceStub,
        "SendInvoiceEmail",
        invoices_pb2.SendInvoiceEmailRequest(id="inv_1", to=[f"a{i}@example.com" for i in range(11)]),
        "to",
    ),
    (
        "invoicing",
        credit_notes_pb2_grpc.CreditNoteServiceStub,
        "CreateCreditNote",
        credit_notes_pb2.CreateCreditNoteRequest(invoice_id="inv_1", reason=99),
        "reason",
    ),
    (
        "invoicing",
        invoices_pb2_grpc.InvoiceServiceStub,
        "CreateInvoice",
        invoices_pb2.CreateInvoiceRequest(customer_id="c"),
        "cutoff_time",
    ),
    (
        "invoicing",
        calculations_pb2_grpc.CalculationServiceStub,
        "PreviewInvoice",
        calculations_pb2.PreviewInvoiceRequest(subscription_id="s" * 201),
        "subscription_id",
    ),
    # metering
    (
        "metering",
        usage_events_pb2_grpc.EventServiceStub,
        "IngestEvents",
        usage_events_pb2.IngestEventsRequest(
            events=[
                usage_events_pb2.UsageEvent(customer_id="c", code="m"),
                usage_events_pb2.UsageEvent(customer_id="c", code="m" * 201),
            ]
        ),
        "events[1].code",
    ),
    (
        "metering",
        usage_pb2_grpc.UsageServiceStub,
        "UsageHistogram",
        usage_pb2.UsageHistogramRequest(
            customer_id="c", code="m", start_time=Timestamp(seconds=0), end_time=Timestamp(seconds=60), interval=9
        ),
        "interval",
    ),
    (
        "metering",
        usage_pb2_grpc.UsageServiceStub,
        "ComputeUsage",
        usage_pb2.ComputeUsageRequest(customer_id="c", metric_code="m", end_time=Timestamp(seconds=60)),
        "start_time",
    ),
    # payments
    (
        "payments",
        payments_pb2_grpc.PaymentServiceStub,
        "CreatePaymentMethod",
        payments_pb2.CreatePaymentMethodRequest(
            payment_method=payments_pb2.PaymentMethod(
                customer_id="c", provider_customer_id="cus_1", provider_payment_method="p" * 201
            )
        ),
        "payment_method.provider_payment_method",
    ),
]


@pytest.mark.parametrize(("service", "stub_class", "method", "request_", "field"), CASES)
async def test_each_service_refuses_what_its_protos_forbid_naming_the_field(
    stack: Stack, tenant: Tenant, service, stub_class, method, request_, field
):
    assert await refused_field(stack, tenant, service, stub_class, method, request_) == field


async def test_a_batch_of_events_is_checked_event_by_event_not_as_a_whole(stack: Stack, tenant: Tenant):
    """SubmitEvents refuses an invalid event in its result, never the call."""
    events = [
        usage_events_pb2.UsageEvent(transaction_id="ok", customer_id="c", code="m"),
        usage_events_pb2.UsageEvent(transaction_id="long", customer_id="c", code="m" * 201),
    ]
    async with stack.channel("metering") as channel:
        reply = await usage_events_pb2_grpc.EventServiceStub(channel).SubmitEvents(
            usage_events_pb2.SubmitEventsRequest(events=events), metadata=md(tenant)
        )
    assert [(r.outcome, r.error.field) for r in reply.results] == [
        (usage_events_pb2.INGEST_OUTCOME_QUEUED, ""),
        (usage_events_pb2.INGEST_OUTCOME_REJECTED, "code"),  # named within its event, which its place names
    ]
