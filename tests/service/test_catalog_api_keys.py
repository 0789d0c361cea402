"""API keys in the catalog: keyed hashes at rest, keys from before them
still authenticating (and re-hashed), the calling organization's bounds,
and organizations' rate limits."""

from __future__ import annotations

import asyncio
import hashlib
import secrets

import asyncpg
import grpc
import pytest

from bxb.catalog.v1 import organizations_pb2 as pb
from bxb.catalog.v1 import organizations_pb2_grpc
from services.catalog import key_hashes
from services.catalog import server as catalog_server
from services.catalog.server import MIGRATIONS
from services.common import channels, grpc_server, tenancy
from services.common.errors import error_info
from tests.conftest import Infra, Stack, unique
from tests.service.test_invoicing_migrations import run


@pytest.fixture
async def orgs(stack: Stack):
    async with stack.channel("catalog") as channel:
        yield organizations_pb2_grpc.OrganizationServiceStub(channel)


async def refused(call) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    return raised.value


async def test_a_key_is_stored_as_an_hmac_and_a_key_from_before_is_rehashed_on_use(infra: Infra):
    url = await infra.database(unique("catalog_keys"))
    await asyncio.to_thread(run, MIGRATIONS, url, "0011", False)
    legacy_secret = "bxb_sk_" + secrets.token_urlsafe(32)
    connection = await asyncpg.connect(url)
    try:
        await connection.execute("INSERT INTO organizations (id, name) VALUES ('org_old', 'Old')")
        await connection.execute(
            "INSERT INTO api_keys (id, organization_id, secret_hash, prefix) VALUES ('key_old', 'org_old', $1, $2)",
            hashlib.sha256(legacy_secret.encode()).hexdigest(),
            legacy_secret[:12],
        )
        service = catalog_server.build(catalog_server.Settings("", url, infra.nats.url, api_key=""))
        server, port = await grpc_server.start(service, "127.0.0.1:0")  # migrates to the head
        try:
            scheme, role = await connection.fetchrow("SELECT hash_scheme, role FROM api_keys WHERE id = 'key_old'")
            assert (scheme, role) == ("sha256", "admin")
            async with channels.open_channel(f"127.0.0.1:{port}") as channel:
                stub = organizations_pb2_grpc.OrganizationServiceStub(channel)
                created = await stub.CreateApiKey(pb.CreateApiKeyRequest(organization_id="org_old", name="new"))
                for _ in range(2):  # the first use re-hashes; the second finds the HMAC
                    old = await stub.AuthenticateApiKey(pb.AuthenticateApiKeyRequest(secret=legacy_secret))
                    assert (old.organization_id, old.api_key_id, old.role) == (
                        "org_old",
                        "key_old",
                        pb.API_KEY_ROLE_ADMIN,
                    )
        finally:
            await grpc_server.stop(service, server, grace=0)
        rows = {
            row["id"]: row
            for row in await connection.fetch("SELECT id, secret_hash, hash_scheme, role, name FROM api_keys")
        }
    finally:
        await connection.close()
    new = rows[created.api_key.id]
    assert (new["hash_scheme"], new["role"], new["name"]) == ("hmac-sha256", "admin", "new")
    assert new["secret_hash"] == key_hashes.keyed(created.secret)
    assert new["secret_hash"] != hashlib.sha256(created.secret.encode()).hexdigest()
    assert created.secret not in str(new)
    assert (rows["key_old"]["hash_scheme"], rows["key_old"]["secret_hash"]) == (
        "hmac-sha256",
        key_hashes.keyed(legacy_secret),
    )


def test_the_keyed_hash_depends_on_the_server_secret(monkeypatch):
    monkeypatch.setenv("BXB_SECRET_KEY", "one")
    first = key_hashes.keyed("bxb_sk_same")
    monkeypatch.setenv("BXB_SECRET_KEY", "two")
    assert key_hashes.keyed("bxb_sk_same") != first
    assert set(key_hashes.candidates("bxb_sk_same")) == {"hmac-sha256", "sha256"}


async def test_a_caller_acting_for_an_organization_makes_its_own_keys_only(orgs):
    org = await orgs.CreateOrganization(pb.CreateOrganizationRequest(name="Acting"))
    acting = tenancy.metadata(org.id)
    other = await refused(orgs.CreateApiKey(pb.CreateApiKeyRequest(organization_id="org_default"), metadata=acting))
    assert (other.code(), error_info(other).metadata["field"]) == (grpc.StatusCode.INVALID_ARGUMENT, "organization_id")
    chosen = await refused(orgs.CreateApiKey(pb.CreateApiKeyRequest(secret="x" * 20), metadata=acting))
    assert error_info(chosen).metadata["field"] == "secret"
    role = await refused(orgs.CreateApiKey(pb.CreateApiKeyRequest(role=99), metadata=acting))
    assert error_info(role).metadata["field"] == "role"
    made = await orgs.CreateApiKey(
        pb.CreateApiKeyRequest(organization_id=org.id, role=pb.API_KEY_ROLE_READ), metadata=acting
    )
    assert (made.api_key.organization_id, made.api_key.role) == (org.id, pb.API_KEY_ROLE_READ)
    unscoped = await refused(orgs.ListApiKeys(pb.ListApiKeysRequest()))
    assert unscoped.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_an_operator_sets_an_organizations_rate_limits(orgs):
    org = await orgs.CreateOrganization(pb.CreateOrganizationRequest(name="Limited"))
    assert org.rate_limits == pb.RateLimits() and org.key_rate_limits == pb.RateLimits()
    limits = pb.RateLimits(requests_per_second=5, request_burst=10, events_per_second=100, event_burst=1000)
    per_key = pb.RateLimits(request_burst=3)
    updated = await orgs.SetOrganizationRateLimits(
        pb.SetOrganizationRateLimitsRequest(organization_id=org.id, rate_limits=limits, key_rate_limits=per_key)
    )
    assert (updated.rate_limits, updated.key_rate_limits) == (limits, per_key)
    assert (await orgs.GetOrganization(pb.GetOrganizationRequest(id=org.id))) == updated
    key = await orgs.CreateApiKey(pb.CreateApiKeyRequest(organization_id=org.id))
    auth = await orgs.AuthenticateApiKey(pb.AuthenticateApiKeyRequest(secret=key.secret))
    assert (auth.rate_limits, auth.key_rate_limits) == (limits, per_key)

    missing = await refused(
        orgs.SetOrganizationRateLimits(pb.SetOrganizationRateLimitsRequest(organization_id=unique("org_none")))
    )
    assert (missing.code(), error_info(missing).metadata["field"]) == (grpc.StatusCode.NOT_FOUND, "organization_id")
    negative = await refused(
        orgs.SetOrganizationRateLimits(
            pb.SetOrganizationRateLimitsRequest(organization_id=org.id, rate_limits=pb.RateLimits(event_burst=-1))
        )
    )
    assert negative.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(negative).metadata["field"] == "rate_limits.event_burst"
