"""Whatever a client sends, every /v1 route answers a success or a JSON 4xx,
never a 5xx: a body that is null or no object, and in each field of an
otherwise sensible body a NUL character, a wrong type, a huge number, a null
item or a time at the end of the calendar; odd path segments and query values.

Each route, its body schema and its query parameters are read from the
OpenAPI document of the app's routes (tests/service/openapi_routes.py), so
a new route is covered as soon as it is added. The sensible bodies name
real resources (a metric, a plan, a customer and its subscription) so that
calls reach the services instead of stopping at a missing reference."""

from __future__ import annotations

import json
import re

import pytest

from tests.conftest import Tenant
from tests.service.openapi_routes import ROUTES, fields, query_parameters, sensible

BAD_VALUES = [
    None,
    "a\u0000b",
    10**40,
    -1,
    [],
    {},
    [None],
    {"k": None},
    "9999-12-31T23:59:59Z",
    "0001-01-01T00:00:00Z",
    "x" * 300,
]
BAD_SEGMENTS = ["x" * 300, "%00", "..", "a b"]
BAD_QUERIES = ["%00", "-1", "99999999999", "9999-12-31T23:59:59Z", "x" * 300]
QUERIES = ["customer_id", "subscription_id", "page_size", "page_token", "status", "metric_key", "period_start"]


async def resources(tenant: Tenant) -> dict[str, str]:
    """A metric m, a plan p charging it, a customer c subscribed to it: the
    names sensible bodies use, by the field name's ending."""
    h = tenant.http
    metric = {"name": "M", "code": "m", "aggregation_type": "sum", "field_name": "units"}
    assert (await h.post("/v1/billable_metrics", json=metric)).status_code == 201
    charges = [{"billable_metric_code": "m", "charge_model": "standard", "properties": {"amount": "1"}}]
    plan = {"name": "P", "code": "p", "interval": "monthly", "amount_cents": 100, "charges": charges}
    assert (await h.post("/v1/plans", json=plan)).status_code == 201
    assert (await h.post("/v1/customers", json={"id": "c"})).status_code == 201
    subscribed = await h.post("/v1/subscriptions", json={"customer_id": "c", "plan_code": "p"})
    return {"subscription_id": subscribed.json()["id"], "customer_id": "c", "plan_code": "p", "plan_id": "p"}


def assert_client_error(response) -> None:
    assert response.status_code < 500, (response.request.method, response.request.url, response.text)
    if response.status_code >= 400:
        assert response.json()["error"]["status"] == response.status_code


@pytest.mark.parametrize(("path", "method", "schema"), ROUTES, ids=[f"{m} {p}" for p, m, _ in ROUTES])
async def test_no_client_input_makes_a_route_fail_with_a_server_error(tenant: Tenant, path, method, schema):
    ids = await resources(tenant)
    h = tenant.http
    segment = ids["subscription_id"] if path.startswith("/v1/subscriptions/") else "c"
    for fill in [segment, *BAD_SEGMENTS]:
        url = re.sub(r"{\w+}", fill, path)
        if schema is None:
            assert_client_error(await h.request(method, url))
            continue
        body = sensible(schema, "", ids)
        for raw in [b"null", b"[]", b'"text"', json.dumps(body).encode()]:
            assert_client_error(await h.request(method, url, content=raw))
        if fill != segment:
            continue
        for field in fields(schema):
            for value in BAD_VALUES:
                assert_client_error(await h.request(method, url, content=json.dumps({**body, field: value}).encode()))
    if method == "GET":  # its own parameters, and names it may not read
        for name in sorted({*query_parameters(path, method), *QUERIES}):
            for value in BAD_QUERIES:
                assert_client_error(await h.get(re.sub(r"{\w+}", "c", path) + f"?{name}={value}"))
