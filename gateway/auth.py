"""API-key authentication: `Authorization: Bearer <key>` resolves to an
organization through the catalog, cached briefly so each request does not
cost a call. Only the key's SHA-256 is used as the cache key."""

from __future__ import annotations

import hashlib
import time

import grpc

from bxb.catalog.v1 import organizations_pb2, organizations_pb2_grpc
from gateway.errors import ApiError

CACHE_LIMIT = 10_000


def unauthenticated(message: str) -> ApiError:
    return ApiError(401, "UNAUTHENTICATED", "INVALID_API_KEY", message)


class Authenticator:
    def __init__(self, organizations: organizations_pb2_grpc.OrganizationServiceAsyncStub, ttl: float, timeout: float):
        self.organizations = organizations
        self.ttl = ttl
        self.timeout = timeout
        self._cache: dict[str, tuple[str, float]] = {}

    async def organization(self, authorization: str | None) -> str:
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
                raise unauthenticated("invalid API key") from None
            raise
        if len(self._cache) >= CACHE_LIMIT:
            self._cache.clear()
        self._cache[digest] = (reply.organization_id, now + self.ttl)
        return reply.organization_id
