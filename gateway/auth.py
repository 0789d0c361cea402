"""API-key authentication: `Authorization: Bearer <key>` resolves through the
catalog to the key's organization, role and rate limits, cached briefly
(BXB_AUTH_CACHE_SECONDS, default 2 s) so each request does not cost a call
while a revoked key is refused within that time on every gateway replica.
Only the key's SHA-256 is used as the cache key."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

import grpc

from bxb.catalog.v1 import organizations_pb2, organizations_pb2_grpc
from gateway.errors import ApiError
from gateway.rate_limits import Limits, Scope

CACHE_LIMIT = 10_000


def unauthenticated(message: str) -> ApiError:
    return ApiError(401, "UNAUTHENTICATED", "INVALID_API_KEY", message)


def role_name(role: organizations_pb2.ApiKeyRole.ValueType) -> str:
    """A key's role as gateway/roles.py names it, from the proto's enum
    (API_KEY_ROLE_INGEST -> "ingest"); a role it does not name is allowed nothing."""
    return organizations_pb2.ApiKeyRole.Name(role).removeprefix("API_KEY_ROLE_").lower()


@dataclass(frozen=True)
class Principal:
    """Who a request acts as: an organization through one of its keys."""

    organization: str
    key_id: str
    role: str  # admin, write, ingest or read
    # Buckets it spends from (gateway/rate_limits.py): the key's and the organization's.
    scopes: tuple[Scope, ...]


class Authenticator:
    def __init__(
        self,
        organizations: organizations_pb2_grpc.OrganizationServiceAsyncStub,
        ttl: float,
        timeout: float,
        limits: Limits | None = None,
    ):
        self.organizations = organizations
        self.ttl = ttl
        self.timeout = timeout
        self.limits = limits or Limits.from_env()
        self._cache: dict[str, tuple[Principal, float]] = {}

    async def principal(self, authorization: str | None) -> Principal:
        if not authorization:
            raise unauthenticated("missing Authorization header; send 'Authorization: Bearer <api key>'")
        scheme, _, secret = authorization.partition(" ")
        secret = secret.strip()
        if scheme.lower() != "bearer" or not secret:
            raise unauthenticated("the Authorization header must be 'Bearer <api key>'")
        digest = hashlib.sha256(secret.encode()).hexdigest()
        now = time.monotonic()
        cached = self._cache.get(digest)
        if cached is not None and cached[1] > now:
            return cached[0]
        try:
            reply = await self.organizations.AuthenticateApiKey(
                organizations_pb2.AuthenticateApiKeyRequest(secret=secret), timeout=self.timeout
            )
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.UNAUTHENTICATED:
                raise unauthenticated(error.details() or "invalid API key") from None
            raise
        if len(self._cache) >= CACHE_LIMIT:
            self._cache.clear()
        found = self._cache[digest] = (self._principal(reply), now + self.ttl)
        return found[0]

    def _principal(self, reply: organizations_pb2.AuthenticateApiKeyResponse) -> Principal:
        organization = self.limits.over(reply.rate_limits)
        return Principal(
            reply.organization_id,
            reply.api_key_id,
            role_name(reply.role),
            (
                Scope(f"key:{reply.api_key_id}", organization.over(reply.key_rate_limits)),
                Scope(f"org:{reply.organization_id}", organization),
            ),
        )
