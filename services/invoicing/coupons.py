"""Invoicing's side of coupons: the applied coupons it projects from catalog
events, what each has given (its redemptions), and the discounts of an
invoice being issued.

Applying an AppliedCouponUpdated twice leaves the same row, and a removal
only ever moves earlier (the earliest wins), so redeliveries and reordering
are harmless. An invoice takes its discounts inside its own transaction with
the customer's applied coupons row-locked, so two invoices issued at once
(two subscriptions, two invoicing processes) never both spend the same
remainder of a fixed-amount coupon.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import and_, func, or_, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from bxb.catalog.v1 import coupons_pb2
from bxb.invoicing.v1 import invoices_pb2 as pb
from services.common.timestamps import from_proto, from_proto_or_none
from services.invoicing.discounts import Invoiced, Offer, Standing, discounts
from services.invoicing.models import AppliedCoupon, CouponRedemption


async def project(session: AsyncSession, org: str, applied: coupons_pb2.AppliedCoupon) -> None:
    """Stores an applied coupon as catalog announced it."""
    statement = insert(AppliedCoupon).values(
        id=applied.id,
        organization_id=org,
        customer_id=applied.customer_id,
        coupon=applied.coupon.SerializeToString(),
        apply_time=from_proto(applied.create_time),
        terminate_time=from_proto_or_none(applied, "terminate_time"),
    )
    # LEAST ignores NULL: a known removal stays unless this one is earlier.
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=[AppliedCoupon.id],
            set_={"terminate_time": func.least(AppliedCoupon.terminate_time, statement.excluded.terminate_time)},
        )
    )


async def offers(
    session: AsyncSession,
    org: str,
    customer_id: str,
    subscription_id: str,
    period_start: datetime,
    now: datetime,
    lock: bool = False,
) -> list[Offer]:
    """The customer's coupons in force at `now`, in application order, each
    with what it has given; row-locked until the transaction ends with `lock`."""
    query = (
        select(AppliedCoupon)
        .where(
            AppliedCoupon.organization_id == org,
            AppliedCoupon.customer_id == customer_id,
            AppliedCoupon.apply_time <= now,
            or_(AppliedCoupon.terminate_time.is_(None), AppliedCoupon.terminate_time > now),
        )
        .order_by(AppliedCoupon.apply_time, AppliedCoupon.id)
    )
    if lock:
        query = query.with_for_update()
    applied = (await session.execute(query)).scalars().all()
    if not applied:
        return []
    this_period = and_(
        CouponRedemption.subscription_id == subscription_id, CouponRedemption.period_start == period_start
    )
    given = await session.execute(
        select(
            CouponRedemption.applied_coupon_id,
            func.sum(CouponRedemption.amount_cents),
            func.min(CouponRedemption.period_start),
            func.coalesce(func.sum(CouponRedemption.amount_cents).filter(this_period), 0),
        )
        .where(CouponRedemption.applied_coupon_id.in_([a.id for a in applied]))
        .group_by(CouponRedemption.applied_coupon_id)
    )
    standing = {row[0]: Standing(int(row[1]), row[2], int(row[3])) for row in given}
    return [Offer(a.id, coupons_pb2.Coupon.FromString(a.coupon), standing.get(a.id, Standing())) for a in applied]


async def holders(
    session: AsyncSession, org: str, customer_ids: Iterable[str], since: datetime, until: datetime
) -> set[str]:
    """The customers among `customer_ids` with a coupon in force at some time
    in [since, until]; their coupons are row-locked, in id order, until the
    transaction ends. A billing page locks all its customers' coupons here,
    before any invoice of it reads them, so two pages never lock them in
    opposite orders."""
    query = (
        select(AppliedCoupon.id, AppliedCoupon.customer_id)
        .where(
            AppliedCoupon.organization_id == org,
            AppliedCoupon.customer_id.in_(set(customer_ids)),
            AppliedCoupon.apply_time <= until,
            or_(AppliedCoupon.terminate_time.is_(None), AppliedCoupon.terminate_time > since),
        )
        .order_by(AppliedCoupon.id)
        .with_for_update()
    )
    return {customer_id for _, customer_id in (await session.execute(query)).all()}


async def discount(
    session: AsyncSession,
    org: str,
    customer_id: str,
    subscription_id: str,
    invoice: Invoiced,
    now: datetime,
    lock: bool = False,
) -> list[pb.InvoiceCoupon]:
    """The discounts an invoice issued now would get."""
    found = await offers(session, org, customer_id, subscription_id, invoice.period_start, now, lock)
    return discounts(invoice, found) if found else []


def redemptions(
    invoice_id: str, subscription_id: str, period_start: datetime, coupons: Iterable[pb.InvoiceCoupon]
) -> list[CouponRedemption]:
    return [
        CouponRedemption(
            invoice_id=invoice_id,
            applied_coupon_id=c.applied_coupon_id,
            subscription_id=subscription_id,
            period_start=period_start,
            amount_cents=-c.discount_cents,
        )
        for c in coupons
    ]
