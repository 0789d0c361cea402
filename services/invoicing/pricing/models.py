"""The charge models. Each takes the period's quantity, the charge properties
(bxb.catalog.v1.ChargeProperties) and the period's per-event values in time
order, and returns a `Priced`: the exact amount and its per-tier breakdown.

All models share one signature, `model(units, props, values=())`; only
`percentage` reads `values` (the fee calculator asks metering for them only
for percentage charges). Properties arrive validated and canonical from the
catalog; an empty optional decimal string means "not set"."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, localcontext
from typing import Protocol

from bxb.catalog.v1.plans_pb2 import ChargeProperties
from services.invoicing.pricing.money import PRECISION

ZERO = Decimal(0)
HUNDRED = Decimal(100)


@dataclass(frozen=True)
class Tier:
    from_value: Decimal
    to_value: Decimal | None
    units: Decimal
    per_unit_amount: Decimal
    flat_amount: Decimal
    amount: Decimal


@dataclass(frozen=True)
class Priced:
    amount: Decimal
    tiers: list[Tier] = field(default_factory=list)


Model = Callable[..., Priced]


class _Range(Protocol):
    from_value: str
    to_value: str
    flat_amount: str


def _upper(tier: _Range) -> Decimal | None:
    """A range's inclusive upper bound; None for the open-ended last range."""
    return Decimal(tier.to_value) if tier.to_value else None


def _optional(text: str) -> Decimal | None:
    return Decimal(text) if text else None


def standard(units: Decimal, props: ChargeProperties, values: Sequence[Decimal] = ()) -> Priced:
    """units x unit amount."""
    with localcontext() as ctx:
        ctx.prec = PRECISION
        return Priced(amount=units * Decimal(props.amount))


def _graduate[R: _Range](units: Decimal, ranges: Sequence[R], per_unit_of: Callable[[R], Decimal]) -> Priced:
    """Each tier prices only the units inside it. Ranges have inclusive integer
    bounds ({0..100} then {101..null}): tier i holds the quantity above the
    previous tier's `to` up to its own `to`. A tier's flat fee applies once any
    quantity falls in it."""
    tiers = []
    total = ZERO
    with localcontext() as ctx:
        ctx.prec = PRECISION
        lower = ZERO
        for tier in ranges:
            upper = _upper(tier)
            inside = max(ZERO, (units if upper is None else min(units, upper)) - lower)
            per_unit, flat = per_unit_of(tier), Decimal(tier.flat_amount)
            amount = inside * per_unit + (flat if inside > 0 else ZERO)
            tiers.append(Tier(Decimal(tier.from_value), upper, inside, per_unit, flat, amount))
            total += amount
            if upper is None or units <= upper:
                break
            lower = upper
    return Priced(amount=total, tiers=tiers)


def graduated(units: Decimal, props: ChargeProperties, values: Sequence[Decimal] = ()) -> Priced:
    """Per tier: units inside x per_unit + flat_amount once any units are inside."""
    return _graduate(units, props.graduated_ranges, lambda tier: Decimal(tier.per_unit_amount))


def graduated_percentage(units: Decimal, props: ChargeProperties, values: Sequence[Decimal] = ()) -> Priced:
    """GRADUATED over the summed amount, each tier charging amount inside x
    rate / 100 + flat_amount. The breakdown's per-unit amount is rate / 100,
    the fee per unit of amount."""
    return _graduate(units, props.graduated_percentage_ranges, lambda tier: Decimal(tier.rate) / HUNDRED)


def volume(units: Decimal, props: ChargeProperties, values: Sequence[Decimal] = ()) -> Priced:
    """All units at the price of the one tier the total lands in (previous
    `to` < units <= `to`; the first tier from 0, the open last tier above its
    previous `to`), plus that tier's flat fee. Zero usage costs nothing, flat
    fee included. The breakdown is that one tier holding every unit."""
    with localcontext() as ctx:
        ctx.prec = PRECISION
        for tier in props.volume_ranges:
            upper = _upper(tier)
            if upper is None or units <= upper:
                per_unit, flat = Decimal(tier.per_unit_amount), Decimal(tier.flat_amount)
                amount = (units * per_unit + flat) if units > 0 else ZERO
                return Priced(amount, [Tier(Decimal(tier.from_value), upper, units, per_unit, flat, amount)])
    # Validation requires an open last range; the model itself never invents one.
    return Priced(amount=ZERO)


def package(units: Decimal, props: ChargeProperties, values: Sequence[Decimal] = ()) -> Priced:
    """amount per started package of package_size units, after free_units:
    ceil(max(0, units - free_units) / package_size) x amount."""
    with localcontext() as ctx:
        ctx.prec = PRECISION
        billable = max(ZERO, units - props.free_units)
        # divmod is exact: a rounded quotient could land on a whole number.
        whole, rest = divmod(billable, props.package_size)
        packages = whole + (1 if rest else 0)  # a started package is a whole package
        return Priced(amount=packages * Decimal(props.amount))


def percentage(units: Decimal, props: ChargeProperties, values: Sequence[Decimal] = ()) -> Priced:
    """A rate of each event's amount, in time order. While the free period
    lasts (fewer than free_units_per_events events so far, if set, and the
    running total within free_units_per_total_aggregation, if set, with at
    least one of them set) events are free. The event whose running total
    crosses the free amount is rated only on its part above it. Every charged
    event pays clamp(value x rate / 100, min, max) + fixed_amount, min and max
    per transaction bounding the rated part only. `units` (the sum) is unused:
    the per-event values decide."""
    rate = Decimal(props.rate)
    fixed = Decimal(props.fixed_amount or 0)
    free_events = props.free_units_per_events  # 0: not set
    free_amount = _optional(props.free_units_per_total_aggregation)
    least = _optional(props.per_transaction_min_amount)
    most = _optional(props.per_transaction_max_amount)
    total = ZERO
    with localcontext() as ctx:
        ctx.prec = PRECISION
        in_free_period = bool(free_events) or free_amount is not None  # only when a limit is set
        running = ZERO
        for index, value in enumerate(values):
            running += value
            charged = value
            if in_free_period and (not free_events or index < free_events):
                if free_amount is None or running <= free_amount:
                    continue  # still free: no rate, no fixed fee
                charged = running - free_amount  # crosses the free amount inside this event
            in_free_period = False  # ended for good: later events are all charged
            rated = charged * rate / HUNDRED
            if least is not None:
                rated = max(rated, least)
            if most is not None:
                rated = min(rated, most)
            total += rated + fixed
    return Priced(amount=total)


def flat(units: Decimal, props: ChargeProperties, values: Sequence[Decimal] = ()) -> Priced:
    """amount per period, whatever the usage (even none)."""
    return Priced(amount=Decimal(props.amount))


MODELS: dict[str, Model] = {
    "CHARGE_MODEL_STANDARD": standard,
    "CHARGE_MODEL_GRADUATED": graduated,
    "CHARGE_MODEL_VOLUME": volume,
    "CHARGE_MODEL_PACKAGE": package,
    "CHARGE_MODEL_PERCENTAGE": percentage,
    "CHARGE_MODEL_GRADUATED_PERCENTAGE": graduated_percentage,
    "CHARGE_MODEL_FLAT": flat,
}
