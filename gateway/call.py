"""The request pipeline every /v1 endpoint shares: authenticate, read and
check the body, call the services, map failures to the JSON error body."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway import schema
from gateway.admission import kind_of
from gateway.clients import Clients
from gateway.errors import ApiError, error_response, from_rpc, invalid
from services.common import tenancy, trust

log = logging.getLogger("bxb.gateway")

MAX_ID = 200  # the longest id or code bxb stores (customer ids, idempotency keys)


@dataclass
class Call:
    request: Request
    org: str
    body: Any
    # Top-level fields the client actually sent (the checked body has every
    # field of its spec, absent ones as None): what a partial update changes.
    sent: frozenset[str] = frozenset()

    @property
    def clients(self) -> Clients:
        clients: Clients = self.request.app.state.clients
        return clients

    @property
    def options(self) -> dict[str, Any]:
        """Keyword arguments for every service call: tenancy and deadline."""
        return {
            "metadata": tenancy.metadata(self.org) + trust.metadata(),
            "timeout": self.request.app.state.settings.call_timeout,
        }

    def path(self, name: str) -> str:
        """A path parameter (an id or a code): none is longer than MAX_ID
        characters, so a longer one is a 400 naming it, not a lookup."""
        value = schema.refuse_nul(self.request.path_params[name], name)
        if len(value) > MAX_ID:
            raise invalid(f"{name} must be at most {MAX_ID} characters", name, "INVALID_VALUE")
        return value

    def query(self, name: str) -> str:
        return schema.refuse_nul(self.request.query_params.get(name, ""), name)

    def query_params(self, spec: schema.Spec) -> dict[str, Any]:
        """The whole query string, checked against `spec` as a body is."""
        params = dict(self.request.query_params)
        for name, value in params.items():
            schema.refuse_nul(value, name)
        checked: dict[str, Any] = schema.check(params, spec)
        return checked

    def query_int(self, name: str) -> int:
        raw = self.query(name)
        if not raw:
            return 0
        try:
            value = int(raw)
        except ValueError:
            raise invalid(f"{name} must be an integer", name, "INVALID_TYPE") from None
        if abs(value) >= 2**31:  # every query integer (page_size, version) fills an int32
            raise invalid(f"{name} is out of range", name, "INVALID_VALUE")
        return value


Handler = Callable[[Call], Awaitable[Response]]


class Json(JSONResponse):
    """A JSON answer written by orjson: json.dumps cost a batch of 500 events
    a tenth of the gateway's time. What orjson refuses (an integer beyond 64
    bits, a non-string key) is written as JSONResponse writes it."""

    def render(self, content: Any) -> bytes:
        try:
            return orjson.dumps(content)
        except TypeError:  # orjson.JSONEncodeError is one
            return super().render(content)


def json(data: Any, status: int = 200) -> JSONResponse:
    return Json(data, status_code=status)


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "INVALID_ARGUMENT", "BODY_TOO_LARGE", f"the body exceeds {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "INVALID_ARGUMENT", "BODY_TOO_LARGE", f"the body exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def endpoint(
    handler: Handler, body: schema.Spec | None = None, optional: bool = False
) -> Callable[[Request], Awaitable[Response]]:
    """Wraps a handler. Request bodies are JSON whatever the Content-Type says,
    so `curl -d '{...}'` (form-encoded by default) works as written; an
    `optional` body may be left out (it reads as `{}`)."""

    async def run(request: Request) -> Response:
        state = request.app.state
        try:
            org = await state.authenticator.organization(request.headers.get("authorization"))
            data, sent = None, frozenset[str]()
            if body is not None:
                raw = await read_body(request, state.settings.max_body_bytes)
                if not raw.strip() and not optional:
                    raise invalid("a JSON body is required", "", "MISSING_BODY")
                parsed = schema.parse_json(raw) if raw.strip() else {}
                data = schema.check_present(parsed, body)
                sent = frozenset(parsed) if isinstance(parsed, dict) else frozenset()
            async with state.admission.enter(kind_of(request.method, request.url.path), org):
                return await handler(Call(request, org, data, sent))
        except ApiError as error:
            return error.response()
        except grpc.aio.AioRpcError as error:
            return from_rpc(error)
        except Exception:
            log.exception("unhandled gateway error on %s %s", request.method, request.url.path)
            return error_response(500, "INTERNAL", "INTERNAL", "internal error")

    run.spec = body  # type: ignore[attr-defined]  # removed on the fuzz branch; what the route reads, for tools that describe the API (and its tests)
    return run
