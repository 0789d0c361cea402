"""Customers (CustomerService)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bxb.catalog.v1 import customers_pb2 as pb
from bxb.catalog.v1 import customers_pb2_grpc
from services.catalog import validation
from services.catalog.models import Customer
from services.common import currencies, pagination, tenancy
from services.common.errors import AlreadyExists, NotFound
from services.common.timestamps import to_proto


def customer_proto(customer: Customer) -> pb.Customer:
    return pb.Customer(
        id=customer.id,
        name=customer.name,
        email=customer.email,
        currency=customer.currency,
        create_time=to_proto(customer.create_time),
    )


async def ensure(session: AsyncSession, org: str, customer_id: str) -> None:
    """Creates a bare customer unless it exists (subscriptions and events may name new ones)."""
    validation.external_id(customer_id, "customer_id")
    await session.execute(insert(Customer).values(organization_id=org, id=customer_id).on_conflict_do_nothing())


class CustomerServicer(customers_pb2_grpc.CustomerServiceServicer):
    def __init__(self, sessions: async_sessionmaker):
        self.sessions = sessions

    async def CreateCustomer(self, request: pb.CreateCustomerRequest, context) -> pb.Customer:
        org = tenancy.organization_id()
        spec = request.customer
        customer = Customer(
            organization_id=org,
            id=validation.external_id(spec.id, "id"),
            name=validation.text(spec.name, "name"),
            email=validation.text(spec.email, "email", 320),
            currency=currencies.validate(spec.currency) if spec.currency else "",
        )
        async with self.sessions() as session, session.begin():
            if await session.get(Customer, (org, spec.id)) is not None:
                raise AlreadyExists(f"customer {spec.id!r} already exists", field="id")
            session.add(customer)
            await session.flush()
            await session.refresh(customer)
            return customer_proto(customer)

    async def GetCustomer(self, request: pb.GetCustomerRequest, context) -> pb.Customer:
        org = tenancy.organization_id()
        async with self.sessions() as session:
            customer = await session.get(Customer, (org, request.id))
        if customer is None:
            raise NotFound(f"customer {request.id!r} not found", field="id")
        return customer_proto(customer)

    async def ListCustomers(self, request: pb.ListCustomersRequest, context) -> pb.ListCustomersResponse:
        org = tenancy.organization_id()
        size = pagination.page_size(request.page_size)
        offset = pagination.decode_token(request.page_token)
        query = (
            select(Customer)
            .where(Customer.organization_id == org)
            .order_by(Customer.create_time, Customer.id)
            .offset(offset)
            .limit(size + 1)
        )
        async with self.sessions() as session:
            rows = (await session.execute(query)).scalars().all()
        return pb.ListCustomersResponse(
            customers=[customer_proto(c) for c in rows[:size]],
            next_page_token=pagination.next_token(offset, size, len(rows)),
        )
