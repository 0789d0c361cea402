"""HTTP to gRPC, read off the protos' `google.api.http` annotations.

At start-up every RPC of the public services that declares an HTTP rule
(and each of its `additional_bindings`) becomes a route: its path template's
variables, the body (`*` or one field) and the query string fill the
request; the response (or its `response_body` field) is the answer. How each
route is spelled in its dialect (views, status) comes from gateway/dialects.py.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf.descriptor import Descriptor, FieldDescriptor, FileDescriptor, MethodDescriptor
from google.protobuf.message import Message
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway import codec, schema
from gateway.admission import kind_of
from gateway.bindings import Binding, bindings
from gateway.call import json, read_body
from gateway.clients import message_class
from gateway.codec import Decoder, Encoder, Views
from gateway.errors import ApiError, api_error, error_response, invalid
from services.common import tenancy, trust

log = logging.getLogger("bxb.gateway")


class Transcoder:
    """Builds a binding's request from HTTP and its answer from the reply."""

    def __init__(self, binding: Binding, views: Views):
        self.binding = binding
        self.decoder = Decoder(views)
        self.encoder = Encoder(views)
        self.request_class = message_class(binding.method.input_type)
        self.response_class = message_class(binding.method.output_type)
        self.body_required = _body_required(binding, self.request_class.DESCRIPTOR)

    async def request(self, http: Request, max_body: int, given: set[str] | None = None) -> Message:
        """The RPC's request from the HTTP one; `given` collects the names
        the client gave at the top level (errors name a field as given)."""
        binding = self.binding
        request = self.request_class()
        if binding.body:
            raw = await read_body(http, max_body)
            if not raw.strip() and self.body_required:
                raise invalid("a JSON body is required", "", "MISSING_BODY")
            parsed = schema.parse_json(raw) if raw.strip() else {}
            if given is not None and isinstance(parsed, dict):
                given.update(parsed)
            target = request if binding.body == "*" else getattr(request, binding.body)
            self.decoder.into(target, parsed)
            if binding.body != "*":
                target.SetInParent()
        for variable in binding.variables:
            value = schema.refuse_nul(http.path_params[variable.replace(".", "__")], variable)
            _set(request, variable, value)
        self.query(request, http.query_params.multi_items())
        if given is not None:
            given.update(http.query_params)
        return request

    def query(self, request: Message, params: list[tuple[str, str]]) -> Message:
        """Query parameters fill the request's remaining scalar fields."""
        bound = {*self.binding.variables, self.binding.body}
        names = self.decoder.names(request.DESCRIPTOR)
        view = self.decoder.view(request.DESCRIPTOR)
        seen: dict[str, tuple[str, str]] = {}
        for name, value in params:
            schema.refuse_nul(value, name)
            found = names.get(name)
            stamp = found is not None and found[1].message_type is not None and _is_timestamp(found[1])
            if found is None or found[0].split(".")[0] in bound or (found[1].message_type is not None and not stamp):
                raise invalid(f"unknown query parameter {name!r}", name, "UNKNOWN_FIELD")
            path, descriptor = found
            if path in seen and seen[path][0] != name and not descriptor.is_repeated:
                codec.conflict(view, seen[path][0], name, "", seen[path][1] == value)
            seen[path] = (name, value)
            *outer, _ = path.split(".")
            target = request
            for step in outer:
                target = getattr(target, step)
            if stamp:
                getattr(target, descriptor.name).CopyFrom(codec.timestamp(value, name))
                continue
            item = _from_query(descriptor, value, name)
            if descriptor.is_repeated:
                getattr(target, descriptor.name).append(self.decoder.scalar(descriptor, item, name))
            else:
                setattr(target, descriptor.name, self.decoder.scalar(descriptor, item, name))
        return request

    def public_field(self, path: str, given: Collection[str] = ()) -> str:
        """A field path a service named (`tax.description`), as the client
        spelled it (`description`): the body's field is left out and each
        field takes its dialect's name."""
        if not path:
            return path
        descriptor: Descriptor | None = self.request_class.DESCRIPTOR
        segments = path.split(".")
        body = self.binding.body
        if body not in ("", "*"):
            # named from the request (`plan.code`) or, as some services do, from the body (`code`)
            if segments[0] == body:
                segments = segments[1:]
            descriptor = self.request_class.DESCRIPTOR.fields_by_name[body].message_type
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
            spelled = view.json_name(name)
            if not shown and view.one_spelling:  # a top-level field as the client named it
                spelled = next(
                    (alias for alias, aliased in view.aliases.items() if aliased == name and alias in given), spelled
                )
            if name in view.wrapped:
                shown.append(f"{spelled}.{view.wrapped[name]}")
            elif name not in view.inline:
                shown.append(spelled + bracket + rest)
        return ".".join(shown)

    def response(self, reply: Message) -> dict[str, Any]:
        if self.binding.response_body:
            return self.encoder.message(getattr(reply, self.binding.response_body))
        return self.encoder.message(reply)


def _body_required(binding: Binding, request: Descriptor) -> bool:
    """Whether the body must be given: it fills a field the proto says is
    required (one a path variable does not fill)."""
    if binding.body == "":
        return False
    if binding.body != "*":
        return True
    bound = {variable.split(".")[0] for variable in binding.variables}
    return any(codec.required(field) for field in request.fields if field.name not in bound)


def _set(request: Message, path: str, value: str) -> None:
    *outer, last = path.split(".")
    target = request
    for step in outer:
        target = getattr(target, step)
    setattr(target, last, value)


def _is_timestamp(descriptor: FieldDescriptor) -> bool:
    return descriptor.message_type.full_name == codec.TIMESTAMP


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


@dataclass
class Exchange:
    """One request being served: who asks, and the RPC its route calls."""

    http: Request
    org: str
    transcoder: Transcoder
    # The names the client gave at the top level of its body and query.
    given: set[str] = field(default_factory=set)

    async def call(self, message: Message, method: MethodDescriptor | None = None) -> Any:
        """Calls the route's RPC (or `method`) once admitted (gateway/admission.py)."""
        state = self.http.app.state
        call = state.clients.unary(method or self.transcoder.binding.method)
        async with self.admitted():
            return await call(message, **options(state, self.org))

    def admitted(self) -> contextlib.AbstractAsyncContextManager[None]:
        """A slot of the request's lane, for calls made otherwise."""
        return self.http.app.state.admission.enter(kind_of(self.http.method, self.http.url.path), self.org)


Handler = Callable[[Exchange], Awaitable[Response]]


@dataclass(frozen=True)
class Spelling:
    """How one route reads and answers: its views and status; `answer`
    completes the JSON from the request and the reply (what the route echoes
    or adds); `respond` answers with something else than JSON; `handle`
    serves the route in its own way (ingestion's per-item batches)."""

    views: Views
    status: int = 200
    answer: Callable[[Any, Any, dict[str, Any]], dict[str, Any]] | None = None
    respond: Callable[[Any], Response] | None = None
    handle: Callable[[Spelling], Handler] | None = None


@dataclass(frozen=True)
class Dialect:
    """The spelling of every route: `views` unless `routes` says otherwise
    for a route (its verb and template); a create answers 201. `extra`
    routes serve an RPC under a further template its proto does not name."""

    views: Views
    routes: Mapping[tuple[str, str], Spelling] = field(default_factory=dict)
    extra: tuple[tuple[str, str, str], ...] = ()

    def spelling(self, binding: Binding) -> Spelling:
        declared = self.routes.get((binding.verb, binding.template))
        if declared is not None:
            return declared
        created = binding.verb == "POST" and binding.method.name.startswith("Create")
        return Spelling(self.views, 201 if created else 200)


def transcoded(spelling: Spelling) -> Handler:
    """The plain route: the request from HTTP, the reply as JSON."""

    async def handle(exchange: Exchange) -> Response:
        transcoder = exchange.transcoder
        message = await transcoder.request(
            exchange.http, exchange.http.app.state.settings.max_body_bytes, exchange.given
        )
        reply = await exchange.call(message)
        if spelling.respond is not None:
            return spelling.respond(reply)
        shown = transcoder.response(reply)
        if spelling.answer is not None:
            shown = spelling.answer(message, reply, shown)
        return json(shown, spelling.status)

    return handle


def endpoint(transcoder: Transcoder, spelling: Spelling) -> Endpoint:
    """A route's endpoint: authenticate, then serve; every failure is the
    one JSON error body, a service's field named as the client spells it."""
    handle = (spelling.handle or transcoded)(spelling)

    async def run(request: Request) -> Response:
        state = request.app.state
        exchange = None
        try:
            org = await state.authenticator.organization(request.headers.get("authorization"))
            exchange = Exchange(request, org, transcoder)
            return await handle(exchange)
        except ApiError as error:
            return error.response()
        except grpc.aio.AioRpcError as error:
            failure = api_error(error)
            named = transcoder.public_field(failure.field, exchange.given if exchange is not None else ())
            if failure.message.startswith(f"{failure.field} "):  # the rules' messages start with the field
                failure.message = named + failure.message.removeprefix(failure.field)
            failure.field = named
            return failure.response()
        except Exception:
            log.exception("unhandled gateway error on %s %s", request.method, request.url.path)
            return error_response(500, "INTERNAL", "INTERNAL", "internal error")

    return run


def options(state: Any, org: str) -> dict[str, Any]:
    """Keyword arguments for every service call: tenancy and deadline."""
    return {"metadata": tenancy.metadata(org) + trust.metadata(), "timeout": state.settings.call_timeout}


def served(files: list[FileDescriptor], dialect: Dialect) -> list[tuple[Binding, Spelling]]:
    """Every route the files declare (and every extra route of the
    dialect), with the spelling the dialect gives it."""
    found = list(bindings(files))
    methods = {binding.method.full_name: binding.method for binding in found}
    for verb, template, method in dialect.extra:
        found.append(Binding(methods[method], verb, template, "*", ""))
    return [(binding, dialect.spelling(binding)) for binding in found]


def routes(files: list[FileDescriptor], dialect: Dialect) -> list[Route]:
    """A Starlette route per route served."""
    return [
        Route(binding.route_path, endpoint(Transcoder(binding, spelling.views), spelling), methods=[binding.verb])
        for binding, spelling in served(files, dialect)
    ]
