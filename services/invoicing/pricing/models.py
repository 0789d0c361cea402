"""The charge models. Each takes the quantity and the charge properties
(bxb.catalog.v1.ChargeProperties) and returns a `Priced`: the exact amount and
its per-tier breakdown."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal, localcontext

from services.invoicing.pricing.money import PRECISION


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


def standard(units: Decimal, props) -> Priced:
    """units x unit amount."""
    with localcontext() as ctx:
        ctx.prec = PRECISION
        return Priced(amount=units * Decimal(props.amount))


def graduated(units: Decimal, props) -> Priced:
    """Each tier prices only the units inside it. Ranges have inclusive integer
    bounds ({0..100} then {101..null}): tier i holds the quantity above the
    previous tier's `to` up to its own `to`. A tier's flat fee applies once any
    quantity falls in it."""
    tiers = []
    total = Decimal(0)
    with localcontext() as ctx:
        ctx.prec = PRECISION
        lower = Decimal(0)
        for tier in props.graduated_ranges:
            upper = Decimal(tier.to_value) if tier.to_value else None
            inside = max(Decimal(0), (units if upper is None else min(units, upper)) - lower)
            per_unit, flat = Decimal(tier.per_unit_amount), Decimal(tier.flat_amount)
            amount = inside * per_unit + (flat if inside > 0 else Decimal(0))
            tiers.append(Tier(Decimal(tier.from_value), upper, inside, per_unit, flat, amount))
            total += amount
            if upper is None or units <= upper:
                break
            lower = upper
    return Priced(amount=total, tiers=tiers)


MODELS = {"CHARGE_MODEL_STANDARD": standard, "CHARGE_MODEL_GRADUATED": graduated}
