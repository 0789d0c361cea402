"""Organizations and API keys (OrganizationService)."""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bxb.catalog.v1 import organizations_pb2 as pb
from bxb.catalog.v1 import organizations_pb2_grpc
from services.catalog import validation
from services.catalog.models import ApiKey, Organization
from services.common.errors import AlreadyExists, InvalidArgument, NotFound, Unauthenticated
from services.common.grpc_server import Context
from services.common.ids import new_id
from services.common.known_organizations import KnownOrganizations
from services.common.timestamps import to_proto

DEFAULT_ORGANIZATION = "org_default"
SECRET_PREFIX = "bxb_sk_"


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def organization_proto(org: Organization) -> pb.Organization:
    return pb.Organization(id=org.id, name=org.name, create_time=to_proto(org.create_time))


def api_key_proto(key: ApiKey) -> pb.ApiKey:
    return pb.ApiKey(
        id=key.id, organization_id=key.organization_id, prefix=key.prefix, create_time=to_proto(key.create_time)
    )


class OrganizationServicer(organizations_pb2_grpc.OrganizationServiceServicer):
    def __init__(self, sessions: async_sessionmaker[AsyncSession]):
        self.sessions = sessions

    async def CreateOrganization(self, request: pb.CreateOrganizationRequest, context: Context) -> pb.Organization:
        name = validation.text(request.name.strip(), "name")
        if not name:
            raise InvalidArgument("name is required", field="name")
        if request.id:  # it travels in call metadata and keys every row: a code of at most 64 characters
            validation.text(validation.code(request.id, "id"), "id", 64)
        async with self.sessions() as session, session.begin():
            org = Organization(id=request.id or new_id("org"), name=name)
            if await session.get(Organization, org.id) is not None:
                raise AlreadyExists(f"organization {org.id!r} already exists", field="id")
            session.add(org)
            await session.flush()
            await session.refresh(org)
            return organization_proto(org)

    async def GetOrganization(self, request: pb.GetOrganizationRequest, context: Context) -> pb.Organization:
        async with self.sessions() as session:
            org = await session.get(Organization, request.id)
            if org is None:
                raise NotFound(f"organization {request.id!r} not found", field="id")
            return organization_proto(org)

    async def CreateApiKey(self, request: pb.CreateApiKeyRequest, context: Context) -> pb.CreateApiKeyResponse:
        return await self.create_api_key(request)

    async def create_api_key(self, request: pb.CreateApiKeyRequest) -> pb.CreateApiKeyResponse:
        secret = request.secret or new_secret()
        if len(secret) < 16:
            raise InvalidArgument("secret must be at least 16 characters", field="secret")
        digest = hash_secret(secret)
        async with self.sessions() as session, session.begin():
            if await session.get(Organization, request.organization_id) is None:
                raise NotFound(f"organization {request.organization_id!r} not found", field="organization_id")
            key = (await session.execute(select(ApiKey).where(ApiKey.secret_hash == digest))).scalar_one_or_none()
            if key is not None and key.organization_id != request.organization_id:
                raise InvalidArgument("secret is already registered elsewhere", field="secret")
            if key is None:
                key = ApiKey(
                    id=new_id("key"), organization_id=request.organization_id, secret_hash=digest, prefix=secret[:12]
                )
                session.add(key)
                await session.flush()
                await session.refresh(key)
            return pb.CreateApiKeyResponse(api_key=api_key_proto(key), secret=secret)

    async def AuthenticateApiKey(
        self, request: pb.AuthenticateApiKeyRequest, context: Context
    ) -> pb.AuthenticateApiKeyResponse:
        async with self.sessions() as session:
            key = (
                await session.execute(select(ApiKey).where(ApiKey.secret_hash == hash_secret(request.secret)))
            ).scalar_one_or_none()
        if key is None:
            raise Unauthenticated("invalid API key", reason="INVALID_API_KEY")
        return pb.AuthenticateApiKeyResponse(organization_id=key.organization_id, api_key_id=key.id)


def known(sessions: async_sessionmaker[AsyncSession]) -> KnownOrganizations:
    """The organizations calls may act for, as this service's table holds
    them: a no is not kept (one created a moment later, through another
    catalog replica perhaps, is seen at once)."""

    async def lookup(org: str) -> bool:
        async with sessions() as session:
            return await session.get(Organization, org) is not None

    return KnownOrganizations(lookup, negative_seconds=0)


async def bootstrap(sessions: async_sessionmaker[AsyncSession], secret: str) -> None:
    """Ensures the default organization exists and, when given, that `secret` is one of its keys."""
    async with sessions() as session, session.begin():
        # ON CONFLICT: two catalog processes may start on an empty database at once.
        await session.execute(
            insert(Organization)
            .values(id=DEFAULT_ORGANIZATION, name="Default organization")
            .on_conflict_do_nothing(index_elements=[Organization.id])
        )
    if secret:
        await OrganizationServicer(sessions).create_api_key(
            pb.CreateApiKeyRequest(organization_id=DEFAULT_ORGANIZATION, secret=secret)
        )
