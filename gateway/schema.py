"""Declarative checks of JSON request bodies.

A body is checked against a `Spec` before any service is called: unknown
fields, wrong types, missing required fields and malformed values are refused
with a 400 naming the field path (`charges[0].properties.amount`). JSON is
parsed with exact decimals, so `0.1` is never a float.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from gateway.errors import ApiError, invalid
from services.common.decimals import MAX_EXPONENT
from services.common.timestamps import LATEST, format_rfc3339, parse_rfc3339

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

_TYPE_NAMES = {
    "string": "a string",
    "integer": "an integer",
    "boolean": "a boolean",
    "decimal": "a decimal number or a string holding one",
    "object": "an object",
    "array": "an array",
    "timestamp": "an RFC 3339 timestamp or Unix seconds",
    "properties": "an object",
    "map": "an object",
    "list": "an array",
    "any": "a JSON value",
}


@dataclass
class Spec:
    kind: str
    required: bool = False
    nullable: bool = False
    fields: dict[str, Spec] = field(default_factory=dict)
    items: Spec | None = None
    choices: tuple[str, ...] = ()
    max_items: int = 0
    max_length: int = 0
    # Integers: the width of the proto field they fill (32 for an int32).
    bits: int = 64


def string(required: bool = False, choices: tuple[str, ...] = (), max_length: int = 0, nullable: bool = False) -> Spec:
    return Spec("string", required=required, choices=choices, max_length=max_length, nullable=nullable)


def obj(fields: dict[str, Spec], required: bool = False, nullable: bool = False) -> Spec:
    return Spec("object", required=required, fields=fields, nullable=nullable)


def array(items: Spec, required: bool = False, max_items: int = 0) -> Spec:
    return Spec("array", required=required, items=items, max_items=max_items)


def mapping(items: Spec, required: bool = False, max_items: int = 0) -> Spec:
    """An object whose keys are the client's (`{"region": [...]}`), each value checked by `items`."""
    return Spec("map", required=required, items=items, max_items=max_items)


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _fail(path: str, spec: Spec) -> None:
    raise invalid(f"{path or 'the body'} must be {_TYPE_NAMES[spec.kind]}", path, "INVALID_TYPE")


def check_present(value: Any, spec: Spec, path: str = "") -> Any:
    """A value that is there whatever its spec says (a whole body, an array
    item, a map value), checked: unlike an absent optional field, it cannot be
    null unless its spec is nullable (or required: then it is missing)."""
    if value is None and not (spec.nullable or spec.required):
        _fail(path, spec)
    return check(value, spec, path)


def check(value: Any, spec: Spec, path: str = "") -> Any:
    """Returns the value, normalized (decimals as canonical strings, timestamps
    as aware datetimes), or raises an ApiError naming `path`."""
    if value is None:
        if spec.nullable or not spec.required:
            return None
        raise invalid(f"{path} is required", path, "MISSING_FIELD")
    checker = _CHECKERS[spec.kind]
    return checker(value, spec, path)


def _string(value, spec, path):
    if not isinstance(value, str):
        _fail(path, spec)
    if spec.choices and value not in spec.choices:
        raise invalid(f"{path} must be one of: {', '.join(spec.choices)}", path, "INVALID_VALUE")
    if spec.max_length and len(value) > spec.max_length:
        raise invalid(f"{path} must be at most {spec.max_length} characters", path, "INVALID_VALUE")
    return value


def _integer(value, spec, path):
    if isinstance(value, bool) or not isinstance(value, int):
        _fail(path, spec)
    if abs(value) >= 2 ** (spec.bits - 1):
        raise invalid(f"{path} is out of range", path, "INVALID_VALUE")
    return value


def _boolean(value, spec, path):
    if not isinstance(value, bool):
        _fail(path, spec)
    return value


def _decimal(value, spec, path):
    if isinstance(value, bool) or not isinstance(value, (str, int, Decimal)):
        _fail(path, spec)
    try:
        number = Decimal(value) if not isinstance(value, Decimal) else value
    except InvalidOperation:
        raise invalid(f"{path} must be a decimal number, got {value!r}", path, "INVALID_VALUE") from None
    if not number.is_finite():
        raise invalid(f"{path} must be a finite number", path, "INVALID_VALUE")
    if number and abs(number.adjusted()) > MAX_EXPONENT:
        raise invalid(f"{path} is out of range", path, "INVALID_VALUE")
    return str(value) if isinstance(value, str) else format(number, "f")


def _timestamp(value, spec, path):
    if isinstance(value, bool):
        _fail(path, spec)
    if isinstance(value, (int, Decimal)):
        try:
            instant = EPOCH + timedelta(microseconds=int(Decimal(value) * 1_000_000))
        except ArithmeticError:  # OverflowError, or decimal.Overflow for huge exponents
            raise _out_of_range(path) from None
    elif not isinstance(value, str):
        _fail(path, spec)
    else:
        try:
            instant = parse_rfc3339(value)
        except OverflowError:  # a valid instant whose UTC form is before year 1 or after 9999
            raise _out_of_range(path) from None
        except ValueError:
            raise invalid(
                f"{path} must be an RFC 3339 timestamp such as 2026-01-01T00:00:00Z, got {value!r}",
                path,
                "INVALID_VALUE",
            ) from None
    if instant >= LATEST:
        raise _out_of_range(path)
    return instant


def _out_of_range(path: str) -> ApiError:
    return invalid(f"{path} is out of range: times must be before {format_rfc3339(LATEST)}", path, "INVALID_VALUE")


def _object(value, spec, path):
    if not isinstance(value, dict):
        _fail(path, spec)
    if not value.keys() <= spec.fields.keys():
        where = _join(path, next(name for name in value if name not in spec.fields))
        raise invalid(f"unknown field {where!r}", where, "UNKNOWN_FIELD")
    # An absent optional field needs no path: most of a batch item's are.
    return {
        name: None if (item := value.get(name)) is None and not sub.required else check(item, sub, _join(path, name))
        for name, sub in spec.fields.items()
    }


def _array(value, spec, path):
    if not isinstance(value, list):
        _fail(path, spec)
    if spec.max_items and len(value) > spec.max_items:
        raise invalid(f"{path} has more than {spec.max_items} items", path, "TOO_MANY_ITEMS")
    assert spec.items is not None
    return [check_present(item, spec.items, f"{path}[{index}]") for index, item in enumerate(value)]


def _list(value, spec, path):
    """An array whose items the handler checks one by one (a batch, where one bad item must not fail the rest)."""
    if not isinstance(value, list):
        _fail(path, spec)
    if not value:
        raise invalid(f"{path} must not be empty", path, "EMPTY")
    if len(value) > spec.max_items:
        raise invalid(f"{path} has more than {spec.max_items} items, the limit", path, "TOO_MANY_ITEMS")
    return value


def _map(value, spec, path):
    if not isinstance(value, dict):
        _fail(path, spec)
    if spec.max_items and len(value) > spec.max_items:
        raise invalid(f"{path} has more than {spec.max_items} keys", path, "TOO_MANY_ITEMS")
    assert spec.items is not None
    return {key: check_present(item, spec.items, _join(path, key)) for key, item in value.items()}


def _properties(value, spec, path):
    """Free-form event properties, as exact strings: numbers keep their JSON
    text, booleans are true/false, nested values are compact JSON."""
    if not isinstance(value, dict):
        _fail(path, spec)
    result = {}
    for key, item in value.items():
        if item is None:
            continue
        if isinstance(item, str):
            result[key] = item
        elif isinstance(item, bool):
            result[key] = "true" if item else "false"
        elif isinstance(item, (int, Decimal)):
            result[key] = str(item)
        else:
            result[key] = json.dumps(item, separators=(",", ":"), default=str)
    return result


def _any(value, spec, path):
    """Any JSON value, checked later by the handler (which records what it refuses)."""
    return value


_CHECKERS = {
    "any": _any,
    "list": _list,
    "string": _string,
    "integer": _integer,
    "boolean": _boolean,
    "decimal": _decimal,
    "timestamp": _timestamp,
    "object": _object,
    "array": _array,
    "map": _map,
    "properties": _properties,
}


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_NUL_ESCAPE = re.compile(rb"\\u0000")
NUL = "\x00"


def refuse_nul(text: str, name: str) -> str:
    """`text`, unless it holds a NUL character, which PostgreSQL text cannot
    store: then a 400 naming `name`."""
    if NUL in text:
        raise invalid(f"{name or 'the body'} must not contain the NUL character (\\u0000)", name, "INVALID_VALUE")
    return text


def _refuse_nul_in(value: Any, path: str = "") -> None:
    """Refuses the first string or key holding a NUL character, by its path."""
    if isinstance(value, str):
        refuse_nul(value, path)
    elif isinstance(value, dict):
        for key, item in value.items():
            where = _join(path, key.replace(NUL, "\\u0000"))
            refuse_nul(key, where)
            _refuse_nul_in(item, where)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _refuse_nul_in(item, f"{path}[{index}]")


def parse_json(raw: bytes) -> Any:
    """Parses a request body; malformed JSON is a 400 that says where."""
    try:
        value = json.loads(raw, parse_float=Decimal, parse_constant=_reject_constant)
        # An escaped lone UTF-16 surrogate ("\ud800") parses but cannot be
        # encoded onward. Only an escape makes one (the body is UTF-8), so
        # only a body holding such an escape is encoded to find out.
        if _SURROGATE_ESCAPE.search(raw):
            json.dumps(value, ensure_ascii=False, default=str).encode()
        # Likewise only an escape makes a NUL (a raw one is malformed JSON).
        if _NUL_ESCAPE.search(raw):
            _refuse_nul_in(value)
        return value
    except json.JSONDecodeError as error:
        raise invalid(
            f"malformed JSON: {error.msg} at line {error.lineno} column {error.colno}", "", "MALFORMED_JSON"
        ) from None
    except UnicodeDecodeError:
        raise invalid("the body is not UTF-8", "", "MALFORMED_JSON") from None
    except UnicodeEncodeError:
        raise invalid("malformed JSON: a string holds an unpaired UTF-16 surrogate", "", "MALFORMED_JSON") from None
    except ValueError:  # an integer literal beyond Python's 4300-digit conversion limit
        raise invalid("malformed JSON: a number has too many digits", "", "MALFORMED_JSON") from None
    except RecursionError:
        raise invalid("malformed JSON: nested too deeply", "", "MALFORMED_JSON") from None


def _reject_constant(name: str):
    raise invalid(f"malformed JSON: {name} is not a number", "", "MALFORMED_JSON")


def one_of(body: dict, names: tuple[str, str], required: bool = True) -> tuple[str, str]:
    """The value of whichever of two spellings of one field the body gives, and
    the name it was given under; both is a 400 naming the second, neither (when
    required) a 400 naming the first. Neither, when optional: ("", "")."""
    given = [name for name in names if body[name] is not None]
    if len(given) == 2:
        raise invalid(f"give {names[0]} or {names[1]}, not both", names[1], "CONFLICTING_FIELDS")
    if not given:
        if required:
            raise invalid(f"{names[0]} is required", names[0], "MISSING_FIELD")
        return "", ""
    return body[given[0]], given[0]
