"""HTTP to gRPC, read off the protos' `google.api.http` annotations.

At start-up every RPC of the public services that declares an HTTP rule
(and each of its `additional_bindings`) becomes a route: its path template's
variables, the body (`*` or one field) and the query string fill the
request; the response (or its `response_body` field) is the answer. How each
route is spelled in its dialect (views, status) comes from gateway/dialects.py.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import grpc
from google.protobuf.descriptor import Descriptor, FieldDescriptor, FileDescriptor
from google.protobuf.empty_pb2 import Empty
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.message import Message
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from buf.validate import validate_pb2
from gateway import codec, schema
from gateway.admission import kind_of
from gateway.bindings import Binding, bindings
from gateway.call import json, read_body
from gateway.clients import message_class
from gateway.codec import Decoder, Encoder, Views
from gateway.dialects import Dialect, Spelling
from gateway.errors import ApiError, api_error, body_path, error_response, invalid
from services.common import tenancy, trust
from services.common.errors import error_info

log = logging.getLogger("bxb.gateway")


class Transcoder:
    """Builds a binding's request from HTTP and its answer from the reply."""

    def __init__(self, binding: Binding, views: Views):
        self.binding = binding
        self.decoder = Decoder(views)
        self.encoder = Encoder(views)
        self.request_class = message_class(binding.method.input_type)
        self.response_class = message_class(binding.method.output_type)
        # The fields of the body the path binds: of the request for `*`, of
        # the body's field for one (`{billable_metric.code}`); never read from the body.
        prefix = "" if binding.body == "*" else f"{binding.body}."
        self.bound = frozenset(
            variable.removeprefix(prefix).split(".")[0]
            for variable in binding.variables
            if variable.startswith(prefix) and variable != binding.body
        )
        # An update (a FieldMask `update_mask` beside its body's field) changes
        # the fields its body gives, null ones cleared.
        mask = self.request_class.DESCRIPTOR.fields_by_name.get("update_mask")
        self.update = (
            mask is not None
            and mask.message_type.full_name == FieldMask.DESCRIPTOR.full_name
            and binding.body not in ("", "*")
        )

    async def request(self, http: Request, max_body: int, spelled: dict[str, str] | None = None) -> Message:
        """The binding's request; `spelled` is told how the body spelled its
        fields (see public_field)."""
        binding = self.binding
        request = self.request_class()
        if binding.body:
            raw = await read_body(http, max_body)
            if not raw.strip():
                raise invalid("a JSON body is required", "", "MISSING_BODY")
            parsed = schema.parse_json(raw)
            target = request if binding.body == "*" else getattr(request, binding.body)
            given: dict[str, str] = {} if spelled is None else spelled
            self.decoder.into(target, parsed, bound=self.bound, spelled=given, partial=self.update)
            if binding.body != "*":
                target.SetInParent()
            if self.update:
                self._mask(request, target, given)
        # By position: a path may be served under another route's variable names (app.one_route_per_path).
        for variable, given in zip(binding.variables, http.path_params.values(), strict=True):
            _set(request, variable, schema.refuse_nul(given, variable))
        self._query(request, http)
        return request

    def _mask(self, request: Message, target: Message, given: Mapping[str, str]) -> None:
        """An update's mask: the body's fields given (null ones too), unless
        none is (a 400: nothing to change)."""
        paths = list(dict.fromkeys(path.split(".")[0] for path in given))
        if not paths:
            names = ", ".join(self.decoder.names(target.DESCRIPTOR, self.bound))
            raise invalid(f"name at least one field to change: {names}", "", "MISSING_FIELD")
        request.update_mask.paths.extend(paths)

    def _query(self, request: Message, http: Request) -> None:
        """Query parameters fill the request's remaining scalar fields."""
        bound = {*self.binding.variables, self.binding.body}
        names = self.decoder.names(request.DESCRIPTOR)
        for name, value in http.query_params.multi_items():
            schema.refuse_nul(value, name)
            found = names.get(name)
            if found is None or found[0].split(".")[0] in bound or found[1].message_type is not None:
                raise invalid(f"unknown query parameter {name!r}", name, "UNKNOWN_FIELD")
            path, descriptor = found
            *outer, _ = path.split(".")
            target = request
            for step in outer:
                target = getattr(target, step)
            item = _from_query(descriptor, value, name)
            if descriptor.is_repeated:
                getattr(target, descriptor.name).append(self.decoder.scalar(descriptor, item, name))
            else:
                setattr(target, descriptor.name, self.decoder.scalar(descriptor, item, name))

    def public_field(self, path: str, spelled: Mapping[str, str] | None = None) -> str:
        """A field path a service named (`tax.description`), as the client
        spelled it (`description`): the body's field is left out; a field of
        the body the client gave is named as it was given (`spelled`, from
        request), any other takes its dialect's name."""
        if not path:
            return path
        descriptor: Descriptor | None = self.request_class.DESCRIPTOR
        segments = path.split(".")
        body = self.binding.body
        if body not in ("", "*"):  # the body's field may be named (`tax.rate`) or not (`rate`: errors.body_path)
            segments = segments[1:] if segments[0] == body else segments
            descriptor = self.request_class.DESCRIPTOR.fields_by_name[body].message_type
        if len(segments) == 1 and segments[0] in self.bound:  # as the path's template names it
            return segments[0]
        *before, last = segments
        name, bracket, rest = last.partition("[")
        given = (spelled or {}).get(".".join([*before, name]))
        if given is not None:
            return given + bracket + rest
        shown = []
        for segment in segments:
            name, bracket, rest = segment.partition("[")
            found = descriptor.fields_by_name.get(name) if descriptor is not None else None
            if descriptor is None or found is None:
                shown.append(segment)
                descriptor = None
                continue
            view = self.decoder.view(descriptor)
            descriptor = found.message_type
            if name != view.inline:
                shown.append(view.json_path(name) + bracket + rest)
        return ".".join(shown)

    def response(self, reply: Message) -> dict[str, Any]:
        if self.binding.response_body:
            return self.encoder.message(getattr(reply, self.binding.response_body))
        return self.encoder.message(reply)

    def spec(self) -> schema.Spec | None:
        """What the binding's body reads, as a schema.Spec: for tools that
        describe the API (and its tests)."""
        body = self.binding.body
        if not body:
            return None
        if body == "*":
            return describe(self.decoder, self.request_class.DESCRIPTOR, self.bound)
        return describe(self.decoder, self.request_class.DESCRIPTOR.fields_by_name[body].message_type, self.bound)


def describe(decoder: Decoder, descriptor: Descriptor, bound: frozenset[str] = frozenset()) -> schema.Spec:
    """A message's JSON as a schema.Spec: its spellings, types, enum names
    and the limits its `buf.validate` rules set."""
    view = decoder.view(descriptor)
    described = schema.obj({})
    for name, (_, field) in decoder.names(descriptor, bound).items():
        group, _, member = name.rpartition(".")
        if group:
            described.fields.setdefault(group, schema.obj({}, nullable=True)).fields[member] = _described(
                decoder, field
            )
        else:
            described.fields[name] = _described(decoder, field)
    for name, (_, targets) in view.switches.items():
        first = descriptor.fields_by_name[next(iter(targets.values()))]
        described.fields[name] = _described(decoder, first)
    return described


def _described(decoder: Decoder, field: FieldDescriptor) -> schema.Spec:
    rules = field.GetOptions().Extensions[validate_pb2.field]
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        value = field.message_type.fields_by_name["value"]
        return schema.mapping(_item(decoder, value, rules.map.values), max_items=rules.map.max_pairs)
    if field.is_repeated:
        items = _item(decoder, field, rules.repeated.items)
        return schema.array(items, required=rules.required, max_items=rules.repeated.max_items)
    spec = _item(decoder, field, rules)
    spec.required = rules.required
    return spec


def _item(decoder: Decoder, field: FieldDescriptor, rules: validate_pb2.FieldRules) -> schema.Spec:
    if field.message_type is not None:
        if field.message_type.full_name == codec.TIMESTAMP:
            return schema.Spec("timestamp")
        return describe(decoder, field.message_type)
    if field.type == FieldDescriptor.TYPE_ENUM:
        return schema.string(choices=tuple(decoder.enum_names(field)))
    if field.type == FieldDescriptor.TYPE_BOOL:
        return schema.Spec("boolean")
    if field.type in codec.INTEGERS:
        return schema.Spec("integer", bits=codec.INTEGERS[field.type])
    if codec.is_decimal(field):
        return schema.Spec("decimal")
    return schema.string(max_length=rules.string.max_len)


def _set(request: Message, path: str, value: str) -> None:
    *outer, last = path.split(".")
    target = request
    for step in outer:
        target = getattr(target, step)
    setattr(target, last, value)


def _from_query(descriptor: FieldDescriptor, value: str, name: str) -> Any:
    """A query string value as the JSON value it stands for."""
    if descriptor.type in codec.INTEGERS:
        try:
            return int(value)
        except ValueError:
            raise invalid(f"{name} must be an integer", name, "INVALID_TYPE") from None
    if descriptor.type == FieldDescriptor.TYPE_BOOL:
        if value not in ("true", "false"):
            raise invalid(f"{name} must be true or false", name, "INVALID_TYPE")
        return value == "true"
    return value


Endpoint = Callable[[Request], Awaitable[Response]]


def endpoint(transcoder: Transcoder, spelling: Spelling) -> Endpoint:
    """A binding's endpoint: authenticate, build the request, admit, call,
    answer; every failure is the one JSON error body."""
    binding = transcoder.binding

    async def run(request: Request) -> Response:
        state = request.app.state
        spelled: dict[str, str] = {}
        try:
            org = await state.authenticator.organization(request.headers.get("authorization"))
            message = await transcoder.request(request, state.settings.max_body_bytes, spelled)
            call = state.clients.unary(binding.method)
            given = options(state, org)
            status = spelling.status
            async with state.admission.enter(kind_of(request.method, request.url.path), org):
                reply = await call(message, **given)
                if spelling.then is not None:
                    reply, then_status = await spelling.then(state.clients.unary, message, reply, given)
                    status = then_status or status
            if reply.DESCRIPTOR.full_name == Empty.DESCRIPTOR.full_name:
                return Response(status_code=204)
            return json(transcoder.response(reply), status)
        except ApiError as error:
            return error.response()
        except grpc.aio.AioRpcError as error:
            failure = api_error(error)
            if failure.field:  # named by its full path, as the service did
                info = error_info(error)
                field, stated = info.metadata["field"], error.details() or ""
                named = transcoder.public_field(field, spelled)
                if failure.message == body_path(stated) and stated.startswith(f"{field} "):  # the rules' messages
                    failure.message = named + stated.removeprefix(field)
                failure.field = named
            return failure.response()
        except Exception:
            log.exception("unhandled gateway error on %s %s", request.method, request.url.path)
            return error_response(500, "INTERNAL", "INTERNAL", "internal error")

    run.spec = transcoder.spec()  # what the route reads, for tools that describe the API (and its tests)
    return run


def options(state: Any, org: str) -> dict[str, Any]:
    """Keyword arguments for every service call: tenancy and deadline."""
    return {"metadata": tenancy.metadata(org) + trust.metadata(), "timeout": state.settings.call_timeout}


def routes(files: list[FileDescriptor], dialect: Dialect) -> list[Route]:
    """A route per binding the files declare, spelled as the dialect says."""
    found = []
    for binding in bindings(files):
        spelling = dialect.spelling(binding)
        found.append(
            Route(
                binding.route_path,
                endpoint(Transcoder(binding, spelling.views), spelling),
                methods=[binding.verb],
            )
        )
    return found
