"""The /v1 gateway: a Starlette app translating public JSON into gRPC calls."""

from __future__ import annotations

import contextlib

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from gateway.auth import Authenticator
from gateway.clients import Clients
from gateway.config import Settings
from gateway.errors import error_response
from gateway.routes import customers, events, invoices, metrics, plans, subscriptions

HTTP_CODES = {404: ("NOT_FOUND", "no such route"), 405: ("METHOD_NOT_ALLOWED", "method not allowed on this route")}


async def health(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
    code, message = HTTP_CODES.get(exc.status_code, ("INVALID_ARGUMENT", str(exc.detail)))
    return error_response(exc.status_code, code, code, message, headers=exc.headers)


def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings or Settings.from_env()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        clients = Clients.connect(settings)
        app.state.settings = settings
        app.state.clients = clients
        app.state.authenticator = Authenticator(
            clients.organizations, settings.auth_cache_seconds, settings.call_timeout
        )
        yield
        await clients.close()

    routes = [
        Route("/health", health, methods=["GET"]),
        *metrics.routes,
        *plans.routes,
        *customers.routes,
        *subscriptions.routes,
        *events.routes,
        *invoices.routes,
    ]
    return Starlette(routes=routes, lifespan=lifespan, exception_handlers={HTTPException: http_error})
