"""The numbers events carry: their top-level value, and the property each
metric aggregates (sum, max, latest, weighted_sum).

ClickHouse reads them as Decimal128 with 12 decimal places and adds them up
as Decimal256, so no total can wrap. A number is accepted only when
ClickHouse reads exactly the value Python does: plain or exponent notation
("2340", "-0.5", "1E+3"), at most 26 integer digits and 12 decimal places.
Anything else ("abc", "1_000", " 7 ", "1e26", "0.1234567890123") is refused
naming the field, never counted as 0.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal

from bxb.catalog.v1 import billable_metrics_pb2 as metrics_pb
from bxb.metering.v1 import usage_events_pb2 as pb
from services.common.decimals import canonical
from services.common.errors import InvalidArgument

PLACES = 12
INTEGER_DIGITS = 38 - PLACES
LIMIT = Decimal(10) ** INTEGER_DIGITS
# What Python's Decimal and ClickHouse's toDecimal128OrNull read alike.
NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d{1,3})?")
# The aggregations that read a number from their field.
NUMERIC = frozenset(
    {
        metrics_pb.AGGREGATION_TYPE_SUM,
        metrics_pb.AGGREGATION_TYPE_MAX,
        metrics_pb.AGGREGATION_TYPE_LATEST,
        metrics_pb.AGGREGATION_TYPE_WEIGHTED_SUM,
    }
)


def exact_number(text: str, field: str) -> Decimal:
    """The number `text` holds, refused (INVALID_NUMBER, naming `field`)
    unless the aggregations hold it exactly."""
    if NUMBER.fullmatch(text):
        value = Decimal(text)  # the pattern admits only what Decimal reads
        _, digits, exponent = value.as_tuple()
        assert isinstance(exponent, int)
        significant = "".join(map(str, digits)).rstrip("0")
        places = -exponent - (len(digits) - len(significant)) if significant else 0
        if value.copy_abs() < LIMIT and places <= PLACES:  # abs() would round to 28 digits
            return value
    raise InvalidArgument(
        f"{field} must be a number with at most {INTEGER_DIGITS} integer digits and {PLACES} decimal places, "
        f"got {text[:100]!r}",
        field=field,
        reason="INVALID_NUMBER",
    )


def value_text(text: str, field: str) -> str:
    """The top-level value in canonical notation (see exact_number)."""
    return canonical(exact_number(text, field))


def property_error(
    metric: metrics_pb.BillableMetric, properties: Mapping[str, str], where: str
) -> pb.EventError | None:
    """Why the property `metric` aggregates is not a number it can count,
    or None when it is one or is absent (an absent one counts as nothing)."""
    field = metric.field_name
    if metric.aggregation_type not in NUMERIC or not field or field not in properties:
        return None
    try:
        exact_number(properties[field], f"{where}properties.{field}")
    except InvalidArgument as error:
        return pb.EventError(reason=error.reason, field=error.field, message=error.message)
    return None
