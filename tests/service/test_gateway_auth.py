"""Gateway authentication, /health and unmatched routes, through the real app."""

from __future__ import annotations

import hashlib

import httpx
import pytest

from gateway import auth
from tests.conftest import Stack, Tenant


def anonymous(stack: Stack, headers: dict[str, str] | None = None) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=stack.app), base_url="http://bxb.test", headers=headers)


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


async def test_health_answers_without_an_api_key(stack: Stack):
    async with anonymous(stack) as http:
        response = await http.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_a_request_without_authorization_is_refused_with_the_json_error_body(stack: Stack):
    async with anonymous(stack) as http:
        response = await http.get("/v1/billable_metrics")
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert error["status"] == 401
    assert (error["code"], error["reason"]) == ("UNAUTHENTICATED", "INVALID_API_KEY")
    assert "missing Authorization header" in error["message"]
    assert "field" not in error


@pytest.mark.parametrize("header", ["Basic dXNlcjpwYXNz", "Token {key}", "{key}", "Bearer", "Bearer    "])
async def test_an_authorization_header_that_is_not_bearer_with_a_key_is_refused(
    stack: Stack, tenant: Tenant, header: str
):
    async with anonymous(stack, {"Authorization": header.format(key=tenant.key)}) as http:
        response = await http.get("/v1/billable_metrics")
    assert response.status_code == 401
    error = response.json()["error"]
    assert error["reason"] == "INVALID_API_KEY"
    assert error["message"] == "the Authorization header must be 'Bearer <api key>'"


async def test_an_unknown_api_key_is_refused(stack: Stack):
    async with anonymous(stack, {"Authorization": "Bearer bxb_sk_not_a_key_of_anyone"}) as http:
        response = await http.get("/v1/billable_metrics")
    assert response.status_code == 401
    assert response.json()["error"] == {
        "status": 401,
        "code": "UNAUTHENTICATED",
        "reason": "INVALID_API_KEY",
        "message": "invalid API key",
    }


async def test_authentication_comes_before_the_body_is_read(stack: Stack):
    async with anonymous(stack, {"Authorization": "Bearer bxb_sk_not_a_key_of_anyone"}) as http:
        response = await http.post("/v1/billable_metrics", content=b"{not json")
    assert response.status_code == 401


async def test_a_valid_key_is_accepted_whatever_the_case_of_the_scheme(stack: Stack, tenant: Tenant):
    for scheme in ("Bearer", "bearer", "BEARER"):
        async with anonymous(stack, {"Authorization": f"{scheme} {tenant.key}"}) as http:
            response = await http.get("/v1/billable_metrics")
        assert response.status_code == 200, response.text
        assert response.json() == {"billable_metrics": [], "next_page_token": ""}


async def test_a_second_request_with_the_same_key_is_served_from_the_cache(stack: Stack, tenant: Tenant):
    cache = stack.app.state.authenticator._cache
    assert (await tenant.http.get("/v1/customers")).status_code == 200
    principal, expiry = cache[digest(tenant.key)]
    assert (principal.organization, principal.role) == (tenant.organization_id, "admin")
    assert tenant.key not in str(cache)  # only the key's hash is kept

    assert (await tenant.http.get("/v1/customers")).status_code == 200
    # A fresh lookup would have stored a later expiry; a cache hit leaves it.
    assert cache[digest(tenant.key)] == (principal, expiry)


async def test_the_key_cache_is_emptied_when_full(stack: Stack, make_tenant, monkeypatch):
    first, second = await make_tenant(), await make_tenant()
    cache = stack.app.state.authenticator._cache
    monkeypatch.setattr(auth, "CACHE_LIMIT", 1)
    try:
        assert (await first.http.get("/v1/customers")).status_code == 200
        assert list(cache) == [digest(first.key)]
        assert (await second.http.get("/v1/customers")).status_code == 200
        assert list(cache) == [digest(second.key)]
        # The evicted key still works: it is looked up again.
        assert (await first.http.get("/v1/customers")).status_code == 200
        assert list(cache) == [digest(first.key)]
    finally:
        await first.http.aclose()
        await second.http.aclose()


async def test_an_unknown_route_is_a_json_404(tenant: Tenant):
    response = await tenant.http.get("/v1/no_such_resource")
    assert response.status_code == 404
    assert response.json() == {
        "error": {"status": 404, "code": "NOT_FOUND", "reason": "NOT_FOUND", "message": "no such route"}
    }


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("DELETE", "/v1/customers/cus_1", {"GET", "HEAD", "PATCH"}),
        ("PUT", "/v1/billable_metrics", {"GET", "HEAD", "POST"}),
        ("POST", "/v1/invoices/inv_1", {"GET", "HEAD"}),
        ("POST", "/health", {"GET", "HEAD"}),
    ],
)
async def test_a_wrong_method_is_a_json_405_naming_the_allowed_ones(
    tenant: Tenant, method: str, path: str, allowed: set[str]
):
    response = await tenant.http.request(method, path)
    assert response.status_code == 405
    assert response.json() == {
        "error": {
            "status": 405,
            "code": "METHOD_NOT_ALLOWED",
            "reason": "METHOD_NOT_ALLOWED",
            "message": "method not allowed on this route",
        }
    }
    assert set(response.headers["allow"].split(", ")) == allowed
