"""Coupons and the customers they are applied to (CouponService).

A coupon is immutable once created. Applying one to a customer (and removing
it) is announced as bxb.catalog.v1.applied_coupon_updated through the outbox,
in the same transaction, carrying the coupon: invoicing discounts with it and
keeps what each applied coupon has already given. A coupon is applied at most
once at a time per customer, and not after its expiry.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bxb.catalog.v1 import coupons_pb2 as pb
from bxb.catalog.v1 import coupons_pb2_grpc, events_pb2
from services.catalog import customers, metrics, plans, test_clocks, validation
from services.catalog.models import AppliedCoupon, Coupon, Outbox
from services.common import currencies, outbox, pagination, tenancy
from services.common.decimals import canonical, check_cents, parse_amount, parse_decimal
from services.common.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from services.common.grpc_server import Context
from services.common.ids import new_id
from services.common.timestamps import from_proto_or_none, to_proto, utcnow

APPLIED_COUPON_UPDATED = "bxb.catalog.v1.applied_coupon_updated"
# A hundred years of months: longer is a forever coupon.
MAX_MONTHS = 1200
MAX_LIMITS = 100


def _percentage(coupon: pb.Coupon) -> str:
    rate = parse_decimal(coupon.percentage or "", "coupon.percentage")
    if not 0 < rate <= 100:
        raise InvalidArgument("coupon.percentage must be more than 0 and at most 100", field="coupon.percentage")
    if coupon.amount_cents or coupon.amount or coupon.currency:
        raise InvalidArgument(
            "a percentage coupon has no amount", field="coupon.amount" if coupon.amount else "coupon.amount_cents"
        )
    return canonical(rate)


def _amount_cents(coupon: pb.Coupon, currency: str) -> int:
    """A fixed coupon's amount in minor units: amount_cents, or `amount` in
    major units converted (more decimals than the currency has are refused)."""
    if not coupon.amount:
        return check_cents(coupon.amount_cents, "coupon.amount_cents", positive=True)
    if coupon.amount_cents:
        raise InvalidArgument("give amount or amount_cents, not both", field="coupon.amount")
    minor = parse_amount(coupon.amount, "coupon.amount").scaleb(currencies.exponent(currency))
    if minor != minor.to_integral_value():
        raise InvalidArgument(f"coupon.amount has more decimals than {currency} has", field="coupon.amount")
    return check_cents(int(minor), "coupon.amount", positive=True)


def with_amount(coupon: pb.Coupon) -> pb.Coupon:
    """The coupon as answered: a fixed one's amount in major units beside
    its minor units (coupons stored before `amount` existed have none)."""
    if coupon.coupon_type == pb.COUPON_TYPE_FIXED_AMOUNT:
        coupon.amount = canonical(Decimal(coupon.amount_cents).scaleb(-currencies.exponent(coupon.currency)))
    return coupon


def _duration(coupon: pb.Coupon) -> None:
    if coupon.duration == pb.COUPON_DURATION_RECURRING:
        if not 1 <= coupon.duration_in_months <= MAX_MONTHS:
            raise InvalidArgument(
                f"a recurring coupon needs duration_in_months between 1 and {MAX_MONTHS}",
                field="coupon.duration_in_months",
            )
    elif coupon.duration_in_months:
        raise InvalidArgument("only a recurring coupon has duration_in_months", field="coupon.duration_in_months")


async def _limits(session: AsyncSession, org: str, coupon: pb.Coupon) -> None:
    """The plans and metrics a coupon is limited to must exist."""
    validation.strings(coupon.plan_codes, "coupon.plan_codes", MAX_LIMITS, 100)
    validation.strings(coupon.billable_metric_codes, "coupon.billable_metric_codes", MAX_LIMITS, 100)
    for index, code in enumerate(coupon.plan_codes):
        if await plans.current(session, org, code) is None:
            raise InvalidArgument(
                f"no plan with code {code!r}", field=f"coupon.plan_codes[{index}]", reason="UNKNOWN_PLAN"
            )
    for index, code in enumerate(coupon.billable_metric_codes):
        if await metrics.find(session, org, code) is None:
            raise InvalidArgument(
                f"no billable metric with code {code!r}",
                field=f"coupon.billable_metric_codes[{index}]",
                reason="UNKNOWN_METRIC",
            )


def validated(coupon: pb.Coupon) -> pb.Coupon:
    """The coupon to store: checked, canonical, without server-set fields."""
    validation.code(coupon.code, "coupon.code")
    clean = pb.Coupon()
    clean.CopyFrom(coupon)
    clean.ClearField("id")
    clean.ClearField("create_time")
    clean.name = validation.text(coupon.name.strip() or coupon.code, "coupon.name")
    validation.text(coupon.description, "coupon.description", 2000)
    if coupon.coupon_type == pb.COUPON_TYPE_PERCENTAGE:
        clean.percentage = _percentage(coupon)
    else:  # fixed amount: the proto's rules admit no other type
        if coupon.percentage:
            raise InvalidArgument("a fixed-amount coupon has no percentage", field="coupon.percentage")
        clean.currency = currencies.validate(coupon.currency or "USD", "coupon.currency")
        clean.amount_cents = _amount_cents(coupon, clean.currency)
        with_amount(clean)
    _duration(coupon)
    return clean


def applied_proto(applied: AppliedCoupon, coupon: Coupon) -> pb.AppliedCoupon:
    return pb.AppliedCoupon(
        id=applied.id,
        customer_id=applied.customer_id,
        coupon=with_amount(pb.Coupon.FromString(coupon.message)),
        create_time=to_proto(applied.create_time),
        terminate_time=to_proto(applied.terminate_time),
    )


async def _announce(session: AsyncSession, org: str, applied: pb.AppliedCoupon, now: datetime) -> None:
    event = events_pb2.AppliedCouponUpdated(
        event_id=new_id("evt"), organization_id=org, occur_time=to_proto(now), applied_coupon=applied
    )
    await outbox.enqueue(session, Outbox, APPLIED_COUPON_UPDATED, event)


async def _coupon(session: AsyncSession, org: str, code: str, field: str) -> Coupon:
    row = (
        await session.execute(select(Coupon).where(Coupon.organization_id == org, Coupon.code == code))
    ).scalar_one_or_none()
    if row is None:
        raise NotFound(f"coupon {code!r} not found", field=field)
    return row


class CouponServicer(coupons_pb2_grpc.CouponServiceServicer):
    def __init__(self, sessions: async_sessionmaker[AsyncSession], relay: outbox.OutboxRelay):
        self.sessions = sessions
        self.relay = relay

    async def CreateCoupon(self, request: pb.CreateCouponRequest, context: Context) -> pb.Coupon:
        org = tenancy.organization_id()
        coupon = validated(request.coupon)
        now = utcnow()
        coupon.id = new_id("coupon")
        coupon.create_time.CopyFrom(to_proto(now))
        try:
            async with self.sessions() as session, session.begin():
                await _limits(session, org, coupon)
                session.add(
                    Coupon(
                        id=coupon.id,
                        organization_id=org,
                        code=coupon.code,
                        message=coupon.SerializeToString(),
                        create_time=now,
                    )
                )
        except IntegrityError:
            raise AlreadyExists(f"coupon {coupon.code!r} already exists", field="coupon.code") from None
        return coupon

    async def GetCoupon(self, request: pb.GetCouponRequest, context: Context) -> pb.Coupon:
        async with self.sessions() as session:
            row = await _coupon(session, tenancy.organization_id(), request.code, "code")
        return with_amount(pb.Coupon.FromString(row.message))

    async def ListCoupons(self, request: pb.ListCouponsRequest, context: Context) -> pb.ListCouponsResponse:
        org = tenancy.organization_id()
        page = pagination.page(request, "ListCoupons")
        query = (
            select(Coupon.message)
            .where(Coupon.organization_id == org)
            .order_by(Coupon.create_time, Coupon.id)
            .offset(page.offset)
            .limit(page.size + 1)
        )
        async with self.sessions() as session:
            rows = (await session.execute(query)).scalars().all()
        coupons, token = pagination.answer(page, [with_amount(pb.Coupon.FromString(m)) for m in rows])
        return pb.ListCouponsResponse(coupons=coupons, next_page_token=token)

    async def ApplyCoupon(self, request: pb.ApplyCouponRequest, context: Context) -> pb.AppliedCoupon:
        org = tenancy.organization_id()
        validation.external_id(request.customer_id, "customer_id")
        async with self.sessions() as session, session.begin():
            customer = await customers.ensure(session, org, request.customer_id)
            now = await test_clocks.now(session, org, customer.test_clock_id)  # a clock's customer lives at its time
            # Locked: two concurrent applications to one customer run one after the other.
            coupon = await _coupon(session, org, request.coupon_code, "coupon_code")
            await session.refresh(coupon, with_for_update=True)
            definition = pb.Coupon.FromString(coupon.message)
            expiry = from_proto_or_none(definition, "expire_time")
            if expiry is not None and expiry <= now:
                raise FailedPrecondition(
                    f"coupon {coupon.code!r} expired at {expiry.isoformat()}",
                    field="coupon_code",
                    reason="COUPON_EXPIRED",
                )
            active = select(AppliedCoupon.id).where(
                AppliedCoupon.organization_id == org,
                AppliedCoupon.customer_id == request.customer_id,
                AppliedCoupon.coupon_id == coupon.id,
                AppliedCoupon.terminate_time.is_(None),
            )
            if (await session.execute(active)).first() is not None:
                raise FailedPrecondition(
                    f"coupon {coupon.code!r} is already applied to customer {request.customer_id!r}",
                    field="coupon_code",
                    reason="COUPON_ALREADY_APPLIED",
                )
            applied = AppliedCoupon(
                id=new_id("acp"),
                organization_id=org,
                customer_id=request.customer_id,
                coupon_id=coupon.id,
                create_time=now,
            )
            session.add(applied)
            await session.flush()
            result = applied_proto(applied, coupon)
            await _announce(session, org, result, now)
        self.relay.wake()
        return result

    async def ListAppliedCoupons(
        self, request: pb.ListAppliedCouponsRequest, context: Context
    ) -> pb.ListAppliedCouponsResponse:
        org = tenancy.organization_id()
        page = pagination.page(request, "ListAppliedCoupons")
        query = (
            select(AppliedCoupon, Coupon)
            .join(Coupon, Coupon.id == AppliedCoupon.coupon_id)
            .where(AppliedCoupon.organization_id == org)
        )
        if request.customer_id:
            query = query.where(AppliedCoupon.customer_id == request.customer_id)
        query = query.order_by(AppliedCoupon.create_time, AppliedCoupon.id).offset(page.offset).limit(page.size + 1)
        async with self.sessions() as session:
            rows = (await session.execute(query)).all()
        applied_coupons, token = pagination.answer(page, [applied_proto(a, c) for a, c in rows])
        return pb.ListAppliedCouponsResponse(applied_coupons=applied_coupons, next_page_token=token)

    async def RemoveAppliedCoupon(self, request: pb.RemoveAppliedCouponRequest, context: Context) -> pb.AppliedCoupon:
        org = tenancy.organization_id()
        async with self.sessions() as session, session.begin():
            query = (
                select(AppliedCoupon)
                .where(AppliedCoupon.id == request.id, AppliedCoupon.organization_id == org)
                .with_for_update()
            )
            applied = (await session.execute(query)).scalar_one_or_none()
            if applied is None:
                raise NotFound(f"applied coupon {request.id!r} not found", field="id")
            coupon = await session.get_one(Coupon, applied.coupon_id)
            if applied.terminate_time is not None:  # removing again changes nothing
                return applied_proto(applied, coupon)
            now = await test_clocks.customer_now(session, org, applied.customer_id)
            applied.terminate_time = now
            result = applied_proto(applied, coupon)
            await _announce(session, org, result, now)
        self.relay.wake()
        return result
