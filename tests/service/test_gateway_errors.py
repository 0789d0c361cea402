"""How service failures reach the client: gRPC status -> HTTP status and the
JSON error body, services that are down or failing, query parameters and
pagination."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import socket
from collections.abc import AsyncIterator

import httpx
import pytest

from bxb.catalog.v1 import organizations_pb2, organizations_pb2_grpc
from deploy.embedded import free_port
from gateway.app import create_app
from gateway.config import Settings
from services.catalog.organizations import OrganizationServicer
from services.common import db, grpc_server
from tests.conftest import Infra, Stack, Tenant, unique


@contextlib.asynccontextmanager
async def gateway(settings: Settings, key: str) -> AsyncIterator[httpx.AsyncClient]:
    """A second gateway app with its own settings, lifespan and client."""
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://bxb.test",
            headers={"Authorization": f"Bearer {key}"},
        ) as http,
    ):
        yield http


@contextlib.contextmanager
def unused_address():
    """An address nothing listens on: the port stays bound, never listening."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"127.0.0.1:{sock.getsockname()[1]}"


def replaced(stack: Stack, **changes) -> Settings:
    return dataclasses.replace(stack.app.state.settings, **changes)


# Service errors


async def test_not_found_from_a_service_is_a_404_naming_the_field(tenant: Tenant):
    response = await tenant.http.get("/v1/customers/cus_missing")
    assert response.status_code == 404
    assert response.json() == {
        "error": {
            "status": 404,
            "code": "NOT_FOUND",
            "reason": "NOT_FOUND",
            "message": "customer 'cus_missing' not found",
            "field": "id",
        }
    }


async def test_already_exists_from_a_service_is_a_409(tenant: Tenant):
    code = unique("m")
    body = {"code": code, "aggregation_type": "count"}
    assert (await tenant.http.post("/v1/billable_metrics", json=body)).status_code == 201
    again = await tenant.http.post("/v1/billable_metrics", json={**body, "name": "Other"})
    assert again.status_code == 409
    error = again.json()["error"]
    assert (error["code"], error["reason"], error["field"]) == ("ALREADY_EXISTS", "ALREADY_EXISTS", "code")
    assert (await tenant.http.get(f"/v1/billable_metrics/{code}")).json()["name"] == code

    customer = unique("cus")
    assert (await tenant.http.post("/v1/customers", json={"id": customer})).status_code == 201
    duplicate = await tenant.http.post("/v1/customers", json={"external_id": customer})
    assert duplicate.status_code == 409
    assert duplicate.json()["error"]["field"] == "id"


async def test_a_service_that_is_down_is_a_503_asking_to_retry(stack: Stack, tenant: Tenant):
    with unused_address() as nowhere:
        async with gateway(replaced(stack, catalog=nowhere), tenant.key) as http:
            response = await http.get("/v1/customers")
    assert response.status_code == 503
    assert response.json() == {
        "error": {
            "status": 503,
            "code": "UNAVAILABLE",
            "reason": "UNAVAILABLE",
            "message": "a backing service is unavailable; retry",
        }
    }


async def test_ingestion_with_metering_down_is_a_503_while_the_catalog_still_answers(stack: Stack, tenant: Tenant):
    with unused_address() as nowhere:
        async with gateway(replaced(stack, metering=nowhere), tenant.key) as http:
            events = await http.post("/v1/events", json={"customer_id": "cus_1", "code": "calls"})
            customers = await http.get("/v1/customers")
    assert events.status_code == 503
    assert events.json()["error"]["code"] == "UNAVAILABLE"
    assert customers.status_code == 200


async def test_a_call_past_its_deadline_is_a_504(stack: Stack, tenant: Tenant):
    async with gateway(replaced(stack, call_timeout=1e-6), tenant.key) as http:
        response = await http.get("/v1/billable_metrics")
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "DEADLINE_EXCEEDED"


@contextlib.asynccontextmanager
async def organizations_on(stack: Stack, key: str, database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """A gateway whose catalog is an OrganizationService on `database_url` alone."""
    engine = db.create_engine(database_url)
    catalog = grpc_server.Service(
        name="catalog",
        registrars=[
            grpc_server.registrar(
                organizations_pb2,
                organizations_pb2_grpc,
                "OrganizationService",
                OrganizationServicer(db.sessions(engine)),
            )
        ],
    )
    server, port = await grpc_server.start(catalog, "127.0.0.1:0")
    try:
        async with gateway(replaced(stack, catalog=f"127.0.0.1:{port}"), key) as http:
            yield http
    finally:
        await grpc_server.stop(catalog, server, grace=0)
        await engine.dispose()


async def test_an_internal_service_failure_is_a_500_that_leaks_nothing(
    infra: Infra, stack: Stack, tenant: Tenant, caplog: pytest.LogCaptureFixture
):
    """An OrganizationService whose database does not exist fails every call
    with INTERNAL; the client learns only that it failed."""
    with caplog.at_level(logging.ERROR, logger="bxb.gateway"):
        async with organizations_on(stack, tenant.key, infra.postgres.url(unique("missing_db"))) as http:
            response = await http.get("/v1/customers")
    assert response.status_code == 500
    assert response.json() == {
        "error": {"status": 500, "code": "INTERNAL", "reason": "INTERNAL", "message": "internal error"}
    }
    assert "service call failed: StatusCode.INTERNAL" in caplog.text


async def test_a_database_away_is_a_503_with_retry_after(stack: Stack, tenant: Tenant):
    """An OrganizationService whose PostgreSQL refuses connections: retry, not a bug."""
    async with organizations_on(stack, tenant.key, f"postgresql://postgres@127.0.0.1:{free_port()}/away") as http:
        response = await http.get("/v1/customers")
    assert (response.status_code, response.headers["retry-after"]) == (503, "1")
    assert response.json()["error"]["code"] == "UNAVAILABLE"


async def test_an_unexpected_gateway_error_is_a_json_500(
    stack: Stack, tenant: Tenant, caplog: pytest.LogCaptureFixture
):
    """After its lifespan ends the app's channels are closed; a request that
    still arrives fails inside the gateway and gets the JSON 500 body."""
    app = create_app(stack.app.state.settings)
    async with app.router.lifespan_context(app):
        pass
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://bxb.test", headers={"Authorization": f"Bearer {tenant.key}"}
    ) as http:
        with caplog.at_level(logging.ERROR, logger="bxb.gateway"):
            response = await http.get("/v1/customers")
    assert response.status_code == 500
    assert response.json()["error"] == {
        "status": 500,
        "code": "INTERNAL",
        "reason": "INTERNAL",
        "message": "internal error",
    }
    assert "unhandled gateway error on GET /v1/customers" in caplog.text


async def test_settings_come_from_the_environment_when_not_given(
    stack: Stack, tenant: Tenant, monkeypatch: pytest.MonkeyPatch
):
    for service in ("catalog", "metering", "invoicing", "payments"):
        monkeypatch.setenv(f"BXB_{service.upper()}_ADDRESS", getattr(stack, service))
    monkeypatch.setenv("BXB_MAX_BODY_BYTES", "100")
    app = create_app()
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://bxb.test",
            headers={"Authorization": f"Bearer {tenant.key}"},
        ) as http,
    ):
        settings = app.state.settings
        assert (settings.catalog, settings.max_body_bytes, settings.call_timeout) == (stack.catalog, 100, 30.0)
        assert (await http.get("/v1/customers")).status_code == 200
        large = await http.post("/v1/customers", json={"id": unique("cus"), "name": "x" * 100})
        assert large.status_code == 413
        assert large.json()["error"]["message"] == "the body exceeds 100 bytes"


# Query parameters and pagination


@pytest.mark.parametrize(
    ("path", "name", "value"),
    [
        ("/v1/customers", "page_size", "ten"),
        ("/v1/billable_metrics", "page_size", "1.5"),
        ("/v1/subscriptions", "page_size", "2x"),
        ("/v1/invoices", "page_size", "many"),
        ("/v1/plans/some_plan", "version", "latest"),
    ],
)
async def test_a_non_integer_query_parameter_is_a_400_naming_it(tenant: Tenant, path: str, name: str, value: str):
    response = await tenant.http.get(path, params={name: value})
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["reason"], error["field"]) == ("INVALID_TYPE", name)
    assert error["message"] == f"{name} must be an integer"


async def test_a_negative_page_size_and_a_foreign_page_token_are_refused_by_the_service(tenant: Tenant):
    negative = await tenant.http.get("/v1/customers", params={"page_size": -1})
    assert negative.status_code == 400
    assert negative.json()["error"]["field"] == "page_size"
    forged = await tenant.http.get("/v1/plans", params={"page_token": "not-a-token"})
    assert forged.status_code == 400
    assert forged.json()["error"]["field"] == "page_token"


async def pages(tenant: Tenant, path: str, key: str, size: int, field: str = "id") -> list[list[str]]:
    """Every page of a list, following next_page_token, as lists of `field`."""
    result, token = [], ""
    while True:
        params = {"page_size": size, **({"page_token": token} if token else {})}
        body = (await tenant.http.get(path, params=params)).json()
        result.append([item[field] for item in body[key]])
        token = body["next_page_token"]
        if not token:
            return result


async def test_lists_page_through_every_resource_with_next_page_token(tenant: Tenant):
    customers = [unique("cus") for _ in range(5)]
    for customer in customers:
        assert (await tenant.http.post("/v1/customers", json={"id": customer})).status_code == 201
    assert await pages(tenant, "/v1/customers", "customers", 2) == [customers[:2], customers[2:4], customers[4:]]
    assert await pages(tenant, "/v1/customers", "customers", 5) == [customers]

    metrics = [unique("m") for _ in range(3)]
    for code in metrics:
        assert (
            await tenant.http.post("/v1/billable_metrics", json={"code": code, "aggregation_type": "count"})
        ).status_code == 201
    assert await pages(tenant, "/v1/billable_metrics", "billable_metrics", 2, "code") == [metrics[:2], metrics[2:]]

    plans = [unique("p") for _ in range(3)]
    for code in plans:
        assert (await tenant.http.post("/v1/plans", json={"code": code, "interval": "weekly"})).status_code == 201
    plans.sort()  # plans list by code
    assert await pages(tenant, "/v1/plans", "plans", 2, "code") == [plans[:2], plans[2:]]

    subscriptions = []
    for customer in customers[:3]:
        response = await tenant.http.post("/v1/subscriptions", json={"customer_id": customer, "plan_code": plans[0]})
        subscriptions.append(response.json()["id"])
    assert await pages(tenant, "/v1/subscriptions", "subscriptions", 2) == [subscriptions[:2], subscriptions[2:]]


async def test_an_unexpected_error_on_a_hand_written_route_is_a_json_500(stack: Stack, tenant: Tenant):
    """As above, on a route not yet transcoded."""
    app = create_app(stack.app.state.settings)
    async with app.router.lifespan_context(app):
        pass
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://bxb.test", headers={"Authorization": f"Bearer {tenant.key}"}
    ) as http:
        response = await http.get("/v1/plans")
    assert (response.status_code, response.json()["error"]["code"]) == (500, "INTERNAL")
