"""Organizations and API keys (OrganizationService).

Organizations, their rate limits and key authentication are for the gateway
and operators. The key-management RPCs the gateway serves as /v1/api_keys act
for the calling organization (its metadata): a key of another organization is
NOT_FOUND, and such a caller neither names another organization nor chooses
a secret. Secrets are stored as keyed hashes (key_hashes.py).
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta

from google.protobuf import json_format
from sqlalchemy import and_, or_, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bxb.catalog.v1 import organizations_pb2 as pb
from bxb.catalog.v1 import organizations_pb2_grpc
from services.catalog import key_hashes, validation
from services.catalog.models import ApiKey, Organization
from services.common import pagination, tenancy
from services.common.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unauthenticated,
)
from services.common.grpc_server import Context
from services.common.ids import new_id
from services.common.known_organizations import KnownOrganizations
from services.common.timestamps import from_proto_or_none, to_proto, utcnow

DEFAULT_ORGANIZATION = "org_default"
SECRET_PREFIX = "bxb_sk_"
# How long a rotated key keeps working unless the rotation says otherwise.
ROTATION_GRACE = timedelta(days=1)
ROLES = {
    pb.API_KEY_ROLE_ADMIN: "admin",
    pb.API_KEY_ROLE_WRITE: "write",
    pb.API_KEY_ROLE_INGEST: "ingest",
    pb.API_KEY_ROLE_READ: "read",
}
ROLE_NUMBERS = {name: number for number, name in ROLES.items()}


def hash_secret(secret: str) -> str:
    """What a key's row holds for its secret."""
    return key_hashes.keyed(secret)


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def limits_proto(stored: dict[str, int]) -> pb.RateLimits:
    return json_format.ParseDict(stored, pb.RateLimits())


def limits_stored(limits: pb.RateLimits) -> dict[str, int]:
    stored: dict[str, int] = json_format.MessageToDict(limits, preserving_proto_field_name=True)
    return stored


def organization_proto(org: Organization) -> pb.Organization:
    return pb.Organization(
        id=org.id,
        name=org.name,
        create_time=to_proto(org.create_time),
        rate_limits=limits_proto(org.rate_limits),
        key_rate_limits=limits_proto(org.key_rate_limits),
    )


def api_key_proto(key: ApiKey) -> pb.ApiKey:
    return pb.ApiKey(
        id=key.id,
        organization_id=key.organization_id,
        prefix=key.prefix,
        create_time=to_proto(key.create_time),
        name=key.name,
        role=ROLE_NUMBERS[key.role],
        expire_time=to_proto(key.expire_time),
        revoke_time=to_proto(key.revoke_time),
    )


def acting_for() -> str:
    """The organization the caller acts for, or "" for an operator's call."""
    try:
        return tenancy.organization_id()
    except Unauthenticated:
        return ""


def refused(reason: str) -> Unauthenticated:
    return Unauthenticated(reason, reason="INVALID_API_KEY")


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

    async def SetOrganizationRateLimits(
        self, request: pb.SetOrganizationRateLimitsRequest, context: Context
    ) -> pb.Organization:
        async with self.sessions() as session, session.begin():
            org = await session.get(Organization, request.organization_id, with_for_update=True)
            if org is None:
                raise NotFound(f"organization {request.organization_id!r} not found", field="organization_id")
            org.rate_limits = limits_stored(request.rate_limits)
            org.key_rate_limits = limits_stored(request.key_rate_limits)
            await session.flush()
            return organization_proto(org)

    async def CreateApiKey(self, request: pb.CreateApiKeyRequest, context: Context) -> pb.CreateApiKeyResponse:
        caller = acting_for()
        if caller:
            if request.organization_id not in ("", caller):
                raise InvalidArgument("organization_id must be the calling organization's", field="organization_id")
            if request.secret:
                raise InvalidArgument("secret is generated by the server", field="secret")
            request.organization_id = caller
        return await self.create_api_key(request)

    async def create_api_key(self, request: pb.CreateApiKeyRequest) -> pb.CreateApiKeyResponse:
        secret = request.secret or new_secret()
        if len(secret) < 16:
            raise InvalidArgument("secret must be at least 16 characters", field="secret")
        name = validation.text(request.name.strip(), "name")
        role = ROLES.get(request.role or pb.API_KEY_ROLE_ADMIN)
        if role is None:
            raise InvalidArgument("role must be one of: admin, write, ingest, read", field="role")
        async with self.sessions() as session, session.begin():
            if await session.get(Organization, request.organization_id) is None:
                raise NotFound(f"organization {request.organization_id!r} not found", field="organization_id")
            key = await self._by_secret(session, secret)
            if key is not None and key.organization_id != request.organization_id:
                raise InvalidArgument("secret is already registered elsewhere", field="secret")
            if key is None:
                key = await self._add(session, request.organization_id, secret, name, role)
            return pb.CreateApiKeyResponse(api_key=api_key_proto(key), secret=secret)

    @staticmethod
    async def _add(session: AsyncSession, org: str, secret: str, name: str, role: str) -> ApiKey:
        key = ApiKey(
            id=new_id("key"),
            organization_id=org,
            secret_hash=hash_secret(secret),
            hash_scheme=key_hashes.HMAC,
            prefix=secret[:12],
            name=name,
            role=role,
        )
        session.add(key)
        await session.flush()
        await session.refresh(key)
        return key

    @staticmethod
    async def _by_secret(session: AsyncSession, secret: str) -> ApiKey | None:
        """The key whose row holds `secret`'s hash, under whichever scheme it was stored."""
        matches = [
            and_(ApiKey.hash_scheme == scheme, ApiKey.secret_hash == digest)
            for scheme, digest in key_hashes.candidates(secret).items()
        ]
        found: ApiKey | None = (await session.execute(select(ApiKey).where(or_(*matches)))).scalar_one_or_none()
        return found

    async def AuthenticateApiKey(
        self, request: pb.AuthenticateApiKeyRequest, context: Context
    ) -> pb.AuthenticateApiKeyResponse:
        async with self.sessions() as session, session.begin():
            key = await self._by_secret(session, request.secret)
            if key is None:
                raise refused("invalid API key")
            now = utcnow()
            if key.revoke_time is not None:
                raise refused("API key revoked")
            if key.expire_time is not None and key.expire_time <= now:
                raise refused("API key expired")
            if key.hash_scheme != key_hashes.HMAC:  # a row from before keyed hashes: re-hashed on first use
                key.secret_hash, key.hash_scheme = hash_secret(request.secret), key_hashes.HMAC
            org = await session.get(Organization, key.organization_id)
            assert org is not None  # a key's organization_id is a foreign key
            return pb.AuthenticateApiKeyResponse(
                organization_id=key.organization_id,
                api_key_id=key.id,
                role=ROLE_NUMBERS[key.role],
                rate_limits=limits_proto(org.rate_limits),
                key_rate_limits=limits_proto(org.key_rate_limits),
            )

    async def ListApiKeys(self, request: pb.ListApiKeysRequest, context: Context) -> pb.ListApiKeysResponse:
        org = tenancy.organization_id()
        page = pagination.page(request, "ListApiKeys")
        query = (
            select(ApiKey)
            .where(ApiKey.organization_id == org)
            .order_by(ApiKey.create_time.desc(), ApiKey.id)
            .offset(page.offset)
            .limit(page.size + 1)
        )
        async with self.sessions() as session:
            rows = (await session.execute(query)).scalars().all()
        keys, token = pagination.answer(page, [api_key_proto(key) for key in rows])
        return pb.ListApiKeysResponse(api_keys=keys, next_page_token=token)

    async def GetApiKey(self, request: pb.GetApiKeyRequest, context: Context) -> pb.ApiKey:
        async with self.sessions() as session:
            return api_key_proto(await self._own(session, request.id))

    async def RevokeApiKey(self, request: pb.RevokeApiKeyRequest, context: Context) -> pb.ApiKey:
        async with self.sessions() as session, session.begin():
            key = await self._own(session, request.id, lock=True)
            if key.revoke_time is None:
                key.revoke_time = utcnow()
                await session.flush()
            return api_key_proto(key)

    async def RotateApiKey(self, request: pb.RotateApiKeyRequest, context: Context) -> pb.RotateApiKeyResponse:
        now = utcnow()
        expire = self._rotated_expiry(request, now)
        async with self.sessions() as session, session.begin():
            old = await self._own(session, request.id, lock=True)
            if old.revoke_time is not None:
                raise FailedPrecondition(f"API key {old.id!r} is revoked", field="id", reason="API_KEY_REVOKED")
            if old.expire_time is not None and old.expire_time <= now:
                raise FailedPrecondition(f"API key {old.id!r} has expired", field="id", reason="API_KEY_EXPIRED")
            secret = new_secret()
            new = await self._add(session, old.organization_id, secret, old.name, old.role)
            old.expire_time = min(expire, old.expire_time or expire)
            await session.flush()
            return pb.RotateApiKeyResponse(
                api_key=api_key_proto(new), secret=secret, previous_api_key=api_key_proto(old)
            )

    @staticmethod
    def _rotated_expiry(request: pb.RotateApiKeyRequest, now: datetime) -> datetime:
        """When a rotated key stops working: in expires_in_seconds, at old_key_expire_time, or in a day."""
        at = from_proto_or_none(request, "old_key_expire_time")
        if at is not None and request.expires_in_seconds:
            raise InvalidArgument(
                "give expires_in_seconds or old_key_expire_time, not both", field="old_key_expire_time"
            )
        if at is not None:
            if at < now:
                raise InvalidArgument("old_key_expire_time must not be in the past", field="old_key_expire_time")
            return at
        return now + (timedelta(seconds=request.expires_in_seconds) if request.expires_in_seconds else ROTATION_GRACE)

    @staticmethod
    async def _own(session: AsyncSession, key_id: str, lock: bool = False) -> ApiKey:
        """A key of the calling organization (another's is NOT_FOUND)."""
        query = select(ApiKey).where(ApiKey.id == key_id, ApiKey.organization_id == tenancy.organization_id())
        if lock:
            query = query.with_for_update()
        key = (await session.execute(query)).scalar_one_or_none()
        if key is None:
            raise NotFound(f"API key {key_id!r} not found", field="id")
        return key


def known(sessions: async_sessionmaker[AsyncSession]) -> KnownOrganizations:
    """The organizations calls may act for, as this service's table holds
    them: a no is not kept (one created a moment later, through another
    catalog replica perhaps, is seen at once)."""

    async def lookup(org: str) -> bool:
        async with sessions() as session:
            return await session.get(Organization, org) is not None

    return KnownOrganizations(lookup, negative_seconds=0)


async def bootstrap(sessions: async_sessionmaker[AsyncSession], secret: str) -> None:
    """Ensures the default organization exists and, when given, that `secret` is one of its (admin) keys."""
    async with sessions() as session, session.begin():
        # ON CONFLICT: two catalog processes may start on an empty database at once.
        await session.execute(
            insert(Organization)
            .values(id=DEFAULT_ORGANIZATION, name="Default organization")
            .on_conflict_do_nothing(index_elements=[Organization.id])
        )
    if secret:
        request = pb.CreateApiKeyRequest(organization_id=DEFAULT_ORGANIZATION, secret=secret)
        try:
            await OrganizationServicer(sessions).create_api_key(request)
        except IntegrityError:  # another catalog replica registered it at the same moment: found now
            await OrganizationServicer(sessions).create_api_key(request)
