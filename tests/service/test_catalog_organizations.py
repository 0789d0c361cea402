"""OrganizationService over gRPC: tenants, API keys and the default organization."""

from __future__ import annotations

import asyncio
import secrets

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from sqlalchemy import select

from bxb.catalog.v1 import organizations_pb2 as pb
from bxb.catalog.v1 import organizations_pb2_grpc
from services.catalog import organizations
from services.catalog import server as catalog_server
from services.catalog.models import ApiKey, Organization
from services.common import channels, db, grpc_server
from services.common.errors import error_info
from tests.conftest import Infra, Stack, unique


@pytest.fixture
async def orgs(stack: Stack):
    async with stack.channel("catalog") as channel:
        yield organizations_pb2_grpc.OrganizationServiceStub(channel)


def field_violations(error: grpc.aio.AioRpcError) -> list[tuple[str, str]]:
    result = []
    for detail in rpc_status.from_call(error).details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            result += [(v.field, v.description) for v in bad.field_violations]
    return result


async def test_create_organization_generates_an_id_and_get_returns_it(orgs):
    created = await orgs.CreateOrganization(pb.CreateOrganizationRequest(name="  Acme Inc  "))
    assert created.id.startswith("org_")
    assert created.name == "Acme Inc"
    assert created.create_time.seconds > 0
    fetched = await orgs.GetOrganization(pb.GetOrganizationRequest(id=created.id))
    assert fetched == created


async def test_create_organization_with_a_given_id_then_again_is_already_exists(orgs):
    org_id = unique("org_given")
    created = await orgs.CreateOrganization(pb.CreateOrganizationRequest(id=org_id, name="Given"))
    assert created.id == org_id
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await orgs.CreateOrganization(pb.CreateOrganizationRequest(id=org_id, name="Other"))
    assert raised.value.code() == grpc.StatusCode.ALREADY_EXISTS
    info = error_info(raised.value)
    assert (info.reason, info.domain, info.metadata["field"]) == ("ALREADY_EXISTS", "bxb.dev", "id")
    assert (await orgs.GetOrganization(pb.GetOrganizationRequest(id=org_id))).name == "Given"


@pytest.mark.parametrize("name", ["", "   "])
async def test_create_organization_needs_a_name(orgs, name):
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await orgs.CreateOrganization(pb.CreateOrganizationRequest(name=name))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert raised.value.details() == "name is required"
    info = error_info(raised.value)
    assert (info.reason, info.metadata["field"]) == ("INVALID_ARGUMENT", "name")
    assert field_violations(raised.value) == [("name", "name is required")]


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({"name": "x" * 201}, "name"),
        ({"id": "o" * 65, "name": "Long id"}, "id"),
        ({"id": "has space", "name": "Spaced id"}, "id"),
    ],
)
async def test_create_organization_rejects_what_it_cannot_store(orgs, request_fields, field):
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await orgs.CreateOrganization(pb.CreateOrganizationRequest(**request_fields))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(raised.value).metadata["field"] == field


async def test_get_unknown_organization_is_not_found(orgs):
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await orgs.GetOrganization(pb.GetOrganizationRequest(id=unique("org_missing")))
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    assert error_info(raised.value).metadata["field"] == "id"


async def test_concurrent_creates_of_one_id_leave_one_winner_and_abort_the_rest(orgs):
    org_id = unique("org_race")
    results = await asyncio.gather(
        *(orgs.CreateOrganization(pb.CreateOrganizationRequest(id=org_id, name=f"n{i}")) for i in range(6)),
        return_exceptions=True,
    )
    winners = [r for r in results if isinstance(r, pb.Organization)]
    losers = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(winners) == 1
    assert len(losers) == 5
    assert {e.code() for e in losers} <= {grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.ABORTED}
    for error in losers:
        if error.code() == grpc.StatusCode.ABORTED:
            assert error_info(error).reason == "CONCURRENT_MODIFICATION"
    assert (await orgs.GetOrganization(pb.GetOrganizationRequest(id=org_id))).name == winners[0].name


async def test_generated_api_key_authenticates_as_its_organization(orgs):
    org = await orgs.CreateOrganization(pb.CreateOrganizationRequest(name="Keys"))
    created = await orgs.CreateApiKey(pb.CreateApiKeyRequest(organization_id=org.id))
    assert created.secret.startswith(organizations.SECRET_PREFIX)
    assert created.api_key.organization_id == org.id
    assert created.api_key.prefix == created.secret[:12]
    auth = await orgs.AuthenticateApiKey(pb.AuthenticateApiKeyRequest(secret=created.secret))
    assert (auth.organization_id, auth.api_key_id) == (org.id, created.api_key.id)


async def test_registering_a_given_secret_twice_returns_the_same_key(orgs):
    org = await orgs.CreateOrganization(pb.CreateOrganizationRequest(name="Given secret"))
    secret = "operator-" + secrets.token_hex(16)
    first = await orgs.CreateApiKey(pb.CreateApiKeyRequest(organization_id=org.id, secret=secret))
    again = await orgs.CreateApiKey(pb.CreateApiKeyRequest(organization_id=org.id, secret=secret))
    assert first.secret == again.secret == secret
    assert again.api_key == first.api_key
    auth = await orgs.AuthenticateApiKey(pb.AuthenticateApiKeyRequest(secret=secret))
    assert auth.api_key_id == first.api_key.id


async def test_a_secret_registered_to_another_organization_is_refused(orgs):
    owner = await orgs.CreateOrganization(pb.CreateOrganizationRequest(name="Owner"))
    other = await orgs.CreateOrganization(pb.CreateOrganizationRequest(name="Other"))
    secret = "shared-" + secrets.token_hex(16)
    await orgs.CreateApiKey(pb.CreateApiKeyRequest(organization_id=owner.id, secret=secret))
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await orgs.CreateApiKey(pb.CreateApiKeyRequest(organization_id=other.id, secret=secret))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(raised.value).metadata["field"] == "secret"
    assert field_violations(raised.value) == [("secret", "secret is already registered elsewhere")]
    auth = await orgs.AuthenticateApiKey(pb.AuthenticateApiKeyRequest(secret=secret))
    assert auth.organization_id == owner.id


async def test_a_secret_shorter_than_16_characters_is_refused(orgs):
    org = await orgs.CreateOrganization(pb.CreateOrganizationRequest(name="Short"))
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await orgs.CreateApiKey(pb.CreateApiKeyRequest(organization_id=org.id, secret="x" * 15))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(raised.value).metadata["field"] == "secret"
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await orgs.AuthenticateApiKey(pb.AuthenticateApiKeyRequest(secret="x" * 15))
    assert unknown.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_an_api_key_for_an_unknown_organization_is_not_found(orgs):
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await orgs.CreateApiKey(pb.CreateApiKeyRequest(organization_id=unique("org_nobody")))
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    assert error_info(raised.value).metadata["field"] == "organization_id"


async def test_authenticating_an_unknown_secret_is_unauthenticated(orgs):
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await orgs.AuthenticateApiKey(pb.AuthenticateApiKeyRequest(secret="bxb_sk_" + secrets.token_hex(20)))
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert raised.value.details() == "invalid API key"
    assert error_info(raised.value).reason == "INVALID_API_KEY"


async def test_the_stack_bootstrapped_the_default_organization(orgs):
    default = await orgs.GetOrganization(pb.GetOrganizationRequest(id=organizations.DEFAULT_ORGANIZATION))
    assert default.name == "Default organization"


async def test_a_catalog_started_with_an_operator_key_serves_it_for_the_default_organization(infra: Infra):
    url = await infra.database(unique("catalog_bootstrap"))
    secret = "operator-" + secrets.token_hex(16)
    for _ in range(2):  # every start bootstraps; the second one changes nothing
        service = catalog_server.build(catalog_server.Settings("", url, infra.nats.url, api_key=secret))
        server, port = await grpc_server.start(service, "127.0.0.1:0")
        try:
            async with channels.open_channel(f"127.0.0.1:{port}") as channel:
                stub = organizations_pb2_grpc.OrganizationServiceStub(channel)
                auth = await stub.AuthenticateApiKey(pb.AuthenticateApiKeyRequest(secret=secret))
                default = await stub.GetOrganization(pb.GetOrganizationRequest(id=auth.organization_id))
        finally:
            await grpc_server.stop(service, server, grace=0)
        assert auth.organization_id == organizations.DEFAULT_ORGANIZATION
        assert auth.role == pb.API_KEY_ROLE_ADMIN  # the operator's key manages the others
        assert default.name == "Default organization"
    engine = db.create_engine(url, pool_size=1)
    try:
        async with engine.connect() as connection:
            org_ids = (await connection.execute(select(Organization.id))).scalars().all()
            hashes = (await connection.execute(select(ApiKey.secret_hash))).scalars().all()
    finally:
        await engine.dispose()
    assert org_ids == [organizations.DEFAULT_ORGANIZATION]
    assert hashes == [organizations.hash_secret(secret)]  # only the hash is stored


async def test_catalog_replicas_starting_at_once_register_the_operator_key_once(infra: Infra):
    url = await infra.database(unique("catalog_bootstrap"))
    await db.migrate(url, catalog_server.MIGRATIONS)
    secret = "operator-" + secrets.token_hex(16)
    engine = db.create_engine(url, pool_size=4)
    try:
        sessions = db.sessions(engine)
        await asyncio.gather(*(organizations.bootstrap(sessions, secret) for _ in range(4)))
        async with engine.connect() as connection:
            hashes = (await connection.execute(select(ApiKey.secret_hash))).scalars().all()
    finally:
        await engine.dispose()
    assert hashes == [organizations.hash_secret(secret)]
