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
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from dataclasses import field as default
from typing import Any

import grpc
from google.protobuf.descriptor import Descriptor, FieldDescriptor, FileDescriptor, MethodDescriptor
from google.protobuf.empty_pb2 import Empty
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.message import Message
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway import codec, roles
from gateway.admission import Admission, kind_of
from gateway.auth import Principal
from gateway.bindings import Binding, bindings
from gateway.call import json, read_json
from gateway.clients import message_class
from gateway.codec import Decoder, Encoder, Views, descriptor_of, message_type
from gateway.errors import ApiError, api_error, error_response, invalid
from gateway.json_body import refuse_nul
from gateway.observability import KEY_ID, ORGANIZATION
from gateway.rate_limits import REQUESTS, RateLimiter
from services.common import tenancy, trust

log = logging.getLogger("bxb.gateway")

# The FieldMask field of an update's request.
UPDATE_MASK = "update_mask"


class Transcoder:
    """Builds a binding's request from HTTP and its answer from the reply."""

    def __init__(self, binding: Binding, views: Views):
        self.binding = binding
        self.decoder = Decoder(views)
        self.encoder = Encoder(views)
        self.request_class = message_class(binding.method.input_type)
        self.response_class = message_class(binding.method.output_type)
        self.body_required = _body_required(binding, descriptor_of(self.request_class))
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
        mask = descriptor_of(self.request_class).fields_by_name.get(UPDATE_MASK)
        self.update = (
            mask is not None
            and message_type(mask).full_name == FieldMask.DESCRIPTOR.full_name
            and binding.body not in ("", "*")
        )

    async def request(self, http: Request, spelled: dict[str, str] | None = None) -> Message:
        """The binding's request from the HTTP one; `spelled` is told how the
        client spelled each field it gave (see public_field)."""
        binding = self.binding
        request = self.request_class()
        given: dict[str, str] = {} if spelled is None else spelled
        if binding.body:
            parsed = await read_json(http, self.body_required)
            target = request if binding.body == "*" else getattr(request, binding.body)
            self.decoder.into(target, parsed, bound=self.bound, spelled=given, partial=self.update)
            if binding.body != "*":
                target.SetInParent()
            if self.update:
                self._mask(request, target, given)
        # By position: a path may be served under another route's variable names (app.one_route_per_path).
        for variable, value in zip(binding.variables, http.path_params.values(), strict=True):
            _set(request, variable, refuse_nul(value, variable))
        self.query(request, http.query_params.multi_items(), given)
        return request

    def _mask(self, request: Message, target: Message, given: Mapping[str, str]) -> None:
        """An update's mask: the body's fields given (null ones too), unless
        none is (a 400: nothing to change)."""
        paths = list(dict.fromkeys(path.split(".")[0] for path in given))
        if not paths:
            names = ", ".join(self.decoder.names(descriptor_of(target), self.bound))
            raise invalid(f"name at least one field to change: {names}", "", "MISSING_FIELD")
        mask: FieldMask = getattr(request, UPDATE_MASK)
        mask.paths.extend(paths)

    def query[M: Message](self, request: M, params: list[tuple[str, str]], spelled: dict[str, str] | None = None) -> M:
        """Query parameters fill the request's remaining scalar fields (and
        timestamps); two spellings of one field must agree, and an
        alternative spelling excludes its field."""
        bound = {*self.binding.variables, self.binding.body}
        names = self.decoder.names(descriptor_of(request))
        view = self.decoder.view(descriptor_of(request))
        seen: dict[str, tuple[str, str]] = {}
        for name, value in params:
            refuse_nul(value, name)
            found = names.get(name)
            stamp = found is not None and found[1].message_type is not None and _is_timestamp(found[1])
            if found is None or found[0].split(".")[0] in bound or (found[1].message_type is not None and not stamp):
                raise invalid(f"unknown query parameter {name!r}", name, "UNKNOWN_FIELD")
            path, descriptor = found
            if path in seen and seen[path][0] != name and not descriptor.is_repeated:
                before = seen[path][0]
                if before in view.alternatives or name in view.alternatives:
                    named = before if before in view.alternatives else name
                    raise invalid(f"give {before} or {name}, not both", named, "CONFLICTING_FIELDS")
                if seen[path][1] != value:
                    raise invalid(f"{before} and {name} name the same thing and disagree", name)
            seen[path] = (name, value)
            if spelled is not None:
                spelled.setdefault(path, name)
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

    def public_field(self, path: str, spelled: Mapping[str, str] | None = None) -> str:
        """A field path a service named (`tax.description`), as the client
        spelled it (`description`): the body's field is left out; a field the
        client gave is named as it was given (`spelled`, from request), any
        other takes its dialect's name."""
        if not path:
            return path
        descriptor: Descriptor | None = descriptor_of(self.request_class)
        segments = path.split(".")
        body = self.binding.body
        if body not in ("", "*"):  # the body's field may be named (`tax.rate`) or not (`rate`)
            segments = segments[1:] if segments[0] == body else segments
            descriptor = descriptor_of(self.request_class).fields_by_name[body].message_type
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
            if name in view.wrapped:
                shown.append(f"{view.json_path(name)}.{view.wrapped[name]}")
            elif name not in view.inline:
                shown.append(view.json_path(name) + bracket + rest)
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
    return message_type(descriptor).full_name == codec.TIMESTAMP


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
# A caller of any RPC by its descriptor (Clients.unary).
Unary = Callable[[MethodDescriptor], Callable[..., Awaitable[Message]]]
# What a route does after its RPC answered: given a caller of any RPC, the
# request, the reply and the call's options, the answer and its status (None
# keeps the route's).
Then = Callable[[Unary, Any, Any, dict[str, Any]], Awaitable[tuple[Message, int | None]]]


@dataclass
class Exchange:
    """One request being served: who asks, and the RPC its route calls."""

    http: Request
    org: str
    transcoder: Transcoder
    # How the client spelled each field it gave (proto path -> its name).
    spelled: dict[str, str] = default(default_factory=dict)
    # The API key it came with (None on a route outside API-key auth).
    principal: Principal | None = None

    def spend(self, kind: str, cost: int) -> None:
        """Spends from the key's and organization's rate limits (429 when
        over): ingestion spends its events, every other route a request."""
        assert self.principal is not None  # routes outside API-key auth spend nothing
        limiter: RateLimiter = self.http.app.state.rate_limiter
        limiter.spend(self.principal.scopes, kind, cost)

    async def call(self, message: Message, method: MethodDescriptor | None = None) -> Any:
        """Calls the route's RPC (or `method`) once admitted (gateway/admission.py)."""
        state = self.http.app.state
        call = state.clients.unary(method or self.transcoder.binding.method)
        async with self.admitted():
            return await call(message, **options(state, self.org))

    def admitted(self) -> contextlib.AbstractAsyncContextManager[None]:
        """A slot of the request's lane, for calls made otherwise."""
        admission: Admission = self.http.app.state.admission
        return admission.enter(kind_of(self.http.method, self.http.url.path), self.org)


Handler = Callable[[Exchange], Awaitable[Response]]


@dataclass(frozen=True)
class Spelling:
    """How one route reads and answers: its views and status; `then`, for a
    route whose answer takes more than its RPC; `answer` completes the JSON
    from the request and the reply (what the route echoes or adds);
    `respond` answers with something else than JSON; `handle` serves the
    route in its own way (ingestion's per-item batches). A route `outside`
    API-key auth names its organization by its path's organization_id and
    proves itself otherwise (a provider's signed webhook)."""

    views: Views
    status: int = 200
    then: Then | None = None
    answer: Callable[[Any, Any, dict[str, Any]], dict[str, Any]] | None = None
    respond: Callable[[Any], Response] | None = None
    handle: Callable[[Spelling], Handler] | None = None
    outside: bool = False


@dataclass(frozen=True)
class Dialect:
    """The spelling of every route: `views` unless `routes` says otherwise
    for a route (its verb and template); a create answers 201. `extra`
    routes serve an RPC under a further template its proto does not name."""

    views: Views
    routes: Mapping[tuple[str, str], Spelling] = default(default_factory=dict)
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
        state = exchange.http.app.state
        message = await transcoder.request(exchange.http, exchange.spelled)
        status = spelling.status
        async with exchange.admitted():
            given = options(state, exchange.org)
            reply = await state.clients.unary(transcoder.binding.method)(message, **given)
            if spelling.then is not None:
                reply, then_status = await spelling.then(state.clients.unary, message, reply, given)
                status = then_status or status
        if spelling.respond is not None:
            return spelling.respond(reply)
        if reply.DESCRIPTOR.full_name == Empty.DESCRIPTOR.full_name:
            return Response(status_code=204)
        shown = transcoder.response(reply)
        if spelling.answer is not None:
            shown = spelling.answer(message, reply, shown)
        return json(shown, status)

    return handle


def endpoint(transcoder: Transcoder, spelling: Spelling) -> Endpoint:
    """A route's endpoint: authenticate, then serve; every failure is the
    one JSON error body, a service's field named as the client spelled it."""
    handle = (spelling.handle or transcoded)(spelling)

    async def run(request: Request) -> Response:
        state = request.app.state
        exchange = Exchange(request, "", transcoder)
        try:
            if spelling.outside:
                exchange.org = request.path_params["organization_id"]
            else:
                principal = await state.authenticator.principal(request.headers.get("authorization"))
                exchange.org, exchange.principal = principal.organization, principal
                request.scope[ORGANIZATION], request.scope[KEY_ID] = (
                    principal.organization,
                    principal.key_id,
                )  # access log
                roles.check(principal.role, request.method, request.url.path)
                if kind_of(request.method, request.url.path) != "ingest":  # ingestion spends events (ingest.py)
                    exchange.spend(REQUESTS, 1)
            return await handle(exchange)
        except ApiError as error:
            return error.response()
        except grpc.aio.AioRpcError as error:
            return named(error, transcoder, exchange.spelled).response()
        except Exception:
            log.exception("unhandled gateway error on %s %s", request.method, request.url.path)
            return error_response(500, "INTERNAL", "INTERNAL", "internal error")

    return run


def named(error: grpc.aio.AioRpcError, transcoder: Transcoder, spelled: Mapping[str, str]) -> ApiError:
    """A failed call as the client's error, its field (and the message
    starting with it) named as the client spelled it."""
    failure = api_error(error)
    if failure.field:  # named by its full path (`tax.code`), as the service did
        shown = transcoder.public_field(failure.field, spelled)
        if failure.message.startswith(f"{failure.field} "):  # the rules' messages start with it
            failure.message = shown + failure.message.removeprefix(failure.field)
        failure.field = shown
    return failure


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
