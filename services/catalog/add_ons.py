"""Add-ons (AddOnService): one-off charges. Applying one to a customer is
announced as bxb.catalog.v1.add_on_applied through the outbox, in the same
transaction, with the add-on as it is then; invoicing issues its one-off
invoice. An add-on is immutable once created."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bxb.catalog.v1 import add_ons_pb2 as pb
from bxb.catalog.v1 import add_ons_pb2_grpc, events_pb2
from services.catalog import customers, taxes, test_clocks, validation
from services.catalog.models import AddOn, AppliedAddOn, Outbox
from services.common import currencies, outbox, pagination, tenancy
from services.common.decimals import check_cents
from services.common.errors import AlreadyExists, NotFound
from services.common.grpc_server import Context
from services.common.ids import new_id
from services.common.timestamps import to_proto, utcnow

ADD_ON_APPLIED = "bxb.catalog.v1.add_on_applied"


class AddOnServicer(add_ons_pb2_grpc.AddOnServiceServicer):
    def __init__(self, sessions: async_sessionmaker[AsyncSession], relay: outbox.OutboxRelay):
        self.sessions = sessions
        self.relay = relay

    async def CreateAddOn(self, request: pb.CreateAddOnRequest, context: Context) -> pb.AddOn:
        org = tenancy.organization_id()
        spec = request.add_on
        validation.code(spec.code, "add_on.code")
        check_cents(spec.amount_cents, "add_on.amount_cents", positive=True)
        now = utcnow()
        add_on = pb.AddOn(
            id=new_id("addon"),
            code=spec.code,
            name=validation.text(spec.name.strip() or spec.code, "add_on.name"),
            description=validation.text(spec.description, "add_on.description", 2000),
            amount_cents=spec.amount_cents,
            currency=currencies.validate(spec.currency or "USD", "add_on.currency"),
            create_time=to_proto(now),
        )
        try:
            async with self.sessions() as session, session.begin():
                add_on.tax_codes.extend(await taxes.check_codes(session, org, spec.tax_codes, "add_on.tax_codes"))
                session.add(
                    AddOn(
                        id=add_on.id,
                        organization_id=org,
                        code=add_on.code,
                        message=add_on.SerializeToString(),
                        create_time=now,
                    )
                )
        except IntegrityError:
            raise AlreadyExists(f"add-on {spec.code!r} already exists", field="add_on.code") from None
        return add_on

    async def _find(self, session: AsyncSession, org: str, code: str, field: str) -> pb.AddOn:
        query = select(AddOn.message).where(AddOn.organization_id == org, AddOn.code == code)
        message = (await session.execute(query)).scalar_one_or_none()
        if message is None:
            raise NotFound(f"add-on {code!r} not found", field=field)
        return pb.AddOn.FromString(message)

    async def GetAddOn(self, request: pb.GetAddOnRequest, context: Context) -> pb.AddOn:
        async with self.sessions() as session:
            return await self._find(session, tenancy.organization_id(), request.code, "code")

    async def ListAddOns(self, request: pb.ListAddOnsRequest, context: Context) -> pb.ListAddOnsResponse:
        org = tenancy.organization_id()
        page = pagination.page(request, "ListAddOns")
        query = (
            select(AddOn.message)
            .where(AddOn.organization_id == org)
            .order_by(AddOn.code)
            .offset(page.offset)
            .limit(page.size + 1)
        )
        async with self.sessions() as session:
            rows = (await session.execute(query)).scalars().all()
        add_ons, token = pagination.answer(page, [pb.AddOn.FromString(m) for m in rows])
        return pb.ListAddOnsResponse(add_ons=add_ons, next_page_token=token)

    async def ApplyAddOn(self, request: pb.ApplyAddOnRequest, context: Context) -> pb.AppliedAddOn:
        org = tenancy.organization_id()
        validation.external_id(request.customer_id, "customer_id")
        check_cents(request.amount_cents, "amount_cents")
        currency = currencies.validate(request.currency) if request.currency else ""
        async with self.sessions() as session, session.begin():
            add_on = await self._find(session, org, request.add_on_code, "add_on_code")
            customer = await customers.ensure(session, org, request.customer_id)
            now = await test_clocks.now(session, org, customer.test_clock_id)  # a clock's customer lives at its time
            applied = pb.AppliedAddOn(
                id=new_id("aao"),
                customer_id=request.customer_id,
                add_on=add_on,
                amount_cents=request.amount_cents or add_on.amount_cents,
                currency=currency or add_on.currency,
                create_time=to_proto(now),
            )
            session.add(
                AppliedAddOn(
                    id=applied.id,
                    organization_id=org,
                    customer_id=applied.customer_id,
                    message=applied.SerializeToString(),
                    create_time=now,
                )
            )
            event = events_pb2.AddOnApplied(
                event_id=new_id("evt"), organization_id=org, occur_time=to_proto(now), applied_add_on=applied
            )
            await outbox.enqueue(session, Outbox, ADD_ON_APPLIED, event)
        self.relay.wake()
        return applied

    async def ListAppliedAddOns(
        self, request: pb.ListAppliedAddOnsRequest, context: Context
    ) -> pb.ListAppliedAddOnsResponse:
        org = tenancy.organization_id()
        page = pagination.page(request, "ListAppliedAddOns")
        query = select(AppliedAddOn.message).where(AppliedAddOn.organization_id == org)
        if request.customer_id:
            query = query.where(AppliedAddOn.customer_id == request.customer_id)
        query = query.order_by(AppliedAddOn.create_time, AppliedAddOn.id).offset(page.offset).limit(page.size + 1)
        async with self.sessions() as session:
            rows = (await session.execute(query)).scalars().all()
        applied_add_ons, token = pagination.answer(page, [pb.AppliedAddOn.FromString(m) for m in rows])
        return pb.ListAppliedAddOnsResponse(applied_add_ons=applied_add_ons, next_page_token=token)
