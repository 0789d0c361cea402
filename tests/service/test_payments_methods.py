"""PaymentService payment methods over gRPC: the newest is the default."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from bxb.payments.v1 import payments_pb2 as pb
from bxb.payments.v1 import payments_pb2_grpc
from services.common.errors import error_info
from services.common.tenancy import metadata
from tests.conftest import Stack, unique


class Methods:
    def __init__(self, channel: grpc.aio.Channel, org: str):
        self.stub = payments_pb2_grpc.PaymentServiceStub(channel)
        self.md = metadata(org)

    async def create(self, customer_id: str = "cus_1", **fields) -> pb.PaymentMethod:
        fields.setdefault("provider_customer_id", "cus_stripe_1")
        fields.setdefault("provider_payment_method", "pm_card_visa")
        spec = pb.PaymentMethod(customer_id=customer_id, **fields)
        return await self.stub.CreatePaymentMethod(pb.CreatePaymentMethodRequest(payment_method=spec), metadata=self.md)

    async def list(self, customer_id: str = "cus_1") -> list[pb.PaymentMethod]:
        request = pb.ListPaymentMethodsRequest(customer_id=customer_id)
        return list((await self.stub.ListPaymentMethods(request, metadata=self.md)).payment_methods)

    async def rejected(self, field: str, **fields) -> grpc.aio.AioRpcError:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await self.create(**fields)
        error = raised.value
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
        info = error_info(error)
        assert info.metadata["field"] == field
        assert info.reason in ("INVALID_ARGUMENT", "INVALID_VALUE", "MISSING_FIELD")  # the service's, or a rule's
        [detail] = [d for d in rpc_status.from_call(error).details if d.Is(error_details_pb2.BadRequest.DESCRIPTOR)]
        bad = error_details_pb2.BadRequest()
        detail.Unpack(bad)
        assert [(v.field, v.description) for v in bad.field_violations] == [(field, error.details())]
        return error


@pytest.fixture
async def methods(stack: Stack):
    async with stack.channel("payments") as channel:
        yield Methods(channel, unique("org_pm"))


async def test_a_first_method_is_the_default_with_stripe_as_provider(methods: Methods):
    method = await methods.create(provider_customer_id="cus_Abc", provider_payment_method="pm_123")
    assert method.id.startswith("pm_")
    assert (method.customer_id, method.provider) == ("cus_1", "stripe")
    assert (method.provider_customer_id, method.provider_payment_method) == ("cus_Abc", "pm_123")
    assert method.is_default
    assert method.create_time.seconds > 0
    assert await methods.list() == [method]


async def test_a_new_method_becomes_the_default_and_lists_first(methods: Methods):
    first = await methods.create(provider="stripe", provider_payment_method="pm_first")
    second = await methods.create(provider_payment_method="pm_second")
    listed = await methods.list()
    assert [(m.id, m.is_default) for m in listed] == [(second.id, True), (first.id, False)]
    third = await methods.create(provider_payment_method="pm_third")
    listed = await methods.list()
    assert [(m.id, m.is_default) for m in listed] == [(third.id, True), (second.id, False), (first.id, False)]


async def test_defaults_are_per_customer_and_per_organization(stack: Stack, methods: Methods):
    mine = await methods.create(customer_id="a")
    await methods.create(customer_id="b")
    assert [(m.id, m.is_default) for m in await methods.list("a")] == [(mine.id, True)]
    async with stack.channel("payments") as channel:
        other = Methods(channel, unique("org_pm"))
        assert await other.list("a") == []
        await other.create(customer_id="a")
    assert [(m.id, m.is_default) for m in await methods.list("a")] == [(mine.id, True)]
    assert await methods.list("nobody") == []


async def test_concurrent_creates_leave_exactly_one_default(methods: Methods):
    made = await asyncio.gather(*(methods.create(provider_payment_method=f"pm_{i}") for i in range(6)))
    listed = await methods.list()
    assert {m.id for m in listed} == {m.id for m in made}
    defaults = [m for m in listed if m.is_default]
    assert len(defaults) == 1
    assert listed[0] == defaults[0]


@pytest.mark.parametrize("field", ["customer_id", "provider_customer_id", "provider_payment_method"])
async def test_identifiers_are_required(methods: Methods, field):
    error = await methods.rejected(f"payment_method.{field}", **{field: ""})  # the proto's rules
    assert error.details() == f"payment_method.{field} is required"
    assert await methods.list() == []


@pytest.mark.parametrize("field", ["customer_id", "provider_customer_id", "provider_payment_method"])
async def test_identifiers_longer_than_200_characters_are_rejected(methods: Methods, field):
    await methods.rejected(f"payment_method.{field}", **{field: "x" * 201})
    assert await methods.list() == []


async def test_only_known_providers_are_accepted(methods: Methods):
    error = await methods.rejected("payment_method.provider", provider="paypal")
    assert error.details() == "payment_method.provider must be in list [stripe]"
    assert await methods.list() == []
