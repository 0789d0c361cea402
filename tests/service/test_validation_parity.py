"""One rule, one refusal: the same bad input sent over REST and straight over
gRPC is refused by the same rule, with the same reason and the same field
path (over REST without the field a create wraps its resource in: `code`
for CreateTaxRequest's `tax.code`), and nothing is stored either way."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.protobuf.json_format import ParseDict
from google.protobuf.message import Message

from bxb.catalog.v1 import customers_pb2, customers_pb2_grpc, plans_pb2, plans_pb2_grpc, taxes_pb2, taxes_pb2_grpc
from bxb.invoicing.v1 import credit_notes_pb2, credit_notes_pb2_grpc
from bxb.metering.v1 import usage_pb2, usage_pb2_grpc
from services.common import tenancy
from services.common.errors import error_info
from tests.conftest import Stack, Tenant, unique

LONG = "x" * 201
START, END = "2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z"

# (REST route, its body, the service, its stub, the RPC, the request over gRPC,
#  the field a create wraps the resource in: "" when the body is the request)
CASES: list[tuple[str, dict[str, Any], str, type, str, Message, str]] = [
    (
        "/v1/taxes",
        {"code": "x" * 101, "rate": "20"},
        "catalog",
        taxes_pb2_grpc.TaxServiceStub,
        "CreateTax",
        taxes_pb2.CreateTaxRequest(tax=taxes_pb2.Tax(code="x" * 101, rate="20")),
        "tax",
    ),
    (
        "/v1/customers",
        {"id": "cus_parity", "tax_codes": ["vat", "t" * 101]},
        "catalog",
        customers_pb2_grpc.CustomerServiceStub,
        "CreateCustomer",
        customers_pb2.CreateCustomerRequest(
            customer=customers_pb2.Customer(id="cus_parity", tax_codes=["vat", "t" * 101])
        ),
        "customer",
    ),
    (
        "/v1/plans",
        {"code": "p_parity", "interval": "monthly", "name": LONG},
        "catalog",
        plans_pb2_grpc.PlanServiceStub,
        "CreatePlan",
        plans_pb2.CreatePlanRequest(
            plan=plans_pb2.Plan(code="p_parity", interval=plans_pb2.PLAN_INTERVAL_MONTHLY, name=LONG)
        ),
        "plan",
    ),
    (
        "/v1/credit_notes",
        {"invoice_id": "x" * 65},
        "invoicing",
        credit_notes_pb2_grpc.CreditNoteServiceStub,
        "CreateCreditNote",
        credit_notes_pb2.CreateCreditNoteRequest(invoice_id="x" * 65),
        "",
    ),
    (
        "/v1/usage/compute",
        {"customer_id": LONG, "code": "calls", "period_start": START, "period_end": END},
        "metering",
        usage_pb2_grpc.UsageServiceStub,
        "ComputeUsage",
        ParseDict(
            {"customer_id": LONG, "metric_code": "calls", "start_time": START, "end_time": END},
            usage_pb2.ComputeUsageRequest(),
        ),
        "",
    ),
]


@pytest.mark.parametrize(
    ("route", "body", "service", "stub_class", "method", "request_message", "wrapper"),
    CASES,
    ids=[case[4] for case in CASES],
)
async def test_rest_and_grpc_refuse_the_same_input_naming_the_same_field(
    stack: Stack, tenant: Tenant, route, body, service, stub_class, method, request_message, wrapper
):
    over_rest = await tenant.http.post(route, json=body)
    assert over_rest.status_code == 400, over_rest.text
    rest = over_rest.json()["error"]
    async with stack.channel(service) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await getattr(stub_class(channel), method)(
                request_message, metadata=tenancy.metadata(tenant.organization_id)
            )
    info = error_info(refused.value)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    grpc_field = info.metadata["field"]
    assert grpc_field == (f"{wrapper}.{rest['field']}" if wrapper else rest["field"])
    assert info.reason == rest["reason"]
    assert refused.value.details().removeprefix(f"{wrapper}.") == rest["message"]


async def test_what_neither_path_accepted_is_not_stored(stack: Stack, tenant: Tenant):
    code = unique("tax")
    assert (await tenant.http.post("/v1/taxes", json={"code": code, "rate": "20", "name": LONG})).status_code == 400
    async with stack.channel("catalog") as channel:
        stub = taxes_pb2_grpc.TaxServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.CreateTax(
                taxes_pb2.CreateTaxRequest(tax=taxes_pb2.Tax(code=code, rate="20", name=LONG)),
                metadata=tenancy.metadata(tenant.organization_id),
            )
    assert (await tenant.http.get(f"/v1/taxes/{code}")).status_code == 404
