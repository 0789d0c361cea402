"""The OpenAPI 3.1 document of the /v1 API, written from the routes the
gateway serves: the protos' HTTP rules, field behaviours and validation
rules, spelled as each route's dialect spells them (gateway/dialects.py).

A route whose answer a `render` hook or a handler of the compatibility
layer shapes is described as far as its declarations say and left open
beyond (additional properties allowed): the document never promises a
shape the gateway does not keep.
"""

from __future__ import annotations

import re
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor

from buf.validate import validate_pb2
from bxb.catalog.v1 import plans_pb2
from bxb.metering.v1 import usage_events_pb2
from gateway import codec, ingest, parked, price_plans, stripe_webhooks
from gateway.bindings import Binding
from gateway.clients import PARKING
from gateway.codec import PLAIN, View, Views
from gateway.dialects import BXB
from gateway.transcoder import Spelling

Schema = dict[str, Any]
ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["status", "code", "reason", "message"],
            "properties": {
                "status": {"type": "integer"},
                "code": {"type": "string", "description": "The gRPC canonical code"},
                "reason": {"type": "string", "description": "Machine-readable reason (google.rpc.ErrorInfo)"},
                "message": {"type": "string"},
                "field": {"type": "string", "description": "The offending request field, as the client named it"},
            },
        }
    },
}
# Failures any route may answer, besides its own.
FAILURES = {
    "400": "Invalid input: the field is named",
    "401": "Missing, invalid, revoked or expired API key",
    "403": "The API key's role does not allow this route",
    "404": "Not found",
    "409": "Conflict with the resource's state",
    "413": "Body too large",
    "429": "Over the API key's or organization's rate limit; retry after Retry-After",
    "503": "A backing service is away or the gateway is overloaded; retry after Retry-After",
    "504": "A backing service took too long; retry",
}
OPEN = {"type": "object", "additionalProperties": True}


def _rules(field: FieldDescriptor) -> validate_pb2.FieldRules:
    return field.GetOptions().Extensions[validate_pb2.field]


def _nullable(schema: Schema) -> Schema:
    kind = schema.get("type")
    if kind is None:
        return schema
    kinds = kind if isinstance(kind, list) else [kind]
    if "null" in kinds:
        return schema
    nullable = {**schema, "type": [*kinds, "null"]}
    if "enum" in schema and None not in schema["enum"]:
        nullable["enum"] = [*schema["enum"], None]
    return nullable


class Writer:
    """Writes the JSON Schemas of messages in one set of views."""

    def __init__(self, views: Views):
        self.views = views
        self.decoder = codec.Decoder(views)

    def view(self, descriptor: Descriptor) -> View:
        return self.views.get(descriptor.full_name, PLAIN)

    # Answers: what the encoder writes.

    def output(self, descriptor: Descriptor) -> Schema:
        view = self.view(descriptor)
        if descriptor.full_name == codec.TIMESTAMP:
            return {"type": "string", "format": "date-time"}
        properties: dict[str, Schema] = {}
        for field in descriptor.fields:
            name = field.name
            if name in view.hidden:
                continue
            if name in view.inline:
                properties.update(self.output(codec.message_type(field)).get("properties", {}))
                continue
            schema = self._output_field(field, view)
            if name in view.nulls:
                schema = _nullable(schema)
            if name in view.wrapped:
                schema = _nullable({"type": "object", "properties": {view.wrapped[name]: schema}})
            if name in view.keyed:
                schema = {"type": "object", "additionalProperties": {"type": "array", "items": {"type": "string"}}}
            properties[view.json_name(name)] = schema
        for copy, source in view.copies.items():
            properties[copy] = properties.get(view.json_name(source), {})
        if view.render is not None:  # reshaped: each field as said, any of them may differ
            return {"type": "object", "properties": {key: {} for key in properties}, "additionalProperties": True}
        return {"type": "object", "properties": properties}

    def _output_field(self, field: FieldDescriptor, view: View) -> Schema:
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            value = field.message_type.fields_by_name["value"]
            item = self.output(value.message_type) if value.message_type is not None else {"type": "string"}
            return {"type": "object", "additionalProperties": item}
        item = self._output_item(field, view)
        if field.is_repeated:
            return {"type": "array", "items": item}
        if field.message_type is not None:
            return _nullable(item)
        return item

    def _output_item(self, field: FieldDescriptor, view: View) -> Schema:
        if field.message_type is not None:
            return self.output(field.message_type)
        if field.type == FieldDescriptor.TYPE_ENUM:
            spelled = view.enums.get(field.name, {})
            enum = codec.enum_type(field)
            names = [
                spelled.get(name, (name,))[0]
                for number in enum.values_by_number
                if (name := codec.enum_name(enum, number))
            ]
            return {"type": ["string", "null"], "enum": [*names, None]}
        return _scalar(field)

    # Requests: what the decoder reads.

    def input(self, descriptor: Descriptor, skip: frozenset[str] = frozenset()) -> Schema:
        if descriptor.full_name == codec.TIMESTAMP:
            return {"type": ["string", "number"], "format": "date-time", "description": "RFC 3339, or Unix seconds"}
        view = self.view(descriptor)
        properties: dict[str, Schema] = {}
        required = []
        spelled_twice = {*view.aliases.values(), *view.alternatives.values()}
        for name, (path, field) in self.decoder.names(descriptor).items():
            if path.split(".")[0] in skip:
                continue
            schema = self._input_field(field, self.view(codec.containing_type(field)))
            group, _, member = name.rpartition(".")
            if group:  # read inside its group's object (applies_to.plan_codes)
                grouped = properties.setdefault(group, {"type": ["object", "null"], "properties": {}})
                grouped["properties"][member] = schema
                continue
            properties[name] = schema
            twice = field.name in spelled_twice or name in view.aliases or name in view.alternatives
            if codec.required(field) and not twice and "." not in path:
                required.append(name)
        for name, (_, targets) in view.switches.items():  # one field standing for one of several
            first = descriptor.fields_by_name[next(iter(targets.values()))]
            properties[name] = self._input_field(first, view)
        schema = {"type": "object", "properties": properties, "additionalProperties": False}
        if required:
            schema["required"] = required
        return schema

    def _input_field(self, field: FieldDescriptor, view: View) -> Schema:
        rules = _rules(field)
        if field.name in view.wrapped:
            inner = self._input_value(field, rules)
            return {
                "type": ["object", "null"],
                "properties": {view.wrapped[field.name]: inner},
                "required": [view.wrapped[field.name]],
                "additionalProperties": False,
            }
        if field.name in view.keyed:
            return {"type": "object", "additionalProperties": {"type": "array", "items": {"type": "string"}}}
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            return {"type": "object"}
        if field.is_repeated:
            schema: Schema = {"type": "array", "items": self._input_value(field, rules.repeated.items)}
            if rules.repeated.HasField("max_items"):
                schema["maxItems"] = rules.repeated.max_items
            return _nullable(schema)
        return _nullable(self._input_value(field, rules))

    def _input_value(self, field: FieldDescriptor, rules: validate_pb2.FieldRules) -> Schema:
        if field.message_type is not None:
            return self.input(field.message_type)
        if field.type == FieldDescriptor.TYPE_ENUM:
            spelled = self.view(codec.containing_type(field)).enums.get(field.name, {})
            enum = codec.enum_type(field)
            names = [
                spelling
                for number in enum.values_by_number
                if (name := codec.enum_name(enum, number))
                for spelling in spelled.get(name, (name,))
            ]
            return {"type": "string", "enum": names}
        schema = _scalar(field, reading=True)
        if (
            field.type == FieldDescriptor.TYPE_STRING
            and rules.string.HasField("max_len")
            and not codec.is_decimal(field)
        ):
            schema["maxLength"] = rules.string.max_len
        for kind in ("int32", "int64"):
            if rules.HasField(kind):
                numbers = getattr(rules, kind)
                for bound, key in (
                    ("gte", "minimum"),
                    ("lte", "maximum"),
                    ("gt", "exclusiveMinimum"),
                    ("lt", "exclusiveMaximum"),
                ):
                    if numbers.HasField(bound):
                        schema[key] = getattr(numbers, bound)
        return schema


def _scalar(field: FieldDescriptor, reading: bool = False) -> Schema:
    if field.type == FieldDescriptor.TYPE_BOOL:
        return {"type": "boolean"}
    if field.type in codec.INTEGERS:
        bits = codec.INTEGERS[field.type]
        return {"type": "integer", "format": f"int{bits}"}
    if codec.is_decimal(field):
        if reading:
            return {"type": ["string", "number"], "description": "An exact decimal, as a string or a number"}
        return {"type": "string", "format": "decimal"}
    return {"type": "string"}


def operation(binding: Binding, spelling: Spelling) -> dict[str, Any]:
    """One route's OpenAPI operation."""
    method = binding.method
    request = Writer(spelling.views)
    parameters = [
        {"name": variable.replace(".", "__"), "in": "path", "required": True, "schema": {"type": "string"}}
        for variable in binding.variables
    ]
    bound = frozenset(variable.split(".")[0] for variable in binding.variables)
    if not binding.body:
        for name, (path, field) in request.decoder.names(method.input_type).items():
            scalar = field.message_type is None or field.message_type.full_name == codec.TIMESTAMP
            if path.split(".")[0] in bound or not scalar:
                continue
            schema = request._input_field(field, request.view(codec.containing_type(field)))
            parameters.append({"name": name, "in": "query", "required": False, "schema": schema})
        for name, schema in HANDLED_QUERIES.get(spelling.handle, {}).items():
            parameters.append({"name": name, "in": "query", "required": False, "schema": schema})
    found: dict[str, Any] = {
        "operationId": f"{method.containing_service.name}.{method.name}:{binding.verb} {binding.template}",
        "summary": f"{method.containing_service.full_name}.{method.name}",
        "tags": [method.containing_service.name],
        "parameters": parameters,
        "responses": _responses(binding, spelling, request),
    }
    body = _body(binding, spelling, request, bound)
    if body is not None:
        found["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    if spelling.outside:  # no API key: the provider signs what it sends
        found["security"] = []
        found["parameters"].append(
            {"name": "Stripe-Signature", "in": "header", "required": True, "schema": {"type": "string"}}
        )
    return found


def _body(binding: Binding, spelling: Spelling, writer: Writer, bound: frozenset[str]) -> Schema | None:
    if not binding.body:
        return None
    request = binding.method.input_type
    if spelling.handle is ingest.single:
        return writer.input(usage_events_pb2.UsageEvent.DESCRIPTOR)
    if spelling.handle is ingest.batch:
        return _batch(writer.input(usage_events_pb2.UsageEvent.DESCRIPTOR))
    if spelling.handle is stripe_webhooks.receive:
        return {"type": "object", "description": "A Stripe event, as Stripe sends it (signed)"}
    if binding.method.name == "CreatePlan" and spelling.handle is not None:  # a price plan (price_plans.create)
        return _price_plan(Writer(BXB).input(plans_pb2.Plan.DESCRIPTOR))
    if binding.body == "*":
        return writer.input(request, skip=bound)
    # The body's fields its path binds (`{billable_metric.code}`) are not read from it.
    prefix = f"{binding.body}."
    inner = frozenset(v.removeprefix(prefix).split(".")[0] for v in binding.variables if v.startswith(prefix))
    return writer.input(codec.message_type(request.fields_by_name[binding.body]), skip=inner)


# What a handler of the compatibility layer reads from the query string
# beyond its RPC's request.
HANDLED_QUERIES: dict[Any, dict[str, Schema]] = {
    ingest.listing: {"status": {"type": "string", "enum": ["accepted", "rejected"]}},
    parked.listing: {"service": {"type": "string", "enum": list(PARKING)}},
}


def _batch(event: Schema) -> Schema:
    """A batch of events (gateway/ingest.py reads each item on its own)."""
    most = ingest.most_events()
    events = {"type": "array", "items": event, "minItems": 1, "maxItems": most}
    return {"type": "object", "properties": {"events": events}, "required": ["events"], "additionalProperties": False}


def _price_plan(plan: Schema) -> Schema:
    """The ABAXUS plan body gateway/price_plans.py reads, from the bxb plan it
    stands for: `id` for `code`, monthly unless it says; each charge (and
    filter) names its metric `metric_key`, its `model` in ABAXUS words, its
    amount `unit_amount` (or `amount`) and its ranges `tiers` bounded by an
    inclusive `up_to`."""
    fields = dict(plan["properties"])
    fields["id"] = fields.pop("code")
    charges = fields["charges"]
    charge = dict(charges["items"]["properties"])
    named = {"billable_metric_code": "metric_key", "charge_model": "model"}
    charge = {named.get(name, name): schema for name, schema in charge.items()}
    charge["model"] = {"type": ["string", "null"], "enum": [*price_plans.MODELS, None]}
    charge["properties"] = _abaxus_properties(charge["properties"])
    item = dict(charge["filters"]["items"])
    item["properties"] = {**item["properties"], "properties": _abaxus_properties(item["properties"]["properties"])}
    charge["filters"] = {**charge["filters"], "items": item}
    required = [named.get(name, name) for name in charges["items"].get("required", [])]
    item = {**charges["items"], "properties": charge, **({"required": required} if required else {})}
    fields["charges"] = {**charges, "items": item}
    required = ["id" if name == "code" else name for name in plan.get("required", []) if name != "interval"]
    return {**plan, "properties": {"id": fields.pop("id"), **fields}, "required": required}


def _abaxus_properties(properties: Schema) -> Schema:
    """A charge's properties as ABAXUS gives them: `unit_amount` or `amount`, and `tiers`."""
    ranges = {name for name, _, _ in price_plans.RANGES.values()}
    given = {name: schema for name, schema in properties["properties"].items() if name not in ranges}
    amount = given.pop("amount")
    bound = {"type": ["integer", "null"], "format": "int64", "description": "Inclusive; null for the last tier"}
    tier = {
        "type": "object",
        "properties": {"up_to": bound, "unit_amount": amount, "rate": amount, "flat_amount": amount},
        "additionalProperties": False,
        "description": "unit_amount, or rate for graduated_percentage",
    }
    most = properties["properties"]["graduated_ranges"].get("maxItems")
    tiers = {"type": ["array", "null"], "items": tier, **({"maxItems": most} if most else {})}
    return {**properties, "properties": {"unit_amount": amount, "amount": amount, "tiers": tiers, **given}}


def _responses(binding: Binding, spelling: Spelling, writer: Writer) -> dict[str, Any]:
    answers: dict[str, Any] = {code: _error(text) for code, text in FAILURES.items()}
    if spelling.respond is not None:
        answers["200"] = {"description": "The document", "content": {"application/octet-stream": {"schema": {}}}}
        return answers
    if spelling.handle is not None or spelling.answer is not None:
        shown: Schema = OPEN
    else:
        reply = binding.method.output_type
        if binding.response_body:
            reply = codec.message_type(reply.fields_by_name[binding.response_body])
        shown = writer.output(reply)
    statuses = {str(spelling.status)}
    if spelling.handle is not None:  # ingestion answers 200, 202 or 207 by spelling
        statuses |= {"200", "201", "202", "207"}
    for status in sorted(statuses):
        answers[status] = {"description": "Done", "content": {"application/json": {"schema": shown}}}
    if binding.method.name == "ChargeInvoice":
        answers["402"] = _error("The provider declined the payment, or the customer must authenticate it")
    return answers


def _error(text: str) -> dict[str, Any]:
    return {"description": text, "content": {"application/json": {"schema": ERROR}}}


def document(served: list[tuple[Binding, Spelling]]) -> dict[str, Any]:
    """The whole API: every route the gateway serves."""
    paths: dict[str, dict[str, Any]] = {}
    templates: dict[str, str] = {}  # one template per path whatever its variables' names, as the app serves it
    for binding, spelling in served:
        template = templates.setdefault(re.sub(r"{[^}]+}", "{}", binding.route_path), binding.route_path)
        described = operation(binding, spelling)
        names = iter(re.findall(r"{([^}]+)}", template))
        for parameter in described["parameters"]:
            if parameter["in"] == "path":
                parameter["name"] = next(names)
        paths.setdefault(template, {})[binding.verb.lower()] = described
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "bxb",
            "version": "v1",
            "description": "Usage-based metering and billing. The gRPC API (proto/) is the source of this document.",
        },
        "servers": [{"url": "/"}],
        "security": [{"apiKey": []}],
        "components": {"securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer"}}},
        "paths": paths,
    }
