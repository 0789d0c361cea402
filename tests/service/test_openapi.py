"""GET /openapi.json describes the whole /v1 API as the gateway serves it, as
a valid OpenAPI 3.1 document; every curl example of the README is one of its
operations with a body its schema accepts; GET /docs shows it offline."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate
from starlette.routing import Route

from tests.conftest import Stack, Tenant

README = Path(__file__).resolve().parents[2] / "README.md"
# A curl example: its verb, its path, and the body of its `-d '...'` on the next line(s).
CURL = re.compile(
    r"curl (?:-X (?P<verb>[A-Z]+) )?\$API(?P<path>/v1/[^\s?\"]+)[^\n]*?(?:\\\n\s*-d '(?P<body>[^']*)'|$)", re.M
)


@pytest.fixture
async def described(tenant: Tenant) -> dict:
    response = await tenant.http.get("/openapi.json", headers={"Authorization": ""})
    assert response.status_code == 200
    return response.json()


def operation_for(document: dict, verb: str, path: str) -> dict:
    """The operation serving `verb path` (a concrete path, its ids filled in)."""
    for template, operations in document["paths"].items():
        if re.fullmatch(re.sub(r"\{[^}]+\}", "[^/]+", template), path) and verb.lower() in operations:
            return operations[verb.lower()]
    raise AssertionError(f"{verb} {path} is not in the document")


async def test_the_document_is_valid_openapi_3_1(described: dict):
    validate(described)
    assert described["openapi"] == "3.1.0"


async def test_every_route_the_gateway_serves_is_described(stack: Stack, described: dict):
    served = {
        (method, shape(route.path))
        for route in stack.app.routes
        if isinstance(route, Route) and route.path.startswith("/v1/")
        for method in route.methods or ()
        if method != "HEAD"
    }
    documented = {(verb.upper(), shape(path)) for path, operations in described["paths"].items() for verb in operations}
    assert served == documented
    assert len(documented) >= 60
    for operations in described["paths"].values():
        for operation in operations.values():
            error = operation["responses"]["400"]["content"]["application/json"]["schema"]
            assert error["properties"]["error"]["required"] == ["status", "code", "reason", "message"]


def shape(path: str) -> str:
    """A path template whatever its variables' names."""
    return re.sub(r"\{[^}]+\}", "{}", path)


def readme_examples() -> list[tuple[str, str, dict | None]]:
    found = []
    for match in CURL.finditer(README.read_text()):
        body = match["body"]
        verb = match["verb"] or ("POST" if body else "GET")
        found.append((verb, match["path"], json.loads(body) if body else None))
    return found


async def test_every_readme_example_is_an_operation_whose_schema_takes_its_body(described: dict):
    examples = readme_examples()
    assert len(examples) >= 13
    for verb, path, body in examples:
        operation = operation_for(described, verb, path)
        if body is not None:
            schema = operation["requestBody"]["content"]["application/json"]["schema"]
            errors = [e.message for e in Draft202012Validator(schema).iter_errors(body)]
            assert errors == [], (verb, path, errors)


async def test_both_spellings_of_a_resource_are_described(described: dict):
    for path in ("/v1/billable_metrics", "/v1/metrics", "/v1/plans", "/v1/price-plans"):
        assert {"get", "post"} <= set(described["paths"][path])
    assert "post" in described["paths"]["/v1/invoices/{id}/send_email"]
    assert "post" in described["paths"]["/v1/invoices/{id}/send-email"]


async def test_the_docs_page_shows_the_document_with_assets_served_by_the_gateway(tenant: Tenant):
    page = await tenant.http.get("/docs")
    assert page.status_code == 200 and "/openapi.json" in page.text
    for asset in re.findall(r'(?:src|href)="(/docs/assets/[^"]+)"', page.text):
        served = await tenant.http.get(asset)
        assert served.status_code == 200 and len(served.content) > 1000, asset


def body_schema(document: dict, verb: str, path: str) -> dict:
    return operation_for(document, verb, path)["requestBody"]["content"]["application/json"]["schema"]


def accepts(schema: dict, body: object) -> list[str]:
    return [error.message for error in Draft202012Validator(schema).iter_errors(body)]


async def test_the_compatibility_routes_describe_what_they_read(described: dict):
    """Ingestion and price plans are served by handlers of their own: their
    schemas say what those read (one event, a batch of at most 500, an ABAXUS
    plan), and the listings their query parameters."""
    event = {"customer_id": "c", "metric_key": "m", "idempotency_key": "k", "properties": {"tokens": 1}}
    assert accepts(body_schema(described, "POST", "/v1/events"), event) == []
    assert accepts(body_schema(described, "POST", "/v1/events"), {**event, "unknown": 1}) != []
    for path in ("/v1/events/batch", "/v1/events/backfill"):
        batch = body_schema(described, "POST", path)
        assert accepts(batch, {"events": [event, {**event, "code": "m", "transaction_id": "t"}]}) == []
        assert accepts(batch, {"events": [event] * 501}) != []
        assert accepts(batch, {"events": []}) != []
        assert accepts(batch, [event]) != []
    plan = {
        "id": "p",
        "currency": "USD",
        "charges": [
            {
                "metric_key": "m",
                "model": "tiered",
                "properties": {"tiers": [{"up_to": 10000, "unit_amount": "0.001"}, {"up_to": None, "unit_amount": 1}]},
                "filters": [{"values": {"region": ["eu"]}, "properties": {"unit_amount": "2"}}],
            },
            {"metric_key": "m", "model": "flat fee", "properties": {"amount": "5"}},
            {"metric_key": "m", "model": "graduated_percentage", "properties": {"tiers": [{"up_to": None, "rate": 1}]}},
        ],
    }
    price_plan = body_schema(described, "POST", "/v1/price-plans")
    assert accepts(price_plan, plan) == []
    assert accepts(price_plan, {**plan, "code": "p"}) != []
    assert accepts(price_plan, {"charges": []}) != []  # id is required
    assert accepts(price_plan, {"id": "p", "charges": [{"model": "unknown"}]}) != []
    tier = {"up_to": 1.5, "unit_amount": "1"}
    assert accepts(price_plan, {"id": "p", "charges": [{"model": "tiered", "properties": {"tiers": [tier]}}]}) != []
    listed = {p["name"]: p["schema"] for p in operation_for(described, "GET", "/v1/events")["parameters"]}
    assert listed["status"]["enum"] == ["accepted", "rejected"] and "customer_id" in listed
    parked = operation_for(described, "GET", "/v1/parked_messages")["parameters"]
    assert {p["name"]: p["schema"] for p in parked}["service"]["enum"] == ["catalog", "invoicing", "payments"]


async def test_a_field_the_path_names_is_not_described_in_the_body(tenant: Tenant, described: dict):
    """PATCH /v1/metrics/{code}: the path names the metric; its body cannot (an unknown field)."""
    for path in ("/v1/billable_metrics/{code}", "/v1/metrics/{code}"):
        assert not {"code", "key"} & set(body_schema(described, "PATCH", path)["properties"]), path
    metric = {"code": "named", "aggregation_type": "sum", "field_name": "units"}
    assert (await tenant.http.post("/v1/billable_metrics", json=metric)).status_code == 201
    response = await tenant.http.patch("/v1/billable_metrics/named", json={"code": "other"})
    assert response.status_code == 400 and response.json()["error"]["reason"] == "UNKNOWN_FIELD"
