"""Customers (CustomerService). A new customer is announced as
bxb.catalog.v1.customer_created through the outbox, in the same transaction,
with the default payment method given at creation for the payments service."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bxb.catalog.v1 import customers_pb2 as pb
from bxb.catalog.v1 import customers_pb2_grpc, events_pb2
from services.catalog import taxes, test_clocks, validation
from services.catalog.models import Customer, Outbox
from services.common import currencies, outbox, pagination, tenancy
from services.common.errors import AlreadyExists, InvalidArgument, NotFound
from services.common.grpc_server import Context
from services.common.ids import new_id
from services.common.timestamps import to_proto, utcnow

CUSTOMER_CREATED = "bxb.catalog.v1.customer_created"
CUSTOMER_UPDATED = "bxb.catalog.v1.customer_updated"
# What UpdateCustomer changes; the billing provider and clock are chosen once.
UPDATABLE = ("name", "email", "tax_codes", "invoice_grace_period_days")
PROVIDERS = ("stripe",)
MAX_GRACE_DAYS = 365


def customer_proto(customer: Customer) -> pb.Customer:
    return pb.Customer(
        id=customer.id,
        name=customer.name,
        email=customer.email,
        currency=customer.currency,
        create_time=to_proto(customer.create_time),
        billing=pb.BillingConfiguration(
            provider=customer.billing_provider,
            provider_customer_id=customer.billing_provider_customer_id,
            auto_collect=customer.billing_auto_collect,  # None leaves it unset
        ),
        tax_codes=customer.tax_codes or [],
        test_clock_id=customer.test_clock_id or "",
        invoice_grace_period_days=customer.invoice_grace_period_days or 0,
    )


def _billing(request: pb.CreateCustomerRequest) -> tuple[pb.BillingConfiguration, pb.PaymentMethodDetails]:
    """The billing configuration and payment method, validated; each provider
    customer id, when only one is given, is the other's too."""
    billing, method = request.customer.billing, request.payment_method
    if billing.provider and billing.provider not in PROVIDERS:
        raise InvalidArgument(
            f"customer.billing.provider must be one of: {', '.join(PROVIDERS)}", field="customer.billing.provider"
        )
    provider_customer_id = billing.provider_customer_id or method.provider_customer_id
    billing = pb.BillingConfiguration(
        provider=billing.provider,
        provider_customer_id=provider_customer_id,
        auto_collect=billing.auto_collect if billing.HasField("auto_collect") else None,
    )
    method = pb.PaymentMethodDetails(
        provider_customer_id=method.provider_customer_id or provider_customer_id,
        provider_payment_method=method.provider_payment_method,
    )
    if request.HasField("payment_method"):
        for name in ("provider_customer_id", "provider_payment_method"):
            field = f"payment_method.{name}"
            if not getattr(method, name):
                raise InvalidArgument(f"{field} is required", field=field)
            validation.text(getattr(method, name), field)
    validation.text(billing.provider_customer_id, "customer.billing.provider_customer_id")
    return billing, method


async def ensure(session: AsyncSession, org: str, customer_id: str) -> Customer:
    """The customer, created bare unless it exists (subscriptions and events may name new ones)."""
    validation.external_id(customer_id, "customer_id")
    await session.execute(insert(Customer).values(organization_id=org, id=customer_id).on_conflict_do_nothing())
    return await session.get_one(Customer, (org, customer_id))


class CustomerServicer(customers_pb2_grpc.CustomerServiceServicer):
    def __init__(self, sessions: async_sessionmaker[AsyncSession], relay: outbox.OutboxRelay):
        self.sessions = sessions
        self.relay = relay

    async def CreateCustomer(self, request: pb.CreateCustomerRequest, context: Context) -> pb.Customer:
        org = tenancy.organization_id()
        spec = request.customer
        customer = Customer(
            organization_id=org,
            id=validation.external_id(spec.id, "customer.id"),
            name=validation.text(spec.name, "customer.name"),
            email=validation.text(spec.email, "customer.email", 320),
            currency=currencies.validate(spec.currency, "customer.currency") if spec.currency else "",
        )
        if not 0 <= spec.invoice_grace_period_days <= MAX_GRACE_DAYS:
            raise InvalidArgument(
                f"customer.invoice_grace_period_days must be between 0 and {MAX_GRACE_DAYS} days",
                field="customer.invoice_grace_period_days",
            )
        customer.invoice_grace_period_days = spec.invoice_grace_period_days
        billing, method = _billing(request)
        customer.billing_provider = billing.provider
        customer.billing_provider_customer_id = billing.provider_customer_id
        customer.billing_auto_collect = billing.auto_collect if billing.HasField("auto_collect") else None
        async with self.sessions() as session, session.begin():
            if await session.get(Customer, (org, spec.id)) is not None:
                raise AlreadyExists(f"customer {spec.id!r} already exists", field="customer.id")
            customer.tax_codes = await taxes.check_codes(session, org, spec.tax_codes)
            if spec.test_clock_id:
                customer.test_clock_id = (await test_clocks.find(session, org, spec.test_clock_id, "test_clock_id")).id
            session.add(customer)
            await session.flush()
            await session.refresh(customer)
            result = customer_proto(customer)
            event = events_pb2.CustomerCreated(
                event_id=new_id("evt"),
                organization_id=org,
                occur_time=result.create_time,
                customer=result,
                payment_method=method if request.HasField("payment_method") else None,
            )
            await outbox.enqueue(session, Outbox, CUSTOMER_CREATED, event)
        self.relay.wake()
        return result

    async def UpdateCustomer(self, request: pb.UpdateCustomerRequest, context: Context) -> pb.Customer:
        """Applies the fields update_mask names and announces customer_updated."""
        org = tenancy.organization_id()
        spec, paths = request.customer, list(dict.fromkeys(request.update_mask.paths))
        wrong = [path for path in paths if path not in UPDATABLE]
        if not paths or wrong:
            raise InvalidArgument(f"update_mask must name fields among: {', '.join(UPDATABLE)}", field="update_mask")
        changes: dict[str, object] = {}
        if "name" in paths:
            changes["name"] = validation.text(spec.name, "customer.name")
        if "email" in paths:
            changes["email"] = validation.text(spec.email, "customer.email", 320)
        if "invoice_grace_period_days" in paths:
            if not 0 <= spec.invoice_grace_period_days <= MAX_GRACE_DAYS:
                raise InvalidArgument(
                    f"customer.invoice_grace_period_days must be between 0 and {MAX_GRACE_DAYS} days",
                    field="customer.invoice_grace_period_days",
                )
            changes["invoice_grace_period_days"] = spec.invoice_grace_period_days
        async with self.sessions() as session, session.begin():
            customer = await session.get(Customer, (org, spec.id), with_for_update=True)
            if customer is None:
                raise NotFound(f"customer {spec.id!r} not found", field="customer.id")
            if "tax_codes" in paths:
                changes["tax_codes"] = await taxes.check_codes(session, org, spec.tax_codes)
            for name, value in changes.items():
                setattr(customer, name, value)
            result = customer_proto(customer)
            event = events_pb2.CustomerUpdated(
                event_id=new_id("evt"), organization_id=org, occur_time=to_proto(utcnow()), customer=result
            )
            await outbox.enqueue(session, Outbox, CUSTOMER_UPDATED, event)
        self.relay.wake()
        return result

    async def GetCustomer(self, request: pb.GetCustomerRequest, context: Context) -> pb.Customer:
        org = tenancy.organization_id()
        async with self.sessions() as session:
            customer = await session.get(Customer, (org, request.id))
        if customer is None:
            raise NotFound(f"customer {request.id!r} not found", field="id")
        return customer_proto(customer)

    async def ListCustomers(self, request: pb.ListCustomersRequest, context: Context) -> pb.ListCustomersResponse:
        org = tenancy.organization_id()
        page = pagination.page(request, "ListCustomers")
        query = (
            select(Customer)
            .where(Customer.organization_id == org)
            .order_by(Customer.create_time, Customer.id)
            .offset(page.offset)
            .limit(page.size + 1)
        )
        async with self.sessions() as session:
            rows = (await session.execute(query)).scalars().all()
        customers, token = pagination.answer(page, [customer_proto(c) for c in rows])
        return pb.ListCustomersResponse(customers=customers, next_page_token=token)
