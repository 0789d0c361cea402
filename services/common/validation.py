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


def check(request: Message) -> None:
    """Raises INVALID_ARGUMENT naming the first field that breaks a rule."""
    violations = protovalidate.collect_violations(request)
    if violations:
        first = violations[0]
        field = path(first)
        raise InvalidArgument(f"{field} {first.proto.message}", field=field, reason="INVALID_ARGUMENT")
