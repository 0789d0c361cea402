"""The gateway's metrics, request ids, access log and traces.

`Observing` (pure ASGI, so it costs one function call a request) gives each
request its id (a valid incoming X-Request-Id, else a fresh one: answered in
the X-Request-Id header and passed on to the services, request_ids.py),
counts and times it by route template (never the raw path: ids stay out of
labels; a path no route matches is "other"), and writes one access log line.
GET /metrics (`serve_metrics`) answers the process's registry without
authentication: restrict who reaches it by network (deploy/observability.md).
"""

from __future__ import annotations

import logging
import time

from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.common import metrics, request_ids, tracing

log = logging.getLogger("bxb.access")

# The scope keys where an endpoint notes who the request authenticated as.
ORGANIZATION, KEY_ID = "bxb.organization_id", "bxb.key_id"
OTHER = "other"  # the route label of a path no route matches, the method label of an unknown method
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


async def serve_metrics(request: Request) -> Response:
    return Response(metrics.exposition(), media_type=metrics.CONTENT_TYPE)


def route_of(scope: Scope) -> str:
    """The template of the route that served the request (Starlette notes it in the scope)."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) and path else OTHER


class Observing:
    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw = next((value for key, value in scope["headers"] if key == b"x-request-id"), b"")
        request_id = request_ids.accepted(raw.decode("latin-1"))
        token = request_ids.REQUEST_ID.set(request_id)
        started = time.perf_counter()
        status = 500  # what the client gets when the app raises before answering

        async def answer(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, answer)
        finally:
            elapsed = time.perf_counter() - started
            route, method = route_of(scope), scope["method"]
            label = method if method in METHODS else OTHER  # a client's made-up method is no new series
            metrics.HTTP_REQUESTS.labels(route, label, str(status)).inc()
            metrics.HTTP_SECONDS.labels(route, label).observe(elapsed)
            log.info(
                "%s %s %d",
                method,
                scope["path"],
                status,
                extra={
                    "method": method,
                    "route": route,
                    "path": scope["path"],
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 3),
                    "organization_id": scope.get(ORGANIZATION, ""),
                    "key_id": scope.get(KEY_ID, ""),
                },
            )
            request_ids.REQUEST_ID.reset(token)


def middleware() -> list[Middleware]:
    """The gateway's middleware, outermost first: traces (when tracing is on), then `Observing`."""
    if tracing.provider is None:
        return [Middleware(Observing)]
    traced = Middleware(
        OpenTelemetryMiddleware,
        tracer_provider=tracing.provider,
        excluded_urls=tracing.UNTRACED_PATHS,
        exclude_spans=["receive", "send"],
    )
    return [traced, Middleware(Observing)]
