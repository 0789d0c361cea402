"""CustomerService over gRPC, each test in a fresh organization."""

from __future__ import annotations

import grpc
import pytest
from sqlalchemy import select

from bxb.catalog.v1 import customers_pb2 as pb
from bxb.catalog.v1 import customers_pb2_grpc, events_pb2, organizations_pb2, organizations_pb2_grpc
from services.catalog.customers import CUSTOMER_CREATED
from services.catalog.models import Outbox
from services.common import db
from services.common.errors import error_info
from services.common.tenancy import metadata
from tests.conftest import Infra, Stack


class Customers:
    def __init__(self, channel: grpc.aio.Channel, org: str):
        self.stub = customers_pb2_grpc.CustomerServiceStub(channel)
        self.md = metadata(org)
        self.org = org

    async def create(self, **fields) -> pb.Customer:
        return await self.stub.CreateCustomer(
            pb.CreateCustomerRequest(customer=pb.Customer(**fields)), metadata=self.md
        )

    async def get(self, customer_id: str) -> pb.Customer:
        return await self.stub.GetCustomer(pb.GetCustomerRequest(id=customer_id), metadata=self.md)

    async def list(self, **fields) -> pb.ListCustomersResponse:
        return await self.stub.ListCustomers(pb.ListCustomersRequest(**fields), metadata=self.md)

    async def rejected(self, code: grpc.StatusCode, field: str, **fields) -> grpc.aio.AioRpcError:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await self.create(**fields)
        assert raised.value.code() == code, raised.value.details()
        assert error_info(raised.value).metadata["field"] == field
        return raised.value


async def new_org(channel: grpc.aio.Channel) -> str:
    orgs = organizations_pb2_grpc.OrganizationServiceStub(channel)
    return (await orgs.CreateOrganization(organizations_pb2.CreateOrganizationRequest(name="Customers"))).id


@pytest.fixture
async def customers(stack: Stack):
    async with stack.channel("catalog") as channel:
        yield Customers(channel, await new_org(channel))


async def test_create_then_get_a_customer(customers: Customers):
    created = await customers.create(id="cus_9a4b2", name="Jane", email="jane@example.com", currency="eur")
    assert (created.id, created.name, created.email, created.currency) == (
        "cus_9a4b2",
        "Jane",
        "jane@example.com",
        "EUR",
    )
    assert created.create_time.seconds > 0
    assert await customers.get("cus_9a4b2") == created


async def test_only_the_id_is_required(customers: Customers):
    created = await customers.create(id="user@example.com")
    assert (created.name, created.email, created.currency) == ("", "", "")


async def test_a_duplicate_id_is_already_exists(customers: Customers):
    first = await customers.create(id="dup", name="First")
    error = await customers.rejected(grpc.StatusCode.ALREADY_EXISTS, "customer.id", id="dup", name="Second")
    assert error_info(error).reason == "ALREADY_EXISTS"
    assert await customers.get("dup") == first


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"id": ""}, "customer.id"),
        ({"id": "has space"}, "customer.id"),
        ({"id": "x" * 201}, "customer.id"),
        ({"id": "c", "name": "n" * 201}, "customer.name"),
        ({"id": "c", "email": "e" * 321}, "customer.email"),
        ({"id": "c", "currency": "EURO"}, "customer.currency"),
    ],
)
async def test_invalid_customers_are_rejected(customers: Customers, fields, field):
    error = await customers.rejected(grpc.StatusCode.INVALID_ARGUMENT, field, **fields)
    assert error_info(error).reason in ("INVALID_ARGUMENT", "INVALID_VALUE", "MISSING_FIELD")
    assert list((await customers.list()).customers) == []


async def test_get_unknown_customer_is_not_found(customers: Customers):
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await customers.get("nobody")
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    assert error_info(raised.value).metadata["field"] == "id"


async def test_one_id_names_different_customers_in_different_organizations(stack: Stack, customers: Customers):
    await customers.create(id="shared", name="Mine")
    async with stack.channel("catalog") as channel:
        other = Customers(channel, await new_org(channel))
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await other.get("shared")
        assert raised.value.code() == grpc.StatusCode.NOT_FOUND
        assert (await other.create(id="shared", name="Theirs")).name == "Theirs"
    assert (await customers.get("shared")).name == "Mine"


async def test_list_pages_through_customers_oldest_first(customers: Customers):
    ids = [f"cus_{i}" for i in range(5)]
    for customer_id in ids:
        await customers.create(id=customer_id)
    first = await customers.list(page_size=3)
    assert [c.id for c in first.customers] == ids[:3]
    rest = await customers.list(page_size=3, page_token=first.next_page_token)
    assert [c.id for c in rest.customers] == ids[3:]
    assert rest.next_page_token == ""
    assert [c.id for c in (await customers.list()).customers] == ids


async def created_events(infra: Infra, org: str) -> dict[str, pb.Customer]:
    """The customers the organization's customer_created events carry (the catalog's outbox), by id."""
    engine = db.create_engine(infra.postgres.url("catalog"), pool_size=1)
    try:
        async with db.sessions(engine)() as session:
            query = select(Outbox.c.payload).where(
                Outbox.c.subject == CUSTOMER_CREATED, Outbox.c.organization_id == org
            )
            payloads = (await session.execute(query)).scalars().all()
    finally:
        await engine.dispose()
    events = [events_pb2.CustomerCreated.FromString(payload) for payload in payloads]
    return {event.customer.id: event.customer for event in events}


async def test_auto_collect_is_kept_returned_and_announced_unset_when_not_given(customers: Customers, infra: Infra):
    for customer_id, auto_collect in (("cus_off", False), ("cus_on", True), ("cus_default", None)):
        billing = pb.BillingConfiguration(provider="stripe", auto_collect=auto_collect)
        created = await customers.create(id=customer_id, billing=billing)
        assert created.billing.HasField("auto_collect") is (auto_collect is not None)
        assert created.billing.auto_collect is bool(auto_collect)
        assert await customers.get(customer_id) == created
    listed = {c.id: c.billing for c in (await customers.list()).customers}
    assert [
        (listed[i].HasField("auto_collect"), listed[i].auto_collect) for i in ("cus_off", "cus_on", "cus_default")
    ] == [
        (True, False),
        (True, True),
        (False, False),
    ]
    announced = await created_events(infra, customers.org)
    assert {i: (c.billing.HasField("auto_collect"), c.billing.auto_collect) for i, c in announced.items()} == {
        "cus_off": (True, False),
        "cus_on": (True, True),
        "cus_default": (False, False),
    }
