"""/v1/api_keys through the real gateway and catalog: create, list, get,
revoke and rotate; roles enforced per route; revocation honoured within
seconds by every gateway replica."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import grpc
import httpx
import pytest

from bxb.catalog.v1 import organizations_pb2 as pb
from bxb.catalog.v1 import organizations_pb2_grpc
from gateway.app import create_app
from gateway.config import Settings
from services.common.timestamps import parse_rfc3339
from tests.conftest import Stack, Tenant

KEY_FIELDS = {"id", "organization_id", "name", "role", "prefix", "created_at", "expires_at", "revoked_at"}


def client(app: object, secret: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://bxb.test",
        headers={"Authorization": f"Bearer {secret}"},
    )


async def create(tenant: Tenant, role: str = "admin", name: str = "a key") -> dict:
    response = await tenant.http.post("/v1/api_keys", json={"name": name, "role": role})
    assert response.status_code == 201, response.text
    return response.json()


@contextlib.asynccontextmanager
async def gateway(stack: Stack, cache_seconds: float) -> AsyncIterator[object]:
    """Another gateway replica over the same services, its auth cache `cache_seconds` long."""
    settings = Settings(
        "127.0.0.1", 0, stack.catalog, stack.metering, stack.invoicing, stack.payments, 65536, cache_seconds, 30
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        yield app


async def test_an_admin_creates_a_key_whose_secret_is_shown_once(tenant: Tenant):
    created = await create(tenant, "read", "  dashboards  ")
    assert set(created) == {"api_key", "secret"}
    key = created["api_key"]
    assert set(key) == KEY_FIELDS
    assert key["id"].startswith("key_")
    assert (key["name"], key["role"], key["organization_id"]) == ("dashboards", "read", tenant.organization_id)
    assert created["secret"].startswith("bxb_sk_") and key["prefix"] == created["secret"][:12]
    assert (key["expires_at"], key["revoked_at"]) == (None, None)
    assert abs(parse_rfc3339(key["created_at"]) - datetime.now(UTC)) < timedelta(minutes=1)

    listed = await tenant.http.get("/v1/api_keys")
    assert listed.status_code == 200
    assert created["secret"] not in listed.text and "secret" not in listed.text
    keys = listed.json()["api_keys"]
    assert len(keys) == 2 and keys[0] == key  # newest first, then the tenant's own
    got = await tenant.http.get(f"/v1/api_keys/{key['id']}")
    assert got.status_code == 200 and got.json() == key
    assert "secret" not in got.text


async def test_the_listing_pages(tenant: Tenant):
    for n in range(3):
        await create(tenant, name=f"k{n}")
    first = (await tenant.http.get("/v1/api_keys", params={"page_size": 2})).json()
    assert len(first["api_keys"]) == 2 and first["next_page_token"]
    rest = (await tenant.http.get("/v1/api_keys", params={"page_token": first["next_page_token"]})).json()
    assert len(rest["api_keys"]) == 2 and rest["next_page_token"] == ""
    assert not {k["id"] for k in first["api_keys"]} & {k["id"] for k in rest["api_keys"]}


@pytest.mark.parametrize(
    ("body", "field", "reason"),
    [
        ({"role": "owner"}, "role", "INVALID_VALUE"),
        ({"name": "x" * 201}, "name", None),
        ({"organization_id": "org_default"}, "organization_id", "UNKNOWN_FIELD"),
        ({"secret": "bxb_sk_chosen_by_the_client"}, "secret", "UNKNOWN_FIELD"),
    ],
)
async def test_a_bad_create_is_a_400_naming_the_field(tenant: Tenant, body: dict, field: str, reason: str | None):
    response = await tenant.http.post("/v1/api_keys", json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["field"] == field
    if reason:
        assert error["reason"] == reason


async def test_a_key_made_without_a_role_is_admin(tenant: Tenant):
    created = (await tenant.http.post("/v1/api_keys", json={})).json()
    assert created["api_key"]["role"] == "admin" and created["api_key"]["name"] == ""


# (method, path, body, kind): a route of each kind.
ROUTES = [
    ("GET", "/v1/customers", None, "read"),
    ("POST", "/v1/pricing/calculate", {}, "read"),
    ("GET", "/v1/events", None, "read"),
    ("POST", "/v1/customers", {"external_id": "c1", "name": "C"}, "write"),
    ("PATCH", "/v1/customers/nobody", {"name": "N"}, "write"),
    ("POST", "/v1/events", {"transaction_id": "t1", "customer_id": "c", "code": "m"}, "ingest"),
    ("POST", "/v1/events/batch", {"events": [{"transaction_id": "t2", "customer_id": "c", "code": "m"}]}, "ingest"),
    ("POST", "/v1/events/backfill", {"events": [{"transaction_id": "t3", "customer_id": "c", "code": "m"}]}, "ingest"),
    ("GET", "/v1/api_keys", None, "keys"),
    ("POST", "/v1/api_keys", {"role": "read"}, "keys"),
]
ALLOWED = {
    "admin": {"read", "write", "ingest", "keys"},
    "write": {"read", "write", "ingest"},
    "ingest": {"ingest"},
    "read": {"read"},
}


@pytest.mark.parametrize("role", list(ALLOWED))
async def test_each_role_reaches_its_routes_only(stack: Stack, tenant: Tenant, role: str):
    secret = (await create(tenant, role))["secret"]
    async with client(stack.app, secret) as http:
        for method, path, body, kind in ROUTES:
            response = await http.request(method, path, json=body)
            if kind in ALLOWED[role]:
                assert response.status_code != 403, (role, method, path, response.text)
            else:
                assert response.status_code == 403, (role, method, path, response.text)
                error = response.json()["error"]
                assert (error["code"], error["reason"]) == ("PERMISSION_DENIED", "ROLE_NOT_ALLOWED")
                assert error["message"] == f"an API key of role {role!r} may not {method} {path}"
    assert (await tenant.http.get("/v1/customers/c1")).status_code == (200 if "write" in ALLOWED[role] else 404)


async def test_a_read_key_may_head_what_it_may_get(stack: Stack, tenant: Tenant):
    async with client(stack.app, (await create(tenant, "read"))["secret"]) as http:
        assert (await http.head("/v1/customers")).status_code == 200


async def test_another_organizations_key_is_not_found(tenant: Tenant, make_tenant):
    other = await make_tenant()
    try:
        theirs = (await create(other))["api_key"]["id"]
        for method, path in [
            ("GET", f"/v1/api_keys/{theirs}"),
            ("DELETE", f"/v1/api_keys/{theirs}"),
            ("POST", f"/v1/api_keys/{theirs}/rotate"),
        ]:
            response = await tenant.http.request(method, path)
            assert response.status_code == 404, response.text
            assert response.json()["error"]["field"] == "id"
        assert theirs not in (await tenant.http.get("/v1/api_keys")).text
        still = (await other.http.get(f"/v1/api_keys/{theirs}")).json()
        assert still["revoked_at"] is None and still["expires_at"] is None
    finally:
        await other.http.aclose()


async def test_a_revoked_key_is_refused_within_seconds_by_every_replica(stack: Stack, tenant: Tenant):
    cache_seconds = 1.0
    created = await create(tenant, "write")
    secret, key_id = created["secret"], created["api_key"]["id"]
    async with (
        gateway(stack, cache_seconds) as first,
        gateway(stack, cache_seconds) as second,
        client(first, secret) as one,
        client(second, secret) as two,
    ):
        assert (await one.get("/v1/customers")).status_code == 200  # both replicas cached it
        assert (await two.get("/v1/customers")).status_code == 200
        revoked = await tenant.http.delete(f"/v1/api_keys/{key_id}")
        assert revoked.status_code == 200
        assert revoked.json()["revoked_at"] is not None
        started = time.monotonic()
        refused: dict[str, float] = {}
        while len(refused) < 2 and time.monotonic() - started < 10:
            for name, http in (("one", one), ("two", two)):
                if name not in refused and (await http.get("/v1/customers")).status_code == 401:
                    refused[name] = time.monotonic() - started
            await asyncio.sleep(0.05)
        answer = (await two.get("/v1/customers")).json()["error"]
    assert set(refused) == {"one", "two"}
    assert max(refused.values()) < cache_seconds + 3  # the cache's time, and a margin for a busy machine
    assert (answer["reason"], answer["message"]) == ("INVALID_API_KEY", "API key revoked")
    again = await tenant.http.delete(f"/v1/api_keys/{key_id}")  # revoking twice changes nothing
    assert again.status_code == 200 and again.json()["revoked_at"] == revoked.json()["revoked_at"]
    rotated = await tenant.http.post(f"/v1/api_keys/{key_id}/rotate", json={})
    assert rotated.status_code == 409 and rotated.json()["error"]["reason"] == "API_KEY_REVOKED"


async def test_a_rotation_makes_a_new_key_and_lets_the_old_one_expire(stack: Stack, tenant: Tenant):
    made = await create(tenant, "ingest", "worker")
    old = made["api_key"]
    rotated = await tenant.http.post(f"/v1/api_keys/{old['id']}/rotate", json={"expires_in_seconds": 2})
    assert rotated.status_code == 201, rotated.text
    answer = rotated.json()
    assert set(answer) == {"api_key", "secret", "previous_api_key"}
    new, previous = answer["api_key"], answer["previous_api_key"]
    assert (new["name"], new["role"], new["expires_at"]) == ("worker", "ingest", None)
    assert new["id"] != old["id"] and new["prefix"] == answer["secret"][:12]
    expires = parse_rfc3339(previous["expires_at"])
    assert timedelta(0) < expires - datetime.now(UTC) <= timedelta(seconds=2)
    async with gateway(stack, 0.2) as app, client(app, answer["secret"]) as http:
        accepted = await http.post("/v1/events", json={"transaction_id": "r1", "customer_id": "c", "code": "m"})
        assert accepted.status_code == 200, accepted.text
    async with stack.channel("catalog") as channel:
        stub = organizations_pb2_grpc.OrganizationServiceStub(channel)
        await asyncio.sleep(max(0.0, (expires - datetime.now(UTC)).total_seconds()) + 0.2)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.AuthenticateApiKey(pb.AuthenticateApiKeyRequest(secret=made["secret"]))
        assert (raised.value.code(), raised.value.details()) == (grpc.StatusCode.UNAUTHENTICATED, "API key expired")
        assert (await stub.AuthenticateApiKey(pb.AuthenticateApiKeyRequest(secret=answer["secret"]))).role == (
            pb.API_KEY_ROLE_INGEST
        )
    listed = {k["id"]: k for k in (await tenant.http.get("/v1/api_keys")).json()["api_keys"]}
    assert listed[old["id"]]["expires_at"] == previous["expires_at"]
    again = await tenant.http.post(f"/v1/api_keys/{old['id']}/rotate", json={})
    assert again.status_code == 409 and again.json()["error"]["reason"] == "API_KEY_EXPIRED"


async def test_a_rotated_key_works_until_its_expiry_then_is_refused(stack: Stack, tenant: Tenant):
    old = await create(tenant, "read")
    rotated = await tenant.http.post(f"/v1/api_keys/{old['api_key']['id']}/rotate", json={"expires_in_seconds": 1})
    async with gateway(stack, 0.2) as app, client(app, old["secret"]) as http:
        assert (await http.get("/v1/customers")).status_code == 200  # still working
        expires = parse_rfc3339(rotated.json()["previous_api_key"]["expires_at"])
        await asyncio.sleep(max(0.0, (expires - datetime.now(UTC)).total_seconds()) + 0.5)
        refused = await http.get("/v1/customers")
    assert refused.status_code == 401
    assert refused.json()["error"]["message"] == "API key expired"


async def test_a_rotation_defaults_to_a_day_or_takes_a_time(tenant: Tenant):
    key = (await create(tenant))["api_key"]
    default = (await tenant.http.post(f"/v1/api_keys/{key['id']}/rotate", json={})).json()
    expires = parse_rfc3339(default["previous_api_key"]["expires_at"])
    assert abs(expires - (datetime.now(UTC) + timedelta(days=1))) < timedelta(minutes=1)
    # Rotating the new one at a given time; a later time never extends an earlier expiry.
    at = datetime.now(UTC) + timedelta(hours=2)
    body = {"old_key_expires_at": at.isoformat()}
    named = await tenant.http.post(f"/v1/api_keys/{default['api_key']['id']}/rotate", json=body)
    assert named.status_code == 201, named.text
    assert abs(parse_rfc3339(named.json()["previous_api_key"]["expires_at"]) - at) < timedelta(seconds=1)
    later = {"old_key_expires_at": (at + timedelta(days=3)).isoformat()}
    again = await tenant.http.post(f"/v1/api_keys/{default['api_key']['id']}/rotate", json=later)
    assert abs(parse_rfc3339(again.json()["previous_api_key"]["expires_at"]) - at) < timedelta(seconds=1)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"expires_in_seconds": -1}, "expires_in_seconds"),
        ({"expires_in_seconds": 10**9}, "expires_in_seconds"),
        ({"old_key_expires_at": "2001-01-01T00:00:00Z"}, "old_key_expires_at"),
        ({"expires_in_seconds": 5, "old_key_expires_at": "2101-01-01T00:00:00Z"}, "old_key_expires_at"),
    ],
)
async def test_a_bad_rotation_is_a_400_naming_the_field(tenant: Tenant, body: dict, field: str):
    key = (await create(tenant))["api_key"]
    response = await tenant.http.post(f"/v1/api_keys/{key['id']}/rotate", json=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["field"] == field
    assert (await tenant.http.get(f"/v1/api_keys/{key['id']}")).json()["expires_at"] is None
