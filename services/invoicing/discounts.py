"""Coupon discounts on one invoice: pure arithmetic, no I/O.

Coupons apply to the invoice's subtotal before tax, in the order they were
applied to the customer, each to what the ones before it left:
- a percentage coupon takes its rate of what is left, rounded half up once
  to the minor unit;
- a fixed-amount coupon takes what is left, up to what it still has: a
  `once` coupon has its amount less everything it has given (so an amount
  larger than one invoice carries its remainder to the next ones); a
  recurring or forever coupon has its amount once per billing period.
A coupon limited to plans discounts only invoices of those plans; one limited
to metrics discounts only the fees of those metrics. A fixed amount discounts
only invoices in its currency. A `once` percentage coupon discounts one
invoice; a recurring one, the invoices whose period starts within
duration_in_months of the first period it discounted. A coupon that would
take nothing is not listed, and its duration does not start.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from bxb.catalog.v1 import coupons_pb2
from bxb.invoicing.v1 import invoices_pb2 as pb
from services.common.periods import add_months
from services.invoicing.pricing.money import from_minor, to_minor

ONCE, RECURRING = coupons_pb2.COUPON_DURATION_ONCE, coupons_pb2.COUPON_DURATION_RECURRING
PERCENTAGE = coupons_pb2.COUPON_TYPE_PERCENTAGE
METRIC_FEES = (pb.FEE_TYPE_CHARGE, pb.FEE_TYPE_TRUE_UP)


@dataclass(frozen=True)
class Standing:
    """What an applied coupon has given before this invoice."""

    given_cents: int = 0  # in total
    first_period: datetime | None = None  # start of the first period it discounted
    given_this_period_cents: int = 0  # to the invoices of this invoice's subscription period


@dataclass(frozen=True)
class Offer:
    applied_coupon_id: str
    coupon: coupons_pb2.Coupon
    standing: Standing = Standing()


@dataclass(frozen=True)
class Invoiced:
    """What the discounts need to know of the invoice."""

    fees: Sequence[pb.Fee]
    currency: str
    plan_code: str
    period_start: datetime


def _applies(offer: Offer, invoice: Invoiced) -> bool:
    coupon, standing = offer.coupon, offer.standing
    if coupon.plan_codes and invoice.plan_code not in coupon.plan_codes:
        return False
    if coupon.coupon_type != PERCENTAGE and coupon.currency != invoice.currency:
        return False
    if coupon.duration == ONCE and coupon.coupon_type == PERCENTAGE:
        return standing.given_cents == 0
    if coupon.duration == RECURRING and standing.first_period is not None:
        return invoice.period_start < add_months(standing.first_period, coupon.duration_in_months)
    return True


def _take(offer: Offer, base: int, currency: str) -> int:
    """The discount of one coupon on `base` minor units."""
    coupon, standing = offer.coupon, offer.standing
    if coupon.coupon_type == PERCENTAGE:
        exact = from_minor(base, currency) * Decimal(coupon.percentage) / 100
        return min(base, to_minor(exact, currency))
    given = standing.given_cents if coupon.duration == ONCE else standing.given_this_period_cents
    return min(base, coupon.amount_cents - given)


def discounts(invoice: Invoiced, offers: Sequence[Offer]) -> list[pb.InvoiceCoupon]:
    """Each coupon's discount on the invoice, in application order (negative cents)."""
    left = [fee.amount_cents for fee in invoice.fees]  # what the coupons so far left of each fee
    result = []
    for offer in offers:
        if not _applies(offer, invoice):
            continue
        limits = offer.coupon.billable_metric_codes
        eligible = [
            i
            for i, fee in enumerate(invoice.fees)
            if not limits or (fee.type in METRIC_FEES and fee.billable_metric_code in limits)
        ]
        cents = _take(offer, sum(left[i] for i in eligible), invoice.currency)
        if cents <= 0:
            continue
        remaining = cents
        for i in eligible:  # the discount comes off the eligible fees in order
            part = min(left[i], remaining)
            left[i] -= part
            remaining -= part
        result.append(
            pb.InvoiceCoupon(
                applied_coupon_id=offer.applied_coupon_id,
                code=offer.coupon.code,
                name=offer.coupon.name,
                discount_cents=-cents,
            )
        )
    return result
