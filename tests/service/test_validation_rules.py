"""The rules a proto declares hold for every caller: the server checks each
request before its handler runs (services/common/validation.py)."""

from __future__ import annotations

import grpc
import pytest

from bxb.catalog.v1 import customers_pb2, customers_pb2_grpc, taxes_pb2, taxes_pb2_grpc
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
