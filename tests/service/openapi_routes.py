"""Every /v1 route as the OpenAPI document describes it (gateway/openapi.py,
served at GET /openapi.json): its path, method, request body schema and
query parameters, for the tests that call every route with bodies built from
its own schema (tests/service/test_gateway_client_errors.py,
test_gateway_fuzz.py, test_cross_tenant_probe.py). Read from the same
routes the app serves, so a new route is covered as soon as it is added.

The schemas are JSON Schema 2020-12 as the document writes them: `type` (a
list with "null" when null is taken), `properties`, `required`, `enum`,
`maxLength`, `maxItems`, `additionalProperties` (false for an object, the
values' schema for a map); a decimal reads a string or a number, a
timestamp too (`format: date-time`)."""

from __future__ import annotations

from typing import Any

from gateway.app import TRANSCODED
from gateway.dialects import PUBLIC
from gateway.openapi import document
from gateway.transcoder import served

Schema = dict[str, Any]

DOCUMENT = document(served(TRANSCODED, PUBLIC))


def _routes() -> list[tuple[str, str, Schema | None]]:
    found = []
    for path, operations in DOCUMENT["paths"].items():
        for verb, operation in operations.items():
            body = operation.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
            found.append((path, verb.upper(), body))
    return sorted(found, key=lambda route: (route[0], route[1]))


# (path template, method, request body schema or None), by path then method.
ROUTES = _routes()


def query_parameters(path: str, method: str) -> dict[str, Schema]:
    """The query parameters a route reads, by name, with their schemas."""
    parameters = DOCUMENT["paths"][path][method.lower()]["parameters"]
    return {parameter["name"]: parameter["schema"] for parameter in parameters if parameter["in"] == "query"}


def kind(schema: Schema) -> str:
    """What a schema reads: string (an enum's choices too), integer, boolean,
    decimal, timestamp, object, map, array; `any` when it says nothing."""
    given = schema.get("type")
    types = [t for t in (given if isinstance(given, list) else [given]) if t not in ("null", None)]
    if types == ["string", "number"]:
        return "timestamp" if schema.get("format") == "date-time" else "decimal"
    if types == ["object"]:
        return "object" if "properties" in schema else "map"
    return types[0] if types else "any"


def fields(schema: Schema) -> dict[str, Schema]:
    """An object's fields, by name."""
    found: dict[str, Schema] = schema.get("properties", {})
    return found


def required(schema: Schema, name: str) -> bool:
    return name in schema.get("required", ())


def items(schema: Schema) -> Schema:
    """What an array or a map holds (any JSON value, when it does not say)."""
    held = schema.get("items", schema.get("additionalProperties"))
    return held if isinstance(held, dict) else {}


def choices(schema: Schema) -> list[str]:
    """An enum's names."""
    return [choice for choice in schema.get("enum", ()) if choice is not None]


def bits(schema: Schema) -> int:
    """An integer's width (the proto field it fills)."""
    return 32 if schema.get("format") == "int32" else 64


def sensible(schema: Schema, name: str, ids: dict[str, str], times: dict[str, str] | None = None) -> Any:
    """A value of `schema` a client would send, naming the test's resources
    (`ids`, by the ending of the field's name); its timestamps from `times`
    by field name ("" for any other field), else March 1st, 2026."""
    times = times or {}
    found = kind(schema)
    if found == "string":
        if choices(schema):
            return choices(schema)[0]
        return next((value for suffix, value in ids.items() if name.endswith(suffix)), "m")
    if found == "object":
        return {field: sensible(sub, field, ids, times) for field, sub in fields(schema).items()}
    if found == "array":
        return [sensible(items(schema), name, ids, times)]
    if found == "map":
        return {"region": sensible(items(schema), name, ids, times)}
    if found == "timestamp":
        return times.get(name, times.get("", "2026-03-01T00:00:00Z"))
    return {"integer": 1, "boolean": True, "decimal": "1"}.get(found, "m")
