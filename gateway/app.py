"""The /v1 gateway: a Starlette app translating public JSON into gRPC calls."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bxb.catalog.v1 import (
    add_ons_pb2,
    billable_metrics_pb2,
    coupons_pb2,
    customers_pb2,
    organizations_pb2,
    plans_pb2,
    subscriptions_pb2,
    taxes_pb2,
    test_clocks_pb2,
)
from bxb.common.v1 import parked_messages_pb2
from bxb.invoicing.v1 import calculations_pb2, credit_notes_pb2, invoices_pb2
from bxb.metering.v1 import usage_events_pb2, usage_pb2
from bxb.payments.v1 import (
    dunning_pb2,
    integrations_pb2,
    payments_pb2,
    providers_pb2,
    stripe_webhooks_pb2,
    webhook_endpoints_pb2,
)
from gateway import docs, observability
from gateway.admission import Admission
from gateway.auth import Authenticator
from gateway.clients import Clients
from gateway.config import Settings
from gateway.dialects import PUBLIC
from gateway.errors import error_response
from gateway.rate_limits import RateLimiter
from gateway.transcoder import routes as transcoded
from gateway.transcoder import served

# The services whose RPCs are served as the HTTP routes their protos declare.
TRANSCODED = [
    customers_pb2.DESCRIPTOR,
    taxes_pb2.DESCRIPTOR,
    plans_pb2.DESCRIPTOR,
    invoices_pb2.DESCRIPTOR,
    calculations_pb2.DESCRIPTOR,
    usage_pb2.DESCRIPTOR,
    usage_events_pb2.DESCRIPTOR,
    payments_pb2.DESCRIPTOR,
    dunning_pb2.DESCRIPTOR,
    stripe_webhooks_pb2.DESCRIPTOR,
    providers_pb2.DESCRIPTOR,
    parked_messages_pb2.DESCRIPTOR,
    test_clocks_pb2.DESCRIPTOR,
    credit_notes_pb2.DESCRIPTOR,
    add_ons_pb2.DESCRIPTOR,
    subscriptions_pb2.DESCRIPTOR,
    coupons_pb2.DESCRIPTOR,
    billable_metrics_pb2.DESCRIPTOR,
    webhook_endpoints_pb2.DESCRIPTOR,
    integrations_pb2.DESCRIPTOR,
    organizations_pb2.DESCRIPTOR,
]
HTTP_CODES = {404: ("NOT_FOUND", "no such route"), 405: ("METHOD_NOT_ALLOWED", "method not allowed on this route")}


async def health(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)  # the only exception it handles
    code, message = HTTP_CODES.get(exc.status_code, ("INVALID_ARGUMENT", str(exc.detail)))
    return error_response(exc.status_code, code, code, message, headers=exc.headers)


def one_route_per_path(routes: list[Route]) -> list[Route]:
    """Starlette answers a wrong method from the first route matching the path
    only, so a 405 for PUT /v1/plans would allow just POST; one route per path
    with every method makes the Allow header complete."""
    tables: dict[str, dict[str, Callable[[Request], Awaitable[Response]]]] = {}
    paths: dict[str, str] = {}
    for route in routes:
        # One path whatever its variables' names (/v1/metrics/{code} and
        # /v1/metrics/{billable_metric__code}): the first route's names.
        shape = path_shape(route.path)
        paths.setdefault(shape, route.path)
        tables.setdefault(shape, {}).update(dict.fromkeys(route.methods or (), route.endpoint))
    return [Route(paths[shape], dispatcher(table), methods=list(table)) for shape, table in tables.items()]


def path_shape(path: str) -> str:
    return re.sub(r"{[^}]+}", "{}", path)


def dispatcher(table: dict[str, Callable[[Request], Awaitable[Response]]]) -> Callable[[Request], Awaitable[Response]]:
    async def dispatch(request: Request) -> Response:
        return await table[request.method](request)

    return dispatch


def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings or Settings.from_env()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        clients = Clients.connect(settings)
        app.state.settings = settings
        app.state.clients = clients
        app.state.admission = Admission()
        app.state.authenticator = Authenticator(
            clients.organizations, settings.auth_cache_seconds, settings.call_timeout, settings.rate_limits
        )
        app.state.rate_limiter = RateLimiter()
        yield
        await clients.close()

    routes = [
        Route("/health", health, methods=["GET"]),
        Route("/metrics", observability.serve_metrics, methods=["GET"]),
        *transcoded(TRANSCODED, PUBLIC),
    ]
    return Starlette(
        routes=[*one_route_per_path(routes), *docs.routes(served(TRANSCODED, PUBLIC))],
        lifespan=lifespan,
        middleware=observability.middleware(),
        exception_handlers={HTTPException: http_error},
    )
