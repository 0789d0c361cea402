"""Every request checked against the rules its proto declares.

The protos carry protovalidate rules (`buf.validate`): lengths, patterns,
ranges, required fields. The server interceptor checks each request before
its handler runs, so a gRPC caller and the REST edge are held to the same
rules and refused with the same field path (`charges[3].amount`).
"""

from __future__ import annotations

import protovalidate
from google.protobuf.message import Message

from services.common.errors import InvalidArgument


def path(violation: protovalidate.Violation) -> str:
    """The violating field as a path: names joined by dots, an index or key
    of a repeated or map field in brackets (`customer.tax_codes[0]`)."""
    parts: list[str] = []
    field = violation.proto.field
    assert field is not None  # every rule bxb declares is on a field
    for element in field.elements:
        name = element.field_name
        subscript = element.subscript  # a repeated field's index or a map's key, when set
        if subscript is not None:
            name += f"[{subscript.value}]"
        parts.append(name)
    return ".".join(parts)


# How a broken rule reads (after the field's path) and its ErrorInfo reason,
# by protovalidate's rule id; any other rule reads as protovalidate says
# (its reason: FAMILY_REASON).
SAID = {
    "required": ("is required", "MISSING_FIELD"),
    "string.max_len": ("must be at most {} characters", "INVALID_VALUE"),
    "string.in": ("must be one of: {}", "INVALID_VALUE"),
    "enum.defined_only": ("must be one of the enum's values", "INVALID_VALUE"),
    "repeated.min_items": ("must have at least {} item(s)", "MISSING_FIELD"),
    "repeated.max_items": ("has more than {} items", "TOO_MANY_ITEMS"),
    "map.max_pairs": ("has more than {} keys", "TOO_MANY_ITEMS"),
}


# The reason of any other rule, by its family: a number out of its range
# reads as the services' own range checks always have; anything else is an
# invalid value.
NUMBERS = ("int32", "int64", "uint32", "uint64", "sint32", "sint64", "fixed32", "fixed64", "sfixed32", "sfixed64")
FAMILY_REASON = dict.fromkeys(NUMBERS, "INVALID_ARGUMENT")


def check(request: Message) -> None:
    """Raises INVALID_ARGUMENT naming the first field that breaks a rule."""
    violations = protovalidate.collect_violations(request)
    if violations:
        first = violations[0]
        field = path(first)
        rule = first.proto.rule_id
        family = FAMILY_REASON.get(rule.split(".")[0], "INVALID_VALUE")
        said, reason = SAID.get(rule, (first.proto.message, family))
        value = first.rule_value
        if isinstance(value, list | tuple) or type(value).__name__.endswith("Container"):
            value = ", ".join(map(str, value))
        raise InvalidArgument(f"{field} {said.format(value)}", field=field, reason=reason)
