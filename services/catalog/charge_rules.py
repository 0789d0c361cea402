"""What makes a charge's properties valid, per charge model.

Amounts and rates are decimal strings in major units (rates in percent) with
full precision kept ("0.0005"); the invoicing service does the math, this
module only decides what a plan may contain and stores it canonical. An
optional decimal left unset stays the empty string ("not set"). Errors name
the field as the JSON API spells it, for example
`charges[0].properties.graduated_ranges[1].from`.

`charge` checks the rest of a charge's terms: its filters (each priced by the
same model, on keys and values the metric declares), grouping, minimum spend,
payment in advance (FLAT only: usage is known only at the period's end) and
display name.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import NamedTuple, Protocol

from bxb.catalog.v1 import billable_metrics_pb2 as metrics_pb
from bxb.catalog.v1 import plans_pb2 as pb
from services.catalog import validation
from services.common.charge_fields import MODEL_FIELDS
from services.common.decimals import canonical, check_cents, parse_amount, parse_decimal
from services.common.errors import InvalidArgument

# The properties each model may carry; any other property given is refused, named.
FIELDS: dict[int, frozenset[str]] = {
    pb.ChargeModel.Value(f"CHARGE_MODEL_{model.upper()}"): frozenset(fields) for model, fields in MODEL_FIELDS.items()
}

# Models that rate an amount: their metric must sum that amount.
SUM_ONLY = frozenset({pb.CHARGE_MODEL_PERCENTAGE, pb.CHARGE_MODEL_GRADUATED_PERCENTAGE})
# Models that may split their usage into groups (`grouped_by`): every one that
# depends on usage. A FLAT charge is the same amount whatever the usage.
GROUPABLE = frozenset(FIELDS) - {pb.CHARGE_MODEL_FLAT}
# Models a charge may be paid in advance with: only FLAT, whose amount is known
# before the period's usage.
IN_ADVANCE = frozenset({pb.CHARGE_MODEL_FLAT})

MAX_FILTERS = 100
MAX_GROUPED_BY = 20
MAX_DISPLAY_NAME = 200
MAX_PROPERTY_KEY = 100


def model_name(model: pb.ChargeModel.ValueType) -> str:
    return pb.ChargeModel.Name(model).removeprefix("CHARGE_MODEL_").lower()


def validate(charge: pb.Charge, path: str, aggregation: int) -> pb.ChargeProperties:
    """Returns the properties in canonical form, or raises naming the field.
    `aggregation` is the AggregationType of the charge's billable metric."""
    model = charge.charge_model
    if model not in FIELDS:
        raise InvalidArgument(f"{path}.charge_model is required", field=f"{path}.charge_model")
    name = model_name(model)
    if model in SUM_ONLY and aggregation != metrics_pb.AGGREGATION_TYPE_SUM:
        raise InvalidArgument(
            f"{path}.charge_model {name} needs a billable metric with aggregation_type sum",
            field=f"{path}.charge_model",
            reason="INCOMPATIBLE_METRIC",
        )
    return _properties(charge.properties, model, f"{path}.properties", grouping=model in GROUPABLE)


def _properties(
    props: pb.ChargeProperties, model: pb.ChargeModel.ValueType, where: str, grouping: bool
) -> pb.ChargeProperties:
    """The properties of `model` in canonical form; `grouping` allows grouped_by."""
    name = model_name(model)
    for descriptor, _ in props.ListFields():  # the fields set, in field-number order
        if descriptor.name == "grouped_by" and grouping:
            continue
        if descriptor.name == "grouped_by" and model in GROUPABLE:
            raise InvalidArgument(
                f"{where}.grouped_by does not apply to a filter: grouping applies to the whole charge",
                field=f"{where}.grouped_by",
            )
        if descriptor.name not in FIELDS[model]:
            raise InvalidArgument(
                f"{where}.{descriptor.name} does not apply to the {name} model", field=f"{where}.{descriptor.name}"
            )
    result = _CANONICAL[model](props, where, name)
    result.grouped_by.extend(
        validation.strings(props.grouped_by, f"{where}.grouped_by", MAX_GROUPED_BY, MAX_PROPERTY_KEY)
    )
    return result


def charge(given: pb.Charge, path: str, metric: metrics_pb.BillableMetric) -> pb.Charge:
    """The charge's terms in canonical form (without id and metric), or raises
    naming the field. `metric` is the charge's billable metric."""
    properties = validate(given, path, metric.aggregation_type)
    model = given.charge_model
    if given.pay_in_advance and model not in IN_ADVANCE:
        raise InvalidArgument(
            f"{path}.pay_in_advance: only a flat charge can be paid in advance; "
            f"a {model_name(model)} charge depends on usage known at the period's end",
            field=f"{path}.pay_in_advance",
        )
    check_cents(given.min_amount_cents, f"{path}.min_amount_cents")
    if len(given.filters) > MAX_FILTERS:
        raise InvalidArgument(f"{path}.filters has more than {MAX_FILTERS} filters", field=f"{path}.filters")
    declared = {item.key: set(item.values) for item in metric.filters}
    filters: list[pb.ChargeFilter] = []
    seen: dict[frozenset[tuple[str, frozenset[str]]], int] = {}
    for index, item in enumerate(given.filters):
        here = f"{path}.filters[{index}]"
        stored = _filter(item, here, model, declared)
        matched = frozenset((value.key, frozenset(value.values)) for value in stored.values)
        if matched in seen:
            raise InvalidArgument(
                f"{here}.values are the same as those of {path}.filters[{seen[matched]}]", field=f"{here}.values"
            )
        seen[matched] = index
        filters.append(stored)
    return pb.Charge(
        charge_model=model,
        properties=properties,
        filters=filters,
        min_amount_cents=given.min_amount_cents,
        pay_in_advance=given.pay_in_advance,
        invoice_display_name=validation.text(
            given.invoice_display_name, f"{path}.invoice_display_name", MAX_DISPLAY_NAME
        ),
    )


def _filter(
    given: pb.ChargeFilter, here: str, model: pb.ChargeModel.ValueType, declared: dict[str, set[str]]
) -> pb.ChargeFilter:
    """A filter on keys and values the metric declares, priced by the charge's model."""
    if not given.values:
        raise InvalidArgument(f"{here}.values needs at least one key", field=f"{here}.values")
    values, keys = [], set()
    for item in given.values:
        where = f"{here}.values.{item.key}"
        if item.key not in declared:
            known = ", ".join(sorted(declared)) or "none"
            raise InvalidArgument(
                f"{where}: the billable metric has no filter {item.key!r} (its filters: {known})",
                field=where,
                reason="UNKNOWN_FILTER",
            )
        if item.key in keys:
            raise InvalidArgument(f"{where} is given twice", field=where)
        keys.add(item.key)
        if not item.values:
            raise InvalidArgument(f"{where} needs at least one value", field=where)
        given_values = set()
        for value in item.values:
            if value not in declared[item.key]:
                raise InvalidArgument(
                    f"{where}: {value!r} is not a value of the billable metric's filter {item.key!r}",
                    field=where,
                    reason="UNKNOWN_FILTER",
                )
            if value in given_values:
                raise InvalidArgument(f"{where}: {value!r} is given twice", field=where)
            given_values.add(value)
        values.append(metrics_pb.PropertyValues(key=item.key, values=item.values))
    return pb.ChargeFilter(
        values=values,
        properties=_properties(given.properties, model, f"{here}.properties", grouping=False),
        invoice_display_name=validation.text(
            given.invoice_display_name, f"{here}.invoice_display_name", MAX_DISPLAY_NAME
        ),
    )


def _standard_or_flat(props: pb.ChargeProperties, where: str, name: str) -> pb.ChargeProperties:
    return pb.ChargeProperties(amount=_required(props.amount, f"{where}.amount", name))


def _graduated(props: pb.ChargeProperties, where: str, name: str) -> pb.ChargeProperties:
    return pb.ChargeProperties(graduated_ranges=_ranges(props.graduated_ranges, f"{where}.graduated_ranges", _UNIT))


def _volume(props: pb.ChargeProperties, where: str, name: str) -> pb.ChargeProperties:
    return pb.ChargeProperties(volume_ranges=_ranges(props.volume_ranges, f"{where}.volume_ranges", _UNIT))


def _graduated_percentage(props: pb.ChargeProperties, where: str, name: str) -> pb.ChargeProperties:
    ranges = _ranges(props.graduated_percentage_ranges, f"{where}.graduated_percentage_ranges", _PERCENT)
    return pb.ChargeProperties(graduated_percentage_ranges=ranges)


def _package(props: pb.ChargeProperties, where: str, name: str) -> pb.ChargeProperties:
    amount = _required(props.amount, f"{where}.amount", name)
    if props.package_size == 0:
        raise InvalidArgument(
            f"{where}.package_size is required for the {name} model: a whole number of at least 1",
            field=f"{where}.package_size",
        )
    _at_least(props.package_size, 1, f"{where}.package_size")
    _at_least(props.free_units, 0, f"{where}.free_units")
    return pb.ChargeProperties(amount=amount, package_size=props.package_size, free_units=props.free_units or None)


def _percentage(props: pb.ChargeProperties, where: str, name: str) -> pb.ChargeProperties:
    rate = _required(props.rate, f"{where}.rate", name)
    _at_least(props.free_units_per_events, 0, f"{where}.free_units_per_events")
    least = _optional(props.per_transaction_min_amount, f"{where}.per_transaction_min_amount")
    most = _optional(props.per_transaction_max_amount, f"{where}.per_transaction_max_amount")
    if least and most and Decimal(least) > Decimal(most):
        raise InvalidArgument(
            f"{where}.per_transaction_min_amount must not exceed per_transaction_max_amount",
            field=f"{where}.per_transaction_min_amount",
        )
    return pb.ChargeProperties(
        rate=rate,
        fixed_amount=_optional(props.fixed_amount, f"{where}.fixed_amount"),
        free_units_per_events=props.free_units_per_events or None,
        free_units_per_total_aggregation=_optional(
            props.free_units_per_total_aggregation, f"{where}.free_units_per_total_aggregation"
        ),
        per_transaction_min_amount=least,
        per_transaction_max_amount=most,
    )


_CANONICAL: dict[int, Callable[[pb.ChargeProperties, str, str], pb.ChargeProperties]] = {
    pb.CHARGE_MODEL_STANDARD: _standard_or_flat,
    pb.CHARGE_MODEL_GRADUATED: _graduated,
    pb.CHARGE_MODEL_VOLUME: _volume,
    pb.CHARGE_MODEL_PACKAGE: _package,
    pb.CHARGE_MODEL_PERCENTAGE: _percentage,
    pb.CHARGE_MODEL_GRADUATED_PERCENTAGE: _graduated_percentage,
    pb.CHARGE_MODEL_FLAT: _standard_or_flat,
}


def _required(text: str, field: str, name: str) -> str:
    """An amount >= 0 the model needs, canonical (see parse_amount)."""
    if not text:
        raise InvalidArgument(f"{field} is required for the {name} model", field=field)
    return canonical(parse_amount(text, field))


def _optional(text: str, field: str) -> str:
    """An amount >= 0, canonical (see parse_amount); empty when not set."""
    return text and canonical(parse_amount(text, field))


def _at_least(value: int, minimum: int, field: str) -> None:
    if value < minimum:
        raise InvalidArgument(f"{field} must be a whole number of at least {minimum}, got {value}", field=field)


class _Range(Protocol):
    from_value: str
    to_value: str
    flat_amount: str


class _Price[Range](NamedTuple):
    """The price field of a range type: its message, proto attribute and JSON name."""

    message: Callable[..., Range]
    attribute: str
    json_name: str


_UNIT = _Price(pb.GraduatedRange, "per_unit_amount", "per_unit")
_PERCENT = _Price(pb.GraduatedPercentageRange, "rate", "rate")


def _ranges[Range](ranges: Sequence[_Range], where: str, price: _Price[Range]) -> list[Range]:
    """Inclusive integer bounds: the first starts at 0, each next one at the
    previous `to` + 1, only the last is open-ended. The price (per unit, or a
    rate in percent) and the flat amount default to 0."""
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
        amount = parse_amount(getattr(tier, price.attribute) or "0", f"{here}.{price.json_name}")
        flat = parse_amount(tier.flat_amount or "0", f"{here}.flat_amount")
        result.append(
            price.message(
                from_value=canonical(start),
                to_value=tier.to_value and canonical(Decimal(tier.to_value)),
                flat_amount=canonical(flat),
                **{price.attribute: canonical(amount)},
            )
        )
    return result
