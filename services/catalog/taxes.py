"""Tax rates (TaxService) and which of them an invoice carries.

An invoice carries the taxes its plan version names; when it names none, the
customer's; when the customer names none, the organization's (the taxes
`applied_to_organization`). Several taxes at one level all apply (a state
and a city tax). Rates are read when an invoice is issued, so a changed rate
applies to the invoices issued from then on.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bxb.catalog.v1 import taxes_pb2 as pb
from bxb.catalog.v1 import taxes_pb2_grpc
from services.catalog import validation
from services.catalog.models import Customer, Tax
from services.common import pagination, tenancy
from services.common.decimals import canonical, parse_decimal
from services.common.errors import AlreadyExists, InvalidArgument, NotFound
from services.common.grpc_server import Context
from services.common.ids import new_id
from services.common.timestamps import to_proto, utcnow

MAX_TAXES = 10
MAX_RESOLVED = 1000  # invoices per BatchResolveTaxes


def tax_proto(tax: Tax) -> pb.Tax:
    return pb.Tax(
        id=tax.id,
        code=tax.code,
        name=tax.name,
        rate=tax.rate,
        description=tax.description,
        applied_to_organization=tax.applied_to_organization,
        create_time=to_proto(tax.create_time),
    )


async def check_codes(session: AsyncSession, org: str, codes: Sequence[str], field: str = "tax_codes") -> list[str]:
    """The codes, each naming an existing tax of the organization."""
    validation.strings(codes, field, MAX_TAXES, 100)
    known = set(
        (await session.execute(select(Tax.code).where(Tax.organization_id == org, Tax.code.in_(list(codes)))))
        .scalars()
        .all()
    )
    for index, code in enumerate(codes):
        if code not in known:
            raise InvalidArgument(f"no tax with code {code!r}", field=f"{field}[{index}]", reason="UNKNOWN_TAX")
    return list(codes)


class TaxServicer(taxes_pb2_grpc.TaxServiceServicer):
    def __init__(self, sessions: async_sessionmaker[AsyncSession]):
        self.sessions = sessions

    async def CreateTax(self, request: pb.CreateTaxRequest, context: Context) -> pb.Tax:
        org = tenancy.organization_id()
        spec = request.tax
        validation.code(spec.code, "code")
        rate = parse_decimal(spec.rate or "", "rate")
        if rate > 100:
            raise InvalidArgument("rate must be at most 100 (percent)", field="rate")
        tax = Tax(
            id=new_id("tax"),
            organization_id=org,
            code=spec.code,
            name=validation.text(spec.name.strip() or spec.code, "name"),
            rate=canonical(rate),
            description=validation.text(spec.description, "description", 2000),
            applied_to_organization=spec.applied_to_organization,
            create_time=utcnow(),
        )
        try:
            async with self.sessions() as session, session.begin():
                session.add(tax)
        except IntegrityError:
            raise AlreadyExists(f"tax {spec.code!r} already exists", field="code") from None
        return tax_proto(tax)

    async def GetTax(self, request: pb.GetTaxRequest, context: Context) -> pb.Tax:
        async with self.sessions() as session:
            query = select(Tax).where(Tax.organization_id == tenancy.organization_id(), Tax.code == request.code)
            tax = (await session.execute(query)).scalar_one_or_none()
        if tax is None:
            raise NotFound(f"tax {request.code!r} not found", field="code")
        return tax_proto(tax)

    async def ListTaxes(self, request: pb.ListTaxesRequest, context: Context) -> pb.ListTaxesResponse:
        org = tenancy.organization_id()
        page = pagination.page(request, "ListTaxes")
        query = (
            select(Tax).where(Tax.organization_id == org).order_by(Tax.code).offset(page.offset).limit(page.size + 1)
        )
        async with self.sessions() as session:
            rows = (await session.execute(query)).scalars().all()
        taxes, token = pagination.answer(page, [tax_proto(t) for t in rows])
        return pb.ListTaxesResponse(taxes=taxes, next_page_token=token)

    async def BatchResolveTaxes(
        self, request: pb.BatchResolveTaxesRequest, context: Context
    ) -> pb.BatchResolveTaxesResponse:
        org = tenancy.organization_id()
        if len(request.requests) > MAX_RESOLVED:
            raise InvalidArgument(f"at most {MAX_RESOLVED} requests", field="requests")
        wanted = {r.customer_id for r in request.requests if not r.plan_tax_codes}
        async with self.sessions() as session:
            customers = (
                await session.execute(
                    select(Customer.id, Customer.tax_codes).where(
                        Customer.organization_id == org, Customer.id.in_(wanted)
                    )
                )
            ).all()
            taxes = (await session.execute(select(Tax).where(Tax.organization_id == org).order_by(Tax.code))).scalars()
            by_code = {tax.code: tax_proto(tax) for tax in taxes}
        customer_codes = {customer_id: list(codes) for customer_id, codes in customers}
        organization = [tax for tax in by_code.values() if tax.applied_to_organization]

        def resolved(r: pb.ResolveTaxesRequest) -> list[pb.Tax]:
            codes = list(r.plan_tax_codes) or customer_codes.get(r.customer_id, [])
            return (
                sorted((by_code[c] for c in set(codes) if c in by_code), key=lambda t: t.code)
                if codes
                else organization
            )

        return pb.BatchResolveTaxesResponse(
            responses=[pb.ResolveTaxesResponse(taxes=resolved(r)) for r in request.requests]
        )
