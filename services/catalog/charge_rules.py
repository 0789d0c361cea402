"""What makes a charge's properties valid, per charge model.

Amounts are decimal strings in major units with full precision kept
("0.0005"); the invoicing service does the math, this module only decides
what a plan may contain. Errors name the field as the JSON API spells it,
for example `charges[0].properties.graduated_ranges[1].from`.
"""

from __future__ import annotations

from decimal import Decimal

from bxb.catalog.v1 import plans_pb2 as pb
from services.common.decimals import canonical, parse_decimal
from services.common.errors import InvalidArgument


def validate(charge: pb.Charge, path: str) -> pb.ChargeProperties:
    """Returns the properties in canonical form, or raises naming the field."""
    props = charge.properties
    where = f"{path}.properties"
    if charge.charge_model == pb.CHARGE_MODEL_STANDARD:
        if not props.amount:
            raise InvalidArgument(f"{where}.amount is required for the standard model", field=f"{where}.amount")
        amount = parse_decimal(props.amount, f"{where}.amount")
        if props.graduated_ranges:
            raise InvalidArgument(
                "graduated_ranges do not apply to the standard model", field=f"{where}.graduated_ranges"
            )
        return pb.ChargeProperties(amount=canonical(amount))
    if charge.charge_model == pb.CHARGE_MODEL_GRADUATED:
        if props.amount:
            raise InvalidArgument("amount does not apply to the graduated model", field=f"{where}.amount")
        return pb.ChargeProperties(graduated_ranges=_ranges(props.graduated_ranges, f"{where}.graduated_ranges"))
    raise InvalidArgument(f"{path}.charge_model is required", field=f"{path}.charge_model")


def _ranges(ranges, where: str) -> list[pb.GraduatedRange]:
    """Inclusive integer bounds: the first starts at 0, each next one at the
    previous `to` + 1, only the last is open-ended."""
    if not ranges:
        raise InvalidArgument(f"{where} needs at least one range", field=where)
    result = []
    expected_from = Decimal(0)
    for index, tier in enumerate(ranges):
        here = f"{where}[{index}]"
        start = parse_decimal(tier.from_value or "0", f"{here}.from")
        if start != expected_from:
            raise InvalidArgument(
                f"{here}.from must be {canonical(expected_from)}: ranges start at 0 and leave no gap or overlap",
                field=f"{here}.from",
            )
        last = index == len(ranges) - 1
        if tier.to_value:
            end = parse_decimal(tier.to_value, f"{here}.to")
            if end != end.to_integral_value() or end < start:
                raise InvalidArgument(f"{here}.to must be a whole number not below from", field=f"{here}.to")
            if last:
                raise InvalidArgument(f"{here}.to must be null: the last range is open-ended", field=f"{here}.to")
            expected_from = end + 1
        elif not last:
            raise InvalidArgument(f"{here}.to is required: only the last range may be open-ended", field=f"{here}.to")
        per_unit = parse_decimal(tier.per_unit_amount or "0", f"{here}.per_unit")
        flat = parse_decimal(tier.flat_amount or "0", f"{here}.flat_amount")
        result.append(
            pb.GraduatedRange(
                from_value=canonical(start),
                to_value=tier.to_value and canonical(Decimal(tier.to_value)),
                per_unit_amount=canonical(per_unit),
                flat_amount=canonical(flat),
            )
        )
    return result
